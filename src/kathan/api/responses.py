"""OpenAPI descriptions of the error responses, shared by the routers."""

from __future__ import annotations

from typing import Any

from kathan.protocol.errors import ErrorBody

_DESCRIPTIONS = {
    400: "The request cannot be served as asked (unsupported parameter, context too long, "
    "a body that is not JSON).",
    401: "Invalid or missing API key.",
    403: "The key may not do this (a model outside its allow-list, or not an admin).",
    404: "Not found.",
    409: "Conflict (the email is already registered).",
    413: "The request body is too large.",
    422: "Validation failure. Inspect the detail array.",
    429: "A rate limit or quota of the key is reached; see Retry-After.",
    503: "Unavailable for now (the model is loading or at capacity); see Retry-After.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}

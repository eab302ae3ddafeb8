"""OpenAPI descriptions of the error responses, shared by the routers."""

from __future__ import annotations

from typing import Any

from kathan.protocol.errors import ErrorBody

_DESCRIPTIONS = {
    400: "The request cannot be served as asked (unsupported parameter, context too long).",
    401: "Invalid or missing API key.",
    404: "Unknown model.",
    413: "The request body is too large.",
    422: "Validation failure. Inspect the detail array.",
    503: "The model is not ready; see Retry-After.",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}

"""OpenAPI descriptions shared by the routers (error responses), and the app's
OpenAPI document with the generation routes in it."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kathan.api.routes import SCHEMA_REF, GenerationRoute
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


def errors(*codes: int, model: type[BaseModel] = ErrorBody) -> dict[int | str, dict[str, Any]]:
    """The error answers ``codes``, each with its body's ``model`` (Kathan's, or a
    dialect's own, such as Anthropic's)."""
    return {code: {"model": model, "description": _DESCRIPTIONS[code]} for code in codes}


def install(app: FastAPI) -> None:
    """Build the app's OpenAPI document: FastAPI's, with the generation routes
    (``GenerationRoute``, which FastAPI does not know) and the schemas they refer to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            raw = [r for r in app.router.routes if isinstance(r, GenerationRoute)]
            models = list(dict.fromkeys(m for r in raw for m in r.models))
            _, defs = models_json_schema(models, ref_template=SCHEMA_REF)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            paths = schema.setdefault("paths", {})
            for route in raw:
                paths.setdefault(route.path, {})["post"] = route.operation()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

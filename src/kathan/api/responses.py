"""OpenAPI descriptions shared by the routers: error responses, and request bodies
that a route reads itself (``deps.json_body``)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from kathan.protocol.errors import ErrorBody

_REF = "#/components/schemas/{model}"

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


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The ``openapi_extra`` of a route whose JSON body is ``model`` (read by
    ``deps.json_body``); ``install`` puts the model's schema in the components."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}}}


def install(app: FastAPI, bodies: list[type[BaseModel]]) -> None:
    """Build the OpenAPI document with the schemas of ``bodies`` (the models of the
    routes' ``request_body``) among the components."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version,
                                 description=app.description, routes=app.routes)
            _, defs = models_json_schema([(m, "validation") for m in bodies],
                                         ref_template=_REF)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in defs.get("$defs", {}).items():
                components.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

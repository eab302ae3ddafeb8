"""``GenerationRoute``: the explicit raw route of a generation endpoint.

A generation endpoint (``/v1/chat/completions``, and the dialects to come) is a
plain function of the ``Request`` that returns a ``Response``. Starlette calls
it directly: FastAPI's dependency solving and body validation, built for
describing parameters, would cost these hot routes more than everything they
do themselves (``bench/asgi_overhead.py`` measures both ways). What the route
needs, it calls: ``deps.api_key`` (the bearer scheme and key check of
``require_api_key``), ``deps.read_json`` (the body validated as its model);
its errors are raised and rendered by the app's exception handlers, like
every route's. It sits in the app's router behind the app's middleware (body
limit, request counting, error rendering, tracing when enabled): one entry
path whatever the settings.

The route describes itself for OpenAPI (``operation``), from the very model
the endpoint validates its body with and the model of its JSON answer;
``responses.install`` adds it to the app's document.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

SCHEMA_REF = "#/components/schemas/{model}"
Mode = Literal["validation", "serialization"]


class GenerationRoute(Route):
    """``POST path`` served by ``endpoint``, whose JSON body is ``body`` and whose JSON
    answer is ``answer``; ``responses`` adds the other answers (status: OpenAPI
    response object, with ``model`` for a JSON body)."""

    def __init__(
        self,
        path: str,
        endpoint: Callable[[Request], Awaitable[Response]],
        *,
        body: type[BaseModel],
        answer: type[BaseModel],
        responses: Mapping[int | str, Mapping[str, Any]],
        summary: str,
    ) -> None:
        super().__init__(path, endpoint, methods=["POST"])
        self.body = body
        self.answer = answer
        self.responses = responses
        self.summary = summary

    @property
    def models(self) -> list[tuple[type[BaseModel], Mode]]:
        """The models its description refers to, with their JSON Schema mode."""
        found: list[tuple[type[BaseModel], Mode]] = [
            (self.body, "validation"), (self.answer, "serialization")]
        for spec in self.responses.values():
            model = spec.get("model")
            if model is not None and (model, "serialization") not in found:
                found.append((model, "serialization"))
        return found

    def operation(self) -> dict[str, Any]:
        """The route's OpenAPI operation object."""
        answers: dict[str, Any] = {}
        for status, spec in self.responses.items():
            entry = {k: v for k, v in spec.items() if k != "model"}
            entry.setdefault("description", "")
            content = dict(entry.get("content") or {})
            model = self.answer if str(status) == "200" else spec.get("model")
            if model is not None:
                content["application/json"] = {"schema": _ref(model)}
            if content:
                entry["content"] = content
            answers[str(status)] = entry
        name = getattr(self.endpoint, "__name__", "endpoint")
        return {
            "summary": self.summary,
            "description": (self.endpoint.__doc__ or "").strip(),
            "operationId": f"{name}{self.path.replace('/', '_')}_post",
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref(self.body)}}},
            "security": [{"HTTPBearer": []}],
            "responses": answers,
        }


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": SCHEMA_REF.format(model=model.__name__)}

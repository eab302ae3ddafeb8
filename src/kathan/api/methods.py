"""The methods of each path, for ``OPTIONS`` and for the ``Allow`` header of a 405.

FastAPI makes one route per method, so Starlette answers a method that a path lacks
with the ``Allow`` of whichever route matched first (``GET`` on ``/v1/keys``, which
also takes ``POST``). Here a 405 (``OPTIONS`` included, since no route declares it)
is answered from the whole app: ``OPTIONS`` gets a 204 whose ``Allow`` lists every
method of the path, any other method a 405 with that same list.

The list comes from the OpenAPI document (the methods a client is told about) and
from the app's own top-level routes that stay out of it (``/docs``, ``/openapi.json``).
It is built at the first 405, never on the way of a request that matches a route.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.routing import compile_path

from kathan.api.errors import render
from kathan.errors import MethodNotAllowedError

# The order an ``Allow`` header lists methods in.
_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


class MethodTable:
    """Which methods answer on a path, for every path of ``app``."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app
        self._table: list[tuple[re.Pattern[str], frozenset[str]]] | None = None

    def _build(self) -> list[tuple[re.Pattern[str], frozenset[str]]]:
        found: dict[str, set[str]] = {}
        paths: dict[str, Any] = self._app.openapi().get("paths", {})
        for template, operations in paths.items():
            found.setdefault(template, set()).update(
                m.upper() for m in operations if m.upper() in _ORDER)
        for route in self._app.router.routes:
            path, methods = getattr(route, "path", None), getattr(route, "methods", None)
            if isinstance(path, str) and methods:
                found.setdefault(path, set()).update(methods)
        return [(compile_path(path)[0], frozenset(methods)) for path, methods in found.items()]

    def allowed(self, path: str) -> list[str]:
        """The methods of ``path`` in the usual order, ``OPTIONS`` last; [] if none."""
        if self._table is None:
            self._table = self._build()
        methods: set[str] = set()
        for pattern, more in self._table:
            if pattern.match(path):
                methods |= more
        if not methods:
            return []
        return [m for m in _ORDER if m in methods] + ["OPTIONS"]


def install(app: FastAPI) -> None:
    """Answer ``OPTIONS`` and every 405 with the path's full ``Allow``."""
    table = MethodTable(app)

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        path = request.url.path
        allowed = table.allowed(path)
        if request.method == "OPTIONS" and allowed:
            return Response(status_code=204, headers={"Allow": ", ".join(allowed)})
        return render(MethodNotAllowedError(request.method, path, allowed), path)

    app.add_exception_handler(405, method_not_allowed)

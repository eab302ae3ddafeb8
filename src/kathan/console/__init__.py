"""The web console: one page at ``/`` and its files at ``/console/``, from this package.

Everything the console shows it gets from Kathan's own API (``/v1/...`` and
``/admin/...``) as any client would, authenticated by the session cookie of
``auth/browser.py``; this module only serves files. The page is sent with a
Content-Security-Policy that allows scripts, styles and connections to this origin
only, with no inline script or style, so that text a model writes can never run as
code even if it reached the page as markup (the console renders it as text anyway).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.staticfiles import StaticFiles

STATIC = Path(str(resources.files("kathan.console").joinpath("static")))

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    # A new release's files are used at once: the browser revalidates (ETag) each time.
    "cache-control": "no-cache",
}


class _Files(StaticFiles):
    """The console's files, with the same security headers as the page."""

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers.update(HEADERS)
        return response


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=HEADERS, media_type="text/html")


def install(app: FastAPI) -> None:
    """Serve the console at ``/`` (``GET`` and ``HEAD``) and its files under ``/console/``."""
    app.add_api_route("/", page, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount("/console", _Files(directory=STATIC), name="console")

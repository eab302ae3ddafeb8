"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc), offline.

FastAPI's pages load their scripts from a CDN, so they are blank on a machine with
no network. Here every asset comes from the pinned ``fastapi-offline`` package
(Swagger UI 5 and ReDoc 2, as files): the pages name only ``/docs/assets/...``,
and ReDoc is told not to fetch Google Fonts.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from kathan.errors import NotFoundError

ASSETS = "/docs/assets"
_TYPES = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}


def assets_dir() -> Path:
    """Where the installed ``fastapi-offline`` keeps its copies of the assets."""
    return Path(str(files("fastapi_offline") / "static"))


def install(app: FastAPI) -> None:
    """Add ``/docs``, ``/redoc`` and their assets (out of the OpenAPI document).
    The app is made with ``docs_url=None, redoc_url=None``."""
    folder = assets_dir()
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon.png",
            # The badge would send the schema to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(
            openapi_url=openapi_url, title=f"{app.title} - API",
            redoc_js_url=f"{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS}/favicon.png", with_google_fonts=False,
        )

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        media_type = _TYPES.get(name)
        if media_type is None:
            raise NotFoundError(f"No documentation asset '{name}'.")
        return FileResponse(folder / name, media_type=media_type,
                            headers={"Cache-Control": "public, max-age=86400"})

"""The ``kathan`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from kathan.auth.keys import generate_key
from kathan.settings import Settings


def _describe(name: str) -> str:
    return Settings.model_fields[name].description or ""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kathan", description="Kathan LLM API service.")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="Serve the OpenAI-compatible API.")
    serve.add_argument("--host", help=_describe("host") + " Default 127.0.0.1.")
    serve.add_argument("--port", type=int, help=_describe("port") + " Default 8000.")
    serve.add_argument("--config", type=Path, help=_describe("config_file"))
    return parser


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from kathan.app import create_app

    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    if args.config is not None:
        overrides["config_file"] = args.config
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if not settings.api_keys:
        key = generate_key()
        settings = settings.model_copy(update={"api_keys": [key]})
        print(
            "No API keys configured (set KATHAN_API_KEYS). Generated one for this run:\n"
            f"    {key}\n",
            file=sys.stderr,
            flush=True,
        )
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2

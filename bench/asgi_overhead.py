"""What serving a generation endpoint costs in Kathan's app, in-process: the chat
route as Kathan serves it (a ``GenerationRoute`` that calls ``deps.api_key`` and
``deps.read_json`` itself) against the same endpoint work as an ordinary FastAPI
route whose key and body come from FastAPI's dependencies and body validation.

Both run in one app with the same middleware and a backend that answers at once,
so the difference is the route machinery alone. Requests are ASGI calls (no
sockets); each figure is CPU time per request (``time.process_time``), the
median of ``--rounds`` batches of ``--requests``, the two routes taking turns.

    python -m bench.asgi_overhead [--requests 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncGenerator
from typing import Any

from fastapi import FastAPI, Request, Response

from kathan.api.deps import ApiKeyDep
from kathan.app import create_app
from kathan.backends.base import Delta, DeltaStream, LoadStats, TokenUsage
from kathan.protocol.chat import ChatCompletionRequest
from kathan.routing.registry import ModelEntry, ModelRegistry
from kathan.service.chat import ChatService
from kathan.settings import Settings

KEY = "sk-bench-asgi"
BODY = json.dumps({"model": "m", "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Say something."}]}).encode()


class Instant:
    """A backend that answers at once with a short fixed reply."""

    ready = True

    def stats(self) -> LoadStats | None:
        return None

    def check(self, request: ChatCompletionRequest) -> None:
        return None

    async def probe(self) -> bool:
        return True

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        return DeltaStream(self._deltas())

    async def _deltas(self) -> AsyncGenerator[Delta, None]:
        for word in ("This", " is", " a", " reply", "."):
            yield Delta(content=word)
        yield Delta(finish_reason="stop")
        yield Delta(usage=TokenUsage(prompt_tokens=9, completion_tokens=5))


def build() -> FastAPI:
    registry = ModelRegistry([ModelEntry(id="m", owned_by="bench", created=0,
                                         backend=Instant())])
    app = create_app(Settings(accounts=False, api_keys=[KEY]), registry=registry)

    @app.post("/bench/fastapi-route")
    async def with_dependencies(body: ChatCompletionRequest, principal: ApiKeyDep,
                                request: Request) -> Response:
        service: ChatService = request.app.state.chat
        completion = await service.complete(body)
        return Response(completion.model_dump_json(), media_type="application/json")

    return app


async def cpu_per_request(app: FastAPI, path: str, n: int) -> float:
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
             "http_version": "1.1", "method": "POST", "scheme": "http", "path": path,
             "raw_path": path.encode(), "root_path": "", "query_string": b"",
             "server": ("bench", 80), "client": ("bench", 1),
             "headers": [(b"content-type", b"application/json"),
                         (b"authorization", f"Bearer {KEY}".encode()),
                         (b"content-length", str(len(BODY)).encode())]}
    never = asyncio.Event()

    async def one() -> None:
        given = False
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": BODY, "more_body": False}
            await never.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)
        if status != [200]:
            raise RuntimeError(f"{path}: HTTP {status}")

    start = time.process_time()
    for _ in range(n):
        await one()
    return (time.process_time() - start) / n * 1e6


async def run(requests: int, rounds: int) -> None:
    app = build()
    routes = {"GenerationRoute (Kathan)": "/v1/chat/completions",
              "FastAPI route + Depends": "/bench/fastapi-route"}
    figures: dict[str, list[float]] = {name: [] for name in routes}
    async with app.router.lifespan_context(app):
        for path in routes.values():
            await cpu_per_request(app, path, 300)  # warm up
        for _ in range(rounds):
            for name, path in routes.items():
                figures[name].append(await cpu_per_request(app, path, requests))
    ours = statistics.median(figures["GenerationRoute (Kathan)"])
    print(f"CPU per chat request, in-process, median of {rounds} x {requests} (us)")
    for name, values in figures.items():
        median = statistics.median(values)
        print(f"  {name:<26} {median:7.1f}   x{median / ours:.2f}   "
              f"({', '.join(f'{v:.0f}' for v in values)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(run(args.requests, args.rounds))


if __name__ == "__main__":
    main()

"""A fast OpenAI-compatible mock upstream for the gateway bench (aiohttp).

    python -m bench.mock_upstream --port 9100

``POST /v1/chat/completions`` answers at once with a fixed reply: JSON, or
with ``stream: true`` ten SSE chunks, the usage chunk and ``[DONE]``.
"""

from __future__ import annotations

import argparse
import json

from aiohttp import web

WORDS = ["This", " is", " a", " fixed", " reply", " from", " the", " mock", " upstream", "."]


def _chunk(model: str, delta: dict[str, object], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
            "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return f"data: {json.dumps(body)}\n\n".encode()


def _stream_body(model: str) -> bytes:
    parts = [_chunk(model, {"role": "assistant", "content": ""})]
    parts += [_chunk(model, {"content": w}) for w in WORDS]
    parts.append(_chunk(model, {}, "stop"))
    usage = {"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": 1,
             "model": model, "choices": [],
             "usage": {"prompt_tokens": 12, "completion_tokens": len(WORDS),
                       "total_tokens": 12 + len(WORDS)}}
    parts.append(f"data: {json.dumps(usage)}\n\n".encode())
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = str(body.get("model", "mock"))
    if body.get("stream"):
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(_stream_body(model))
        await response.write_eof()
        return response
    return web.json_response({
        "id": "chatcmpl-mock", "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "".join(WORDS)}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": len(WORDS),
                  "total_tokens": 12 + len(WORDS)},
    })


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "mock", "object": "model"}]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()

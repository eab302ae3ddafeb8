"""The ``openai`` backend: any OpenAI-compatible server (vLLM, SGLang, llama.cpp,
Ollama, OpenAI, OpenRouter, another Kathan).

Every parameter the client sent goes upstream as sent, provider extras
included; only ``model`` becomes the deployment's model name. A streaming
request streams upstream too, asking for usage with ``stream_options``; a
non-streaming one is sent non-streaming, which gives exact usage even from
servers that ignore ``stream_options`` (llama-cpp-python's does). Either way
the answer becomes the one stream of deltas Kathan builds its replies from.
When a stream still comes without usage, completion tokens are counted as the
chunks that carried output (one per token on llama.cpp, vLLM and SGLang) and
prompt tokens are reported as 0.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic_core import from_json, to_json

from kathan.backends.base import Delta, LoadStats, TokenUsage, ToolCallDelta
from kathan.backends.http1 import HTTPPool, Response, Target, encode_headers
from kathan.backends.sse_client import sse_events
from kathan.backends.upstream import (
    Deployment,
    UpstreamError,
    error_for_status,
    retry_after_of,
    transport_error,
)
from kathan.protocol.chat import ChatCompletionRequest, TokenLogprob


def upstream_body(request: ChatCompletionRequest, model: str) -> dict[str, Any]:
    """The request as the upstream gets it."""
    body = request.model_dump(mode="json", exclude_none=True, by_alias=True)
    body.update(request.model_extra or {})
    body["model"] = model
    if request.stream:
        options = dict(body.get("stream_options") or {})
        options["include_usage"] = True  # usage is always recorded, whatever the client wants
        body["stream_options"] = options
    else:
        body["stream"] = False
        body.pop("stream_options", None)
    return body


async def error_message(response: Response) -> str:
    """The upstream's own words from an error body (OpenAI's, FastAPI's or plain text)."""
    text = (await response.text(errors="replace"))[:2000]
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        return text.strip() or response.reason or f"HTTP {response.status}"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if "detail" in body:
            return json.dumps(body["detail"])[:2000]
    return text


class OpenAIBackend:
    """Relays chat requests to an OpenAI-compatible ``/chat/completions``.

    It talks to the upstream through ``HTTPPool``, Kathan's lean keep-alive
    HTTP/1.1 client (this relay is on every request's path).

    >>> backend = OpenAIBackend(deployment, pool)
    >>> deltas = await backend.open(request)   # UpstreamError before the first byte
    """

    def __init__(self, deployment: Deployment, pool: HTTPPool) -> None:
        self.deployment = deployment
        self._pool = pool
        self._target = Target.parse(deployment.base_url.rstrip("/") + "/chat/completions")
        headers = {"Content-Type": "application/json", "Accept-Encoding": "gzip, deflate",
                   "User-Agent": "kathan", **deployment.headers}
        if deployment.api_key:
            headers["Authorization"] = f"Bearer {deployment.api_key}"
        self._headers = encode_headers(headers)  # encoded once, sent with every request
        self._draining: set[asyncio.Future[None]] = set()

    @property
    def ready(self) -> bool:
        return True

    def stats(self) -> LoadStats | None:
        return None

    async def open(self, request: ChatCompletionRequest) -> AsyncIterator[Delta]:
        body = upstream_body(request, self.deployment.model)
        d = self.deployment
        try:
            response = await self._pool.request(
                self._target, b"POST", self._headers, to_json(body),
                connect_timeout=d.connect_timeout, read_timeout=d.read_timeout,
            )
        except (TimeoutError, OSError) as exc:
            raise transport_error(f"{type(exc).__name__}: {exc}") from exc
        if response.status >= 300:
            try:
                message = await error_message(response)
            except (TimeoutError, OSError):
                message = response.reason
            finally:
                response.release()
            raise error_for_status(response.status, message, retry_after=retry_after_of(response),
                                   location=response.headers.get("Location"))
        if not request.stream:
            return self._whole(response)
        return self._deltas(response)

    async def _whole(self, response: Response) -> AsyncIterator[Delta]:
        """A non-streamed answer, as deltas."""
        try:
            body = from_json(await response.read())  # read to its end: back to the pool
        except (TimeoutError, OSError, ValueError) as exc:
            response.close()
            raise UpstreamError(f"The upstream's answer could not be read: {type(exc).__name__}",
                                status_code=503, retryable=False, retry_after=1) from exc
        for choice in body.get("choices") or ():
            message = choice.get("message") or {}
            as_delta = {"index": choice.get("index", 0), "logprobs": choice.get("logprobs"),
                        "delta": {"content": message.get("content"),
                                  "function_call": message.get("function_call"),
                                  "tool_calls": [{"index": i, **call} for i, call
                                                 in enumerate(message.get("tool_calls") or ())]},
                        "finish_reason": choice.get("finish_reason") or "stop"}
            for delta in _choice_deltas(as_delta):
                yield delta
        yield Delta(usage=_usage(body.get("usage") or {}))

    async def _deltas(self, response: Response) -> AsyncIterator[Delta]:
        usage: TokenUsage | None = None
        done = False
        pieces = 0
        try:
            async for _event, data in sse_events(response):
                if data.strip() == "[DONE]":
                    done = True
                    break
                chunk = from_json(data)
                if "error" in chunk:
                    error = chunk["error"]
                    message = error.get("message") if isinstance(error, dict) else str(error)
                    raise UpstreamError(f"The upstream failed mid-stream: {message}",
                                        status_code=503, retryable=False, retry_after=1)
                for choice in chunk.get("choices") or ():
                    for delta in _choice_deltas(choice):
                        pieces += delta.finish_reason is None
                        yield delta
                if chunk.get("usage"):
                    usage = _usage(chunk["usage"])
        except (TimeoutError, OSError) as exc:
            raise UpstreamError(
                f"The upstream connection failed mid-stream: {type(exc).__name__}",
                status_code=503, retryable=False, retry_after=1,
            ) from exc
        except ValueError as exc:  # pydantic-core's JSON error
            raise UpstreamError("The upstream sent a chunk that is not JSON.",
                                status_code=503, retryable=False, retry_after=1) from exc
        finally:
            if done:
                self._finish_reading(response)
            else:
                response.close()  # abandoned (the client left, or an error): cancel upstream
        if not done:
            raise UpstreamError("The upstream closed the stream before it finished.",
                                status_code=503, retryable=False, retry_after=1)
        yield Delta(usage=usage or TokenUsage(0, pieces))

    def _finish_reading(self, response: Response) -> None:
        """After ``[DONE]``: give the connection back to the pool. What follows it (the
        chunked body's end, often a packet of its own) is read in the background, so the
        client's last event does not wait for it."""
        if response.at_eof:  # nothing left: reuse it now
            response.release()
            return
        task = asyncio.ensure_future(_drain(response))
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)


async def _drain(response: Response) -> None:
    try:
        async for _ in response.iter_any():
            pass
    except (TimeoutError, OSError):
        response.close()
        return
    response.release()


def _choice_deltas(choice: dict[str, Any]) -> list[Delta]:
    index = int(choice.get("index", 0))
    delta = choice.get("delta") or {}
    raw_calls = delta.get("tool_calls")
    calls = tuple(
        ToolCallDelta(
            index=int(call.get("index", 0)),
            id=call.get("id"),
            name=(call.get("function") or {}).get("name"),
            arguments=(call.get("function") or {}).get("arguments") or "",
        )
        for call in raw_calls
    ) if raw_calls else ()
    legacy = delta.get("function_call")
    if legacy:
        calls += (ToolCallDelta(0, id=None, name=legacy.get("name"),
                                arguments=legacy.get("arguments") or ""),)
    raw_logprobs = choice.get("logprobs")
    entries = raw_logprobs.get("content") if raw_logprobs else None
    logprobs = tuple(TokenLogprob.model_validate(entry) for entry in entries) if entries else ()
    out: list[Delta] = []
    content = delta.get("content")
    if content or calls or logprobs:
        out.append(Delta(index=index, content=content or None, tool_calls=calls,
                         logprobs=logprobs))
    finish = choice.get("finish_reason")
    if finish:
        out.append(Delta(index=index, finish_reason=str(finish)))
    return out


def _usage(raw: dict[str, Any]) -> TokenUsage:
    details = raw.get("prompt_tokens_details") or {}
    return TokenUsage(
        prompt_tokens=int(raw.get("prompt_tokens") or 0),
        completion_tokens=int(raw.get("completion_tokens") or 0),
        cached_tokens=int(details.get("cached_tokens") or 0),
    )

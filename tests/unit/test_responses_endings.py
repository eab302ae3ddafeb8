"""The endings of a Responses request (``POST /v1/responses``) release each of its
resources exactly once, as a chat request's do (``test_endings.py``, whose scripted
backend, world and ASGI client this reuses): completed (JSON and the event stream),
the client gone before the headers and after them, and the upstream broken
mid-stream, which ends the stream with ``error`` and ``response.failed``. Each ends
in one ledger row, under the endpoint ``responses``."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from kathan.backends.upstream import UpstreamUnavailable
from tests.unit.test_endings import Client, Script, world

BODY = {"model": "m", "input": "hi"}


class ResponsesClient(Client):
    def scope(self) -> dict[str, Any]:
        return {**super().scope(), "path": "/v1/responses", "raw_path": b"/v1/responses"}

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line.removeprefix(b"data: ")) for line in self.body.splitlines()
                if line.startswith(b"data: ")]


def stream(**extra: Any) -> dict[str, Any]:
    return {**BODY, "stream": True, **extra}


async def test_completed_json() -> None:
    async with world(Script()) as w:
        client = ResponsesClient(BODY)
        await client.call(w.app)
        assert client.status == 200
        response = json.loads(client.body)
        assert response["status"] == "completed" and response["store"] is False
        assert response["output"][0]["content"][0]["text"] == "Hello"
        assert response["usage"]["input_tokens"] == 3
        row = await w.assert_released_once()
        assert (row.status, row.endpoint, row.completion_tokens) == (
            "succeeded", "responses", 2)


async def test_completed_stream() -> None:
    async with world(Script()) as w:
        client = ResponsesClient(stream())
        await client.call(w.app)
        events = client.events()
        assert [e["sequence_number"] for e in events] == list(range(len(events)))
        assert events[-1]["type"] == "response.completed"
        assert events[-1]["response"]["output"][0]["content"][0]["text"] == "Hello"
        row = await w.assert_released_once()
        assert (row.status, row.endpoint, row.streamed) == ("succeeded", "responses", True)


async def test_client_gone_before_headers_while_the_reply_is_computed() -> None:
    async with world(Script(hold=1)) as w:
        client = ResponsesClient(BODY)
        task = asyncio.create_task(client.call(w.app))
        await w.backend.holding.wait()
        client.leave.set()
        await task
        row = await w.assert_released_once()
        assert (row.status, row.http_status, row.endpoint) == ("cancelled", 499, "responses")


async def test_client_gone_after_headers() -> None:
    async with world(Script(("a", "b", "c"), hold=2)) as w:
        client = ResponsesClient(stream())
        task = asyncio.create_task(client.call(w.app))
        await w.backend.holding.wait()
        client.leave.set()
        await task
        assert client.status == 200
        row = await w.assert_released_once()
        assert (row.status, row.error_code) == ("cancelled", "client_disconnected")
        assert (row.prompt_tokens, row.completion_tokens) == (3, 2)


async def test_upstream_broken_mid_stream() -> None:
    broken = UpstreamUnavailable("The upstream connection failed mid-stream.",
                                 retryable=False, retry_after=1, code="upstream_stream_broken")
    async with world(Script(("a", "b"), fail=(1, broken))) as w:
        client = ResponsesClient(stream())
        await client.call(w.app)
        assert client.status == 200
        events = client.events()
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
        assert events[-2]["code"] == "upstream_stream_broken"
        failed = events[-1]["response"]
        assert failed["status"] == "failed"
        assert failed["error"]["code"] == "upstream_stream_broken"
        [message] = failed["output"]  # what it had written before the break
        assert (message["status"], message["content"][0]["text"]) == ("incomplete", "a")
        row = await w.assert_released_once()
        assert (row.status, row.http_status, row.error_code) == (
            "failed", 503, "upstream_stream_broken")
        assert (row.prompt_tokens, row.completion_tokens) == (3, 1)


async def test_a_refused_request_is_one_ledger_row_under_its_endpoint() -> None:
    async with world(Script()) as w:
        client = ResponsesClient({**BODY, "background": True})
        await client.call(w.app)
        assert client.status == 400
        assert json.loads(client.body)["error"]["param"] == "background"
        await w.settled()
        assert [(r.status, r.endpoint, r.http_status) for r in w.ledger.rows] == [
            ("failed", "responses", 400)]
        assert w.backend.opened == 0

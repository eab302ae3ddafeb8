"""Every ending of a request releases each of its resources exactly once.

A chat request holds four things: its meter (one ledger row), its limiter
lease (a concurrency place of its key), its deployment's in-flight place, and
the backend's stream (the upstream connection). Each ending is driven here
through the real ASGI app, the real ``Metering`` and ``MemoryLimiter`` and a
real ``Router``, with a scripted backend at the seam: completed (JSON and
SSE), the client gone before the headers (while the reply is computed, or as
the first send fails) and after them, the upstream broken mid-stream, a
timeout before any output, and the server cancelling the request at shutdown.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import FastAPI

from kathan.app import create_app
from kathan.auth.principal import Principal
from kathan.backends.base import Delta, DeltaStream, LoadStats, TokenUsage
from kathan.backends.upstream import Deployment, UpstreamUnavailable, transport_error
from kathan.limits.base import Lease, Limits
from kathan.limits.memory import MemoryLimiter
from kathan.protocol.chat import ChatCompletionRequest
from kathan.routing.breaker import CircuitBreaker
from kathan.routing.picker import Route
from kathan.routing.registry import ModelEntry, ModelRegistry
from kathan.routing.retry import RetryPolicy
from kathan.routing.router import Router
from kathan.service.metering import Metering
from kathan.settings import Settings
from kathan.store.ledger import UsageRow

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
KEY = Principal(kind="key", is_admin=False, account_id="acct", key_id="key1",
                key_prefix="sk-k", limits=Limits(max_concurrent=4))


class Script:
    """A backend that yields ``pieces``, then finishes; ``hold`` makes it wait (forever,
    until cancelled) after that many pieces; ``fail`` raises that error there instead;
    ``refuse`` raises it from ``open``. It counts the streams it handed out and closed."""

    def __init__(self, pieces: tuple[str, ...] = ("Hel", "lo"), *, hold: int | None = None,
                 fail: tuple[int, Exception] | None = None,
                 refuse: Exception | None = None, paced: bool = False,
                 stall: bool = False) -> None:
        self.pieces = pieces
        self.stall = stall  # ``open`` waits (forever, until cancelled) before answering
        self.paced = paced  # a turn of the loop between pieces, as a real model takes
        self.hold = hold
        self.fail = fail
        self.refuse = refuse
        self.opened = 0
        self.closed = 0
        self.holding = asyncio.Event()

    @property
    def ready(self) -> bool:
        return True

    def stats(self) -> LoadStats | None:
        return None

    def check(self, request: ChatCompletionRequest) -> None:
        return None

    async def probe(self) -> bool:
        return True

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        if self.refuse is not None:
            raise self.refuse
        if self.stall:
            self.holding.set()
            await asyncio.Event().wait()
        self.opened += 1
        self.produced = 0
        stream = DeltaStream(self._deltas(), on_close=self._close)
        # What the backend counts as it goes: the prompt (3), then one token per piece.
        stream.count_with(lambda: TokenUsage(prompt_tokens=3, completion_tokens=self.produced))
        return stream

    def _close(self) -> None:
        self.closed += 1

    async def _deltas(self) -> AsyncGenerator[Delta, None]:
        for i, piece in enumerate(self.pieces):
            if self.hold == i:
                self.holding.set()
                await asyncio.Event().wait()
            if self.fail is not None and self.fail[0] == i:
                raise self.fail[1]
            if self.paced:
                await asyncio.sleep(0)
            self.produced += 1
            yield Delta(content=piece)
        yield Delta(finish_reason="stop")
        yield Delta(usage=TokenUsage(prompt_tokens=3, completion_tokens=len(self.pieces)))


class OneKey:
    """The authenticator seam: every bearer token is the stored key ``KEY``."""

    async def verify(self, token: str, allow: object = None) -> Principal:
        return KEY


class CountingLimiter(MemoryLimiter):
    """The real in-memory limiter, counting leases taken and given back."""

    def __init__(self) -> None:
        super().__init__()
        self.acquired = 0
        self.released: list[int] = []  # the tokens of each release

    async def acquire(self, key_id: str, limits: Limits, *, now: float | None = None) -> Lease:
        lease = await super().acquire(key_id, limits, now=now)
        self.acquired += 1
        return lease

    async def release(self, lease: Lease, tokens: int, *, now: float | None = None) -> None:
        self.released.append(tokens)
        await super().release(lease, tokens, now=now)


@dataclass
class Ledger:
    rows: list[UsageRow] = field(default_factory=list)

    def record(self, row: UsageRow) -> None:
        self.rows.append(row)


@dataclass
class World:
    app: FastAPI
    backend: Script
    router: Router
    limiter: CountingLimiter
    ledger: Ledger
    metering: Metering

    async def settled(self) -> None:
        """Wait for the limiter releases the meter sent off without waiting."""
        await self.metering.drain()

    async def assert_released_once(self) -> UsageRow:
        await self.settled()
        assert self.backend.closed == self.backend.opened
        assert sum(r.in_flight for r in self.router.routes) == 0
        assert self.limiter.acquired == len(self.limiter.released) == 1
        assert len(self.ledger.rows) == 1
        return self.ledger.rows[0]


@asynccontextmanager
async def world(backend: Script) -> AsyncIterator[World]:
    deployment = Deployment(backend="openai", model="m", name="m#0")
    router = Router("m", [Route(deployment, backend, CircuitBreaker(3, 15.0))],
                    RetryPolicy(retries=0, backoff=0.0))
    registry = ModelRegistry([ModelEntry(id="m", owned_by="t", created=1, backend=router)])
    app = create_app(Settings(accounts=False, api_keys=["sk-x"]), registry=registry)
    limiter, ledger = CountingLimiter(), Ledger()
    metering = Metering(limiter, ledger, None)  # type: ignore[arg-type]
    async with app.router.lifespan_context(app):
        app.state.metering = metering
        app.state.auth = OneKey()
        yield World(app, backend, router, limiter, ledger, metering)


class Client:
    """One HTTP exchange at the ASGI level: what the client sends, when it leaves,
    and what it was sent."""

    def __init__(self, body: dict[str, Any], *, fail_send_at: int | None = None) -> None:
        self.raw = json.dumps(body).encode()
        self.fail_send_at = fail_send_at  # the index of the message whose send raises
        self.leave = asyncio.Event()
        self.sent: list[dict[str, Any]] = []
        self._body_given = False

    async def receive(self) -> dict[str, Any]:
        if not self._body_given:
            self._body_given = True
            return {"type": "http.request", "body": self.raw, "more_body": False}
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        if self.fail_send_at == len(self.sent):
            raise OSError("the client is gone")  # as a server may raise for a closed socket
        self.sent.append(message)

    def scope(self) -> dict[str, Any]:
        return {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                "http_version": "1.1", "method": "POST", "scheme": "http",
                "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
                "root_path": "", "query_string": b"", "server": ("t", 80),
                "client": ("c", 1), "headers": [(b"content-type", b"application/json"),
                                                 (b"authorization", b"Bearer sk-k-test"),
                                                 (b"content-length", str(len(self.raw)).encode())]}

    async def call(self, app: FastAPI) -> None:
        await app(self.scope(), self.receive, self.send)  # type: ignore[arg-type]

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    @property
    def body(self) -> bytes:
        return b"".join(m.get("body", b"") for m in self.sent if m["type"] == "http.response.body")


def stream(**extra: Any) -> dict[str, Any]:
    return {**BODY, "stream": True, **extra}


async def test_completed_json() -> None:
    async with world(Script()) as w:
        client = Client(BODY)
        await client.call(w.app)
        assert client.status == 200
        assert json.loads(client.body)["choices"][0]["message"]["content"] == "Hello"
        row = await w.assert_released_once()
        assert (row.status, row.http_status, row.prompt_tokens, row.completion_tokens) == (
            "succeeded", 200, 3, 2)
        assert w.limiter.released == [5]


async def test_completed_stream() -> None:
    async with world(Script()) as w:
        client = Client(stream())
        await client.call(w.app)
        assert client.status == 200
        assert client.body.endswith(b"data: [DONE]\n\n")
        row = await w.assert_released_once()
        assert (row.status, row.finish_reason, row.streamed) == ("succeeded", "stop", True)


async def test_client_gone_before_headers_while_the_reply_is_computed() -> None:
    async with world(Script(hold=1)) as w:
        client = Client(BODY)
        task = asyncio.create_task(client.call(w.app))
        await w.backend.holding.wait()
        client.leave.set()
        await task
        assert client.status in (None, 499)  # an answer to nobody, if any
        row = await w.assert_released_once()
        assert (row.status, row.http_status, row.error_code) == (
            "cancelled", 499, "client_disconnected")


async def test_client_gone_before_headers_as_the_first_send_fails() -> None:
    # The stream was opened (the deltas never read): the response that owns it must
    # release it although sending its start raised.
    async with world(Script()) as w:
        client = Client(stream(), fail_send_at=0)
        with pytest.raises(OSError):
            await client.call(w.app)
        assert w.backend.opened == 1
        row = await w.assert_released_once()
        assert (row.status, row.http_status) == ("cancelled", 499)


async def test_client_gone_after_headers() -> None:
    async with world(Script(("a", "b", "c"), hold=2)) as w:
        client = Client(stream())
        task = asyncio.create_task(client.call(w.app))
        await w.backend.holding.wait()
        client.leave.set()
        await task
        assert client.status == 200
        row = await w.assert_released_once()
        assert (row.status, row.http_status, row.error_code) == (
            "cancelled", 499, "client_disconnected")
        # Charged what was produced before the client left: the prompt and two tokens.
        assert (row.prompt_tokens, row.completion_tokens) == (3, 2)
        assert w.limiter.released == [5]


async def test_a_failed_write_after_headers() -> None:
    async with world(Script(tuple("abcdefgh"), paced=True)) as w:
        client = Client(stream(), fail_send_at=1)  # the start went out, the body does not
        with pytest.raises(OSError):
            await client.call(w.app)
        row = await w.assert_released_once()
        assert row.status == "cancelled"


async def test_upstream_broken_mid_stream() -> None:
    broken = UpstreamUnavailable("The upstream connection failed mid-stream.",
                           retryable=False, retry_after=1, code="upstream_stream_broken")
    async with world(Script(("a", "b"), fail=(1, broken))) as w:
        client = Client(stream())
        await client.call(w.app)
        assert client.status == 200
        assert b"event: error" in client.body and client.body.endswith(b"data: [DONE]\n\n")
        row = await w.assert_released_once()
        assert (row.status, row.http_status, row.error_code) == (
            "failed", 503, "upstream_stream_broken")
        assert (row.prompt_tokens, row.completion_tokens) == (3, 1)  # what came before
        assert w.router.routes[0].breaker.failures == 1


async def test_timeout_before_any_output() -> None:
    async with world(Script(refuse=transport_error("TimeoutError: no answer"))) as w:
        client = Client(stream())
        await client.call(w.app)
        assert client.status == 503
        assert json.loads(client.body)["error"]["code"] in ("upstream_unreachable",
                                                            "no_healthy_deployment")
        await w.settled()
        assert w.backend.opened == 0
        assert sum(r.in_flight for r in w.router.routes) == 0
        assert w.limiter.acquired == len(w.limiter.released) == 1
        assert [r.status for r in w.ledger.rows] == ["failed"]


async def test_timeout_mid_stream() -> None:
    timeout = UpstreamUnavailable("The upstream went silent.", retryable=False,
                            retry_after=1, code="upstream_stream_broken")
    async with world(Script(("a", "b"), fail=(1, timeout))) as w:
        client = Client(BODY)
        await client.call(w.app)
        assert client.status == 503
        row = await w.assert_released_once()
        assert (row.status, row.error_code) == ("failed", "upstream_stream_broken")


async def test_shutdown_cancels_a_request_in_flight() -> None:
    # A server that stops cancels the tasks of the requests still running.
    async with world(Script(("a", "b"), hold=1)) as w:
        client = Client(stream())
        task = asyncio.create_task(client.call(w.app))
        await w.backend.holding.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        row = await w.assert_released_once()
        assert row.status == "cancelled"


# -- cut by the shutdown's drain (service/drain.py) -----------------------------


async def cut_by_drain(w: World, body: dict[str, Any]) -> Client:
    """``body`` sent, the backend holding it, then a drain with no grace left."""
    client = Client(body)
    task = asyncio.create_task(client.call(w.app))
    await w.backend.holding.wait()
    w.app.state.drain.grace = 0
    await w.app.state.drain.stop()
    await task  # the cut ends the request cleanly: nothing raised
    assert w.app.state.drain.running == 0
    return client


async def test_shutdown_cut_after_headers_ends_the_stream_with_an_error_event() -> None:
    async with world(Script(("a", "b", "c"), hold=2)) as w:
        client = await cut_by_drain(w, stream())
        assert client.status == 200
        events = client.body.split(b"\n\n")
        assert events[-3].startswith(b"event: error") and b'"shutting_down"' in events[-3]
        assert events[-2] == b"data: [DONE]"
        row = await w.assert_released_once()
        assert (row.status, row.http_status, row.error_code) == ("failed", 503, "shutting_down")
        assert (row.prompt_tokens, row.completion_tokens) == (3, 2)  # what was delivered
        assert w.limiter.released == [5]
        assert w.router.routes[0].breaker.failures == 0  # the upstream did nothing wrong


async def test_shutdown_cut_before_the_json_answer_is_a_503() -> None:
    async with world(Script(("a", "b"), hold=1)) as w:
        client = await cut_by_drain(w, BODY)
        assert client.status == 503
        assert json.loads(client.body)["error"]["code"] == "shutting_down"
        assert (b"retry-after", b"2") in client.sent[0]["headers"]
        row = await w.assert_released_once()
        assert (row.status, row.http_status, row.error_code) == ("failed", 503, "shutting_down")
        assert (row.prompt_tokens, row.completion_tokens) == (3, 1)


async def test_shutdown_cut_while_the_backend_opens_is_a_503() -> None:
    async with world(Script(stall=True)) as w:
        client = await cut_by_drain(w, stream())
        assert client.status == 503
        assert json.loads(client.body)["error"]["code"] == "shutting_down"
        await w.settled()
        assert sum(r.in_flight for r in w.router.routes) == 0
        assert w.limiter.acquired == len(w.limiter.released) == 1
        assert [(r.status, r.error_code) for r in w.ledger.rows] == [
            ("failed", "shutting_down")]


async def test_a_request_that_comes_during_the_drain_is_refused_at_the_door() -> None:
    async with world(Script()) as w:
        await w.app.state.drain.stop()  # nothing in flight: drained at once
        client = Client(BODY)
        await client.call(w.app)
        assert client.status == 503
        error = json.loads(client.body)["error"]
        assert error["code"] == "shutting_down" and "shutting down" in error["message"]
        assert w.backend.opened == 0 and w.ledger.rows == []  # never admitted


# -- DeltaStream alone ---------------------------------------------------------


async def _two() -> AsyncGenerator[Delta, None]:
    yield Delta(content="a")
    yield Delta(content="b")


async def test_a_stream_closed_before_iteration_releases_what_it_holds() -> None:
    released: list[str] = []

    async def upstream_closed() -> None:
        released.append("upstream")

    stream = DeltaStream(_two(), on_close=upstream_closed)
    stream.on_close(lambda: released.append("in_flight"))
    await stream.aclose()
    await stream.aclose()
    assert released == ["in_flight", "upstream"]  # last added first, once each


async def test_every_closer_runs_though_one_fails() -> None:
    released: list[str] = []

    def broken() -> None:
        raise RuntimeError("a closer failed")

    stream = DeltaStream(_two(), on_close=lambda: released.append("upstream"))
    stream.on_close(broken)
    with pytest.raises(RuntimeError):
        await stream.aclose()
    assert released == ["upstream"]
    with pytest.raises(RuntimeError):
        stream.on_close(lambda: None)  # a closed stream takes no more


async def test_stages_see_the_deltas_and_close_with_the_stream() -> None:
    async def upper(deltas: AsyncIterator[Delta]) -> AsyncGenerator[Delta, None]:
        async for d in deltas:
            yield Delta(content=(d.content or "").upper())

    async with DeltaStream(_two()).wrap(upper) as stream:
        assert [d.content async for d in stream] == ["A", "B"]
    assert stream.closed


async def test_error_watchers_see_what_ends_the_iteration_and_not_its_end() -> None:
    async def breaking() -> AsyncGenerator[Delta, None]:
        yield Delta(content="a")
        raise ValueError("broken")

    seen: list[BaseException] = []
    async with DeltaStream(breaking()) as stream:
        stream.on_error(seen.append)
        with pytest.raises(ValueError):
            [d async for d in stream]
    async with DeltaStream(_two()) as whole:
        whole.on_error(seen.append)
        assert len([d async for d in whole]) == 2
    assert [str(e) for e in seen] == ["broken"]


@pytest.mark.parametrize("paced", [False, True])
async def test_a_completed_stream_is_recorded_before_its_done_goes_out(paced: bool) -> None:
    # A client that has read `[DONE]` was served: a kill -9 right after must not lose
    # its row, so the row is recorded (hence in the journal) before `[DONE]` is sent.
    async with world(Script(paced=paced)) as w:
        client = Client(stream())
        rows_when_done_sent: list[int] = []
        send = client.send

        async def watching(message: dict[str, Any]) -> None:
            if b"[DONE]" in message.get("body", b""):
                rows_when_done_sent.append(len(w.ledger.rows))
            await send(message)

        client.send = watching  # type: ignore[method-assign]
        await client.call(w.app)
        assert client.body.endswith(b"data: [DONE]\n\n")
        assert rows_when_done_sent == [1]
        await w.assert_released_once()

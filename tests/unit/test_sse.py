import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel

from kathan.api.sse import DONE, EventStreamResponse, encode, encode_stream
from kathan.errors import ContextLengthExceededError


class Item(BaseModel):
    n: int


async def collect(stream: AsyncIterator[bytes]) -> list[bytes]:
    return [part async for part in stream]


def test_encode_single_line() -> None:
    assert encode('{"a":1}') == b'data: {"a":1}\n\n'


def test_encode_multiline_and_event() -> None:
    assert encode("x\ny", event="error") == b"event: error\ndata: x\ndata: y\n\n"


async def test_stream_ends_with_done() -> None:
    async def items() -> AsyncIterator[BaseModel]:
        yield Item(n=1)
        yield Item(n=2)

    assert await collect(encode_stream(items())) == [
        b'data: {"n":1}\n\n',
        b'data: {"n":2}\n\n',
        DONE,
    ]


async def test_error_after_headers_becomes_error_event_then_done() -> None:
    async def items() -> AsyncIterator[BaseModel]:
        yield Item(n=1)
        raise ContextLengthExceededError("too long")

    parts = await collect(encode_stream(items()))
    assert parts[0] == b'data: {"n":1}\n\n'
    assert parts[1].startswith(b"event: error\ndata: ")
    assert b'"code": "context_length_exceeded"' in parts[1]
    assert parts[2] == DONE


async def test_unexpected_error_is_reported_without_internals() -> None:
    async def items() -> AsyncIterator[BaseModel]:
        raise RuntimeError("secret internal detail")
        yield Item(n=0)  # pragma: no cover

    parts = await collect(encode_stream(items()))
    assert parts[0].startswith(b"event: error")
    assert b"secret" not in parts[0]
    assert parts[-1] == DONE


async def test_events_ready_together_leave_in_one_write() -> None:
    gate = asyncio.Event()

    async def events() -> AsyncIterator[bytes]:
        for n in range(5):  # a burst: ready without waiting
            yield f"data: {n}\n\n".encode()
        await gate.wait()  # then the next one takes a while
        yield b"data: late\n\n"

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) == 2:
            gate.set()

    await EventStreamResponse(events()).stream_response(send)
    bodies = [m["body"] for m in sent[1:]]
    # The burst in one write; the last event goes with the end of the body.
    assert bodies == [b"".join(f"data: {n}\n\n".encode() for n in range(5)),
                      b"data: late\n\n"]
    assert [m["more_body"] for m in sent[1:]] == [True, False]


async def test_a_slow_client_holds_back_the_producer() -> None:
    produced = 0

    async def events() -> AsyncIterator[bytes]:
        nonlocal produced
        for _ in range(1000):
            produced += 1
            yield b"data: x\n\n"

    release = asyncio.Event()
    sent: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and message["body"]:
            await release.wait()  # the client does not read
            sent.append(message["body"])

    task = asyncio.create_task(EventStreamResponse(events()).stream_response(send))
    for _ in range(50):
        await asyncio.sleep(0)
    # One write in flight and at most max_pending more events waiting, not all 1000.
    assert produced <= 2 * EventStreamResponse.max_pending
    release.set()
    await task
    assert b"".join(sent) == b"data: x\n\n" * 1000


async def test_a_failed_write_stops_the_events() -> None:
    closed = False

    async def events() -> AsyncIterator[bytes]:
        nonlocal closed
        try:
            while True:
                yield b"data: x\n\n"
                await asyncio.sleep(0)
        finally:
            closed = True

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body":
            raise OSError("client gone")

    try:
        await EventStreamResponse(events()).stream_response(send)
    except OSError:
        pass
    else:
        raise AssertionError("the write error was swallowed")
    assert closed

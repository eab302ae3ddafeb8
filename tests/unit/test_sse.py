from collections.abc import AsyncIterator

from pydantic import BaseModel

from kathan.api.sse import DONE, encode, encode_stream
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

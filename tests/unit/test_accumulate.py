import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from kathan.backends.base import Delta, TokenUsage, ToolCallDelta
from kathan.protocol.chat import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceDelta,
    ChunkChoice,
    FunctionCall,
    ResponseMessage,
    TokenLogprob,
    ToolCall,
    Usage,
    construct,
)
from kathan.service.accumulate import Accumulator
from kathan.service.chat import ChatService


def chunk(content: str | None = None, finish: str | None = None, usage: Usage | None = None,
          role: str | None = None) -> ChatCompletionChunk:
    choices = [] if usage else [
        ChunkChoice(index=0, delta=ChoiceDelta(role=role, content=content), finish_reason=finish)
    ]
    return ChatCompletionChunk(id="chatcmpl-1", created=7, model="m", choices=choices, usage=usage)


def test_accumulates_content_finish_and_usage() -> None:
    acc = Accumulator()
    usage = Usage(prompt_tokens=3, completion_tokens=2, total_tokens=5)
    for c in [chunk(role="assistant", content=""), chunk("Hel"), chunk("lo"), chunk(finish="stop"),
              chunk(usage=usage)]:
        acc.add(c)
    result = acc.result()
    assert result.id == "chatcmpl-1"
    assert result.created == 7
    assert result.model == "m"
    assert result.object == "chat.completion"
    assert result.choices[0].message.content == "Hello"
    assert result.choices[0].message.role == "assistant"
    assert result.choices[0].finish_reason == "stop"
    assert result.usage == usage


def test_empty_completion_keeps_empty_string_content() -> None:
    acc = Accumulator()
    acc.add(chunk(role="assistant", content=""))
    acc.add(chunk(finish="length"))
    result = acc.result()
    assert result.choices[0].message.content == ""
    assert result.choices[0].finish_reason == "length"


def test_delta_serializes_only_set_fields() -> None:
    assert chunk("x").choices[0].delta.model_dump() == {"content": "x"}
    assert '"finish_reason":null' in chunk("x").model_dump_json()


@pytest.mark.parametrize(
    ("cls", "values"),
    [
        (ChatCompletionChunk, {"id": "c", "created": 1, "model": "m", "choices": []}),
        (ChoiceDelta, {"content": "Hel"}),
        (ChoiceDelta, {"role": "assistant", "content": ""}),
        (ChunkChoice, {"index": 0, "delta": ChoiceDelta(content="x"), "finish_reason": "stop"}),
        (ResponseMessage, {"content": None, "tool_calls": [
            ToolCall(id="call_1", type="function",
                     function=FunctionCall(name="f", arguments="{}"))]}),
        (Usage, {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
        (ChatCompletionRequest, {"model": "m", "messages": []}),
    ],
)
def test_construct_builds_what_model_construct_builds(
    cls: type[BaseModel], values: dict[str, object]
) -> None:
    fast, slow = construct(cls, **values), cls.model_construct(**values)
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_fields_set == slow.model_fields_set
    assert fast.model_extra == slow.model_extra
    assert list(fast.__dict__) == list(slow.__dict__)  # fields in the model's order
    assert fast == slow


# The service folds deltas straight into the completion; a streaming client gets
# chunks. Both must give the same reply, whatever the deltas.

_token = st.builds(TokenLogprob, token=st.sampled_from(["a", "b"]),
                   logprob=st.floats(-5, 0), top_logprobs=st.just([]))
_call = st.builds(
    ToolCallDelta, index=st.integers(0, 1), id=st.one_of(st.none(), st.just("call_1")),
    name=st.one_of(st.none(), st.sampled_from(["f", "g"])),
    arguments=st.sampled_from(["", "{", '"a"', "}"]))
_delta = st.one_of(
    st.builds(Delta, index=st.integers(0, 1), content=st.one_of(
        st.none(), st.sampled_from(["", "Hel", "lo"])),
        logprobs=st.lists(_token, max_size=2).map(tuple),
        tool_calls=st.lists(_call, max_size=2).map(tuple),
        reasoning=st.one_of(st.none(), st.sampled_from(["", "Hm", ", so"]))),
    st.builds(Delta, index=st.integers(0, 1),
              finish_reason=st.sampled_from(["stop", "length", "tool_calls"])),
    st.builds(Delta, usage=st.builds(TokenUsage, st.integers(0, 9), st.integers(0, 9),
                                     st.integers(0, 9), st.integers(0, 9))),
)


@settings(max_examples=300, deadline=None)
@given(deltas=st.lists(_delta, max_size=8), n=st.integers(1, 2), legacy=st.booleans())
def test_folding_deltas_equals_folding_the_chunks_a_stream_sends(
    deltas: list[Delta], n: int, legacy: bool
) -> None:
    async def source() -> AsyncIterator[Delta]:
        for d in deltas:
            yield d

    async def both() -> tuple[str, str]:
        acc = Accumulator()
        async for c in ChatService.chunks(source(), model="m", n=n, chunk_id="chatcmpl-1",
                                          created=7, legacy=legacy, include_usage=True):
            # As a client reads them: text-only chunks come as JSON already.
            wire = c if isinstance(c, bytes) else c.model_dump_json()
            acc.add(ChatCompletionChunk.model_validate_json(wire))
        direct = Accumulator.of_deltas(id="chatcmpl-1", created=7, model="m", n=n,
                                       legacy=legacy)
        for d in deltas:
            direct.add_delta(d)
        return acc.result().model_dump_json(), direct.result().model_dump_json()

    via_chunks, via_deltas = asyncio.run(both())
    assert via_deltas == via_chunks


def test_reasoning_is_its_own_field_streamed_and_whole() -> None:
    deltas = [Delta(reasoning="Think"), Delta(reasoning="ing."), Delta(content="Hi"),
              Delta(finish_reason="stop"), Delta(usage=TokenUsage(5, 7, reasoning_tokens=4))]

    async def source() -> AsyncIterator[Delta]:
        for d in deltas:
            yield d

    async def chunks() -> list[str]:
        return [c if isinstance(c, str) else (c.decode() if isinstance(c, bytes)
                                              else c.model_dump_json())
                async for c in ChatService.chunks(
                    source(), model="m", n=1, chunk_id="chatcmpl-1", created=7,
                    legacy=False, include_usage=True)]

    wire = asyncio.run(chunks())
    assert '"delta":{"reasoning_content":"Think"}' in wire[1]
    assert '"completion_tokens_details":{"reasoning_tokens":4}' in wire[-1]
    acc = Accumulator.of_deltas(id="chatcmpl-1", created=7, model="m", n=1, legacy=False)
    for d in deltas:
        acc.add_delta(d)
    message = acc.result().model_dump()["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "Hi", "reasoning_content": "Thinking."}
    assert acc.result().usage is not None
    assert acc.result().usage.completion_tokens_details == {"reasoning_tokens": 4}

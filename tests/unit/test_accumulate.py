import pytest
from pydantic import BaseModel

from kathan.protocol.chat import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceDelta,
    ChunkChoice,
    FunctionCall,
    ResponseMessage,
    ToolCall,
    Usage,
    construct,
)
from kathan.service.accumulate import Accumulator


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

from kathan.protocol.chat import ChatCompletionChunk, ChoiceDelta, ChunkChoice, Usage
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

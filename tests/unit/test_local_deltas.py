"""The local engine's events as deltas: the exact texts the engine sends, cut where
``max_tokens`` cuts them, folded as a non-streamed reply and read as a stream."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from kathan.backends.base import Delta, ToolCallDelta
from kathan.backends.local import engine_deltas
from kathan.engine.types import GenerationEvent, Halt
from kathan.service.accumulate import Accumulator


async def _rest(events: list[GenerationEvent]) -> AsyncIterator[GenerationEvent]:
    for event in events:
        yield event


async def deltas(
    texts: list[str], finish: str, *, calls: bool = True, halt: Halt | None = None
) -> list[Delta]:
    events = [GenerationEvent(t, 0, completion_tokens=i + 1) for i, t in enumerate(texts)]
    events[-1] = GenerationEvent(texts[-1], 0, finish, completion_tokens=len(texts))
    return [d async for d in engine_deltas(events[0], _rest(events[1:]), calls, halt)]


def fold(out: list[Delta]) -> tuple[str | None, list[tuple[str, str, str]], str | None]:
    acc = Accumulator.of_deltas(id="chatcmpl-1", created=1, model="m", n=1, legacy=False)
    for delta in out:
        acc.add_delta(delta)
    choice = acc.result().choices[0]
    calls = [(c.id, c.function.name, c.function.arguments)
             for c in choice.message.tool_calls or []]
    return choice.message.content, calls, choice.finish_reason


# What the engine sends for tool_choice "required" with max_tokens 1, 2, 5 and 12
# (SmolLM2's tokens; the first is "<", which the stop matcher holds back).
CALL_TOKENS = ["<", "tool", "_", "call", ">", "\n", '{"', "name", '":', ' "', "get", "_", "weather",
               '",', ' "', "arguments", '":', ' {"', "location", '":', ' "', "Tok", "yo"]


@pytest.mark.parametrize("n", [1, 2, 5, 8, 12])
async def test_a_call_cut_before_its_name_is_complete_is_no_content_and_no_call(n: int) -> None:
    out = await deltas(CALL_TOKENS[:n], "length")
    assert fold(out) == ("", [], "length")
    assert not [d for d in out if d.content or d.tool_calls]


async def test_a_call_cut_after_its_name_has_the_name_and_no_arguments() -> None:
    out = await deltas(CALL_TOKENS[:14], "length")
    content, calls, finish = fold(out)
    assert content is None and finish == "length"
    assert [(name, args) for _, name, args in calls] == [("get_weather", "")]
    assert calls[0][0].startswith("call_")


async def test_a_call_cut_in_its_arguments_streams_as_openai_does() -> None:
    out = await deltas(CALL_TOKENS, "length")
    content, calls, finish = fold(out)
    assert content is None and finish == "length"
    assert [(name, args) for _, name, args in calls] == [("get_weather", '{"location": "Tokyo')]
    # As a stream: the header (id, name) first, then argument fragments, then the finish.
    pieces = [p for d in out for p in d.tool_calls]
    assert isinstance(pieces[0], ToolCallDelta) and pieces[0].name == "get_weather"
    assert all(p.id is None and p.name is None for p in pieces[1:])
    assert [d.finish_reason for d in out if d.finish_reason] == ["length"]
    assert out[-1].usage is not None and out[-1].usage.completion_tokens == len(CALL_TOKENS)


async def test_text_without_calls_is_unchanged() -> None:
    out = await deltas(["Hello", " <", "3"], "length", calls=False)
    assert fold(out) == ("Hello <3", [], "length")


async def test_a_stray_closing_tag_ends_the_choice_through_halt() -> None:
    halt = Halt()
    out = await deltas(["It is 18 degrees.", "</tool", "_call>", "\n<tool_response>"], "stop",
                       halt=halt)
    assert 0 in halt
    assert fold(out) == ("It is 18 degrees.", [], "stop")

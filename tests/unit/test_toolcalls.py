"""The tool-call text parser: any split of the text gives the same calls."""

from __future__ import annotations

import random

import pytest

from kathan.backends.base import ToolCallDelta
from kathan.backends.toolcalls import ToolCallParser, call_text


def parse(
    parts: list[str], *, cut: bool = False
) -> tuple[str, list[tuple[str | None, str | None, str]]]:
    """The content and calls of a reply written in ``parts``; ``cut`` when max_tokens
    ended it."""
    ids = iter(f"call_{i}" for i in range(10))
    parser = ToolCallParser(new_id=lambda: next(ids))
    pieces = [p for part in parts for p in parser.feed(part)] + parser.finish(cut=cut)
    content = "".join(p for p in pieces if isinstance(p, str))
    calls: dict[int, list[str | None]] = {}
    for p in pieces:
        if isinstance(p, ToolCallDelta):
            call = calls.setdefault(p.index, [None, None, ""])
            if p.id is not None:
                assert call[0] is None and p.arguments == ""  # the header comes first, once
                call[0], call[1] = p.id, p.name
            else:
                assert call[0] is not None  # arguments only after the header
                call[2] = f"{call[2]}{p.arguments}"
    return content, [(c[0], c[1], str(c[2])) for _, c in sorted(calls.items())]


TWO_CALLS = (
    'Let me check. \n<tool_call>\n{"name": "get_weather", "arguments": '
    '{"city": "Pa\\"ris {x}", "days": [1, {"a": 2}]}}\n</tool_call>\n'
    '<tool_call>\n{"name": "now", "arguments": {}}\n</tool_call>'
)

CASES = {
    "two calls": (TWO_CALLS, "Let me check.", [
        ("call_0", "get_weather", '{"city": "Pa\\"ris {x}", "days": [1, {"a": 2}]}'),
        ("call_1", "now", "{}")]),
    "plain text keeps its whitespace": ("  hi \n there  ", "  hi \n there  ", []),
    "a near miss is text": ("see <tool_cal> and <tool_call", "see <tool_cal> and <tool_call", []),
    # The tags are never content: a malformed call ends the reply.
    "not a call after all": ('ok <tool_call> {"nam": 1}</tool_call> x', "ok", []),
    "a stray closing tag ends the reply": ("Yes.\n</tool_call>\nmore", "Yes.", []),
    "cut off in the head": ('<tool_call>{"name": "f", "argu', "", [("call_0", "f", "")]),
    "cut off in the name": ('<tool_call>{"name": "get_wea', "", []),
    "cut off in the arguments": ('<tool_call>\n{"name": "f", "arguments": {"a": 1', "",
                                 [("call_0", "f", '{"a": 1')]),
    "only a call": ('\n<tool_call>{"name":"f","arguments":{"b":"}"}}</tool_call>\n', "",
                    [("call_0", "f", '{"b":"}"}')]),
}


@pytest.mark.parametrize("case", CASES)
def test_every_split_parses_the_same(case: str) -> None:
    text, content, calls = CASES[case]
    assert parse([text]) == (content, calls)
    rng = random.Random(case)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, min(30, len(text) - 1))))
        parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert parse(parts) == (content, calls), parts


def test_call_text_round_trips_through_the_parser() -> None:
    text = call_text("get_weather", '{"city": "Zürich"}')
    assert parse([text]) == ("", [("call_0", "get_weather", '{"city": "Zürich"}')])


def test_a_repeated_call_ends_the_reply() -> None:
    call_a = '<tool_call>\n{"name": "w", "arguments": {"city": "Oslo"}}\n</tool_call>\n'
    call_b = '<tool_call>\n{"name": "w", "arguments": {"city": "Olso"}}\n</tool_call>\n'
    text = call_a + call_b + call_a + call_b + "more"
    rng = random.Random(7)
    for trial in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 25))) if trial else []
        parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        parser = ToolCallParser(new_id=lambda: "id")
        pieces = [p for part in parts for p in parser.feed(part)] + parser.finish()
        assert parser.repeated and parser.calls == 2
        args = ["".join(p.arguments for p in pieces if isinstance(p, ToolCallDelta)
                        and p.index == i) for i in range(2)]
        assert args == ['{"city": "Oslo"}', '{"city": "Olso"}'], parts
        assert not [p for p in pieces if isinstance(p, str)]


CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"location": "Tokyo"}}\n</tool_call>'
NAME_ENDS = CALL.index('get_weather"') + len('get_weather"')
ARGS = CALL.index('{"location"')


@pytest.mark.parametrize("before", ["", "Let me look. "])
def test_a_call_cut_anywhere_by_max_tokens_is_what_was_written(before: str) -> None:
    """Cut after every character: once the name is complete, the call with that name
    and the arguments so far; before, nothing. Never a tag, never part of one."""
    for end in range(1, len(CALL) + 1):
        written = CALL[:end]
        content, calls = parse([before, written], cut=True)
        assert content == before.strip(), written
        if end < NAME_ENDS:
            assert calls == [], written
        else:
            arguments = written[ARGS:].removesuffix("\n</tool_call>")[: len('{"location": "Tokyo"}')]
            assert calls == [("call_0", "get_weather", arguments)], written


def test_a_cut_split_anywhere_gives_the_same_partial_call() -> None:
    text = CALL + "\n" + CALL[: CALL.index("Tok")]
    expected = ("", [("call_0", "get_weather", '{"location": "Tokyo"}'),
                     ("call_1", "get_weather", '{"location": "')])
    rng = random.Random(5)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 20)))
        parts = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert parse(parts, cut=True) == expected, parts


def test_a_second_call_cut_in_its_name_is_dropped() -> None:
    text = CALL + "\n" + CALL[:NAME_ENDS - 3]
    assert parse([text], cut=True) == ("", [("call_0", "get_weather", '{"location": "Tokyo"}')])


@pytest.mark.parametrize("tag", ["<", "<tool", "<tool_call", "</tool_", "</tool_call"])
def test_the_start_of_a_tag_at_a_cut_is_dropped_but_text_at_the_models_end(tag: str) -> None:
    assert parse([f"Sure {tag}"], cut=True) == ("Sure", [])
    assert parse([f"Sure {tag}"]) == (f"Sure {tag}", [])


def test_a_parser_out_of_the_format_says_the_reply_is_over() -> None:
    for text in ["a</tool_call>b", '<tool_call>{"nome"', CALL + CALL]:
        parser = ToolCallParser(new_id=lambda: "id")
        parser.feed(text)
        assert parser.done, text
    parser = ToolCallParser(new_id=lambda: "id")
    parser.feed(CALL + "\nthen </tool")
    assert not parser.done

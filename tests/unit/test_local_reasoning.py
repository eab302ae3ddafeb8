"""Reasoning on the local engine in the ``<think>`` format, without a model: the
templates' detection, what ``reasoning_effort`` asks of each, the prompt the backend
renders, the grammars that leave the reasoning free, and the split of the engine's
text into reasoning and answer (the engine scripted at the seam, as
``test_local_deltas`` does), streamed and whole alike."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from itertools import pairwise
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kathan.backends.base import Delta
from kathan.backends.local import LocalBackend, engine_deltas
from kathan.backends.reasoning import ThinkPlan, ThinkSplitter, think_plan
from kathan.engine.template import CHATML_TEMPLATE, ChatTemplate, Thinking
from kathan.engine.types import GenerationEvent, TokenLogprob
from kathan.errors import UnsupportedParameterError
from kathan.protocol.chat import ChatCompletionRequest
from kathan.service.accumulate import Accumulator
from tests.think_templates import DEEPSEEK_R1_DISTILL, QWEN3, SMOLLM3

BOS, EOS = "<|im_start|>", "<|im_end|>"


def template(source: str) -> ChatTemplate:
    return ChatTemplate(source, bos_token=BOS, eos_token=EOS)


def request(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields})


# -- detection -------------------------------------------------------------------


def test_the_templates_say_how_their_models_reason() -> None:
    qwen3, r1, smollm3 = (template(s).thinking for s in (QWEN3, DEEPSEEK_R1_DISTILL, SMOLLM3))
    assert qwen3 is not None and qwen3.switch and not any(o for _, o in qwen3.opened)
    assert smollm3 is not None and smollm3.switch and not smollm3.opens(None)
    # DeepSeek-R1's distills open the block in the generation prompt, and cannot close it.
    assert r1 is not None and not r1.switch and r1.opens(None)
    assert template(CHATML_TEMPLATE).thinking is None


def test_a_template_that_opens_the_block_only_when_asked_says_so() -> None:
    source = ("{% for m in messages %}{{ m['content'] }}{% endfor %}"
              "{% if add_generation_prompt %}A:{% if enable_thinking %}<think>\n"
              "{% else %}<think></think>{% endif %}{% endif %}")
    thinking = template(source).thinking
    assert thinking == Thinking(switch=True, opened=((None, False), (True, True),
                                                      (False, False)))


# -- reasoning_effort ------------------------------------------------------------


@pytest.mark.parametrize("effort", ["minimal", "low", "medium", "high", "xhigh", None])
def test_a_switch_turns_thinking_on_for_every_level(effort: str | None) -> None:
    plan = think_plan(template(QWEN3).thinking, request(reasoning_effort=effort))
    assert plan is not None and plan.on and not plan.inside
    assert plan.variables == ({} if effort is None else {"enable_thinking": True})


def test_none_turns_thinking_off_where_the_template_can() -> None:
    plan = think_plan(template(QWEN3).thinking, request(reasoning_effort="none"))
    assert plan is not None and not plan.on and plan.variables == {"enable_thinking": False}


def test_none_is_a_400_where_the_model_always_thinks() -> None:
    thinking = template(DEEPSEEK_R1_DISTILL).thinking
    with pytest.raises(UnsupportedParameterError, match="always reasons") as info:
        think_plan(thinking, request(reasoning_effort="none"))
    assert info.value.param == "reasoning_effort"
    plan = think_plan(thinking, request(reasoning_effort="high"))
    assert plan is not None and plan.inside and plan.variables == {}


def test_a_model_that_does_not_reason_refuses_reasoning_effort() -> None:
    assert think_plan(None, request()) is None
    with pytest.raises(UnsupportedParameterError, match="does not reason") as info:
        think_plan(None, request(reasoning_effort="low"))
    assert info.value.param == "reasoning_effort"


# -- the prompt --------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _grammars_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    # llama.cpp's own check needs a vocabulary (test_think_templates runs it).
    monkeypatch.setattr("kathan.backends.local.grammar_parses", lambda model, grammar: True)


def backend(source: str) -> LocalBackend:
    """The backend over an engine stand-in: a template, one token per character."""
    engine = SimpleNamespace(
        ready=True, n_ctx=8192, config=SimpleNamespace(n_slots=4),
        model=SimpleNamespace(info=SimpleNamespace(n_vocab=1000)),
        template=template(source), tokenize_prompt=lambda text: [ord(c) for c in text])
    return LocalBackend(engine, retry_after=1)  # type: ignore[arg-type]


def prompt_of(source: str, **fields: Any) -> str:
    generation, _, _ = backend(source).build(request(**fields))
    return "".join(chr(t) for t in generation.prompt)


TURNS = [{"role": "user", "content": "2+2?"},
         {"role": "assistant", "content": "4", "reasoning_content": "Two and two."},
         {"role": "user", "content": "And 3+3?"}]


def test_earlier_reasoning_is_left_to_the_template() -> None:
    # Qwen3's and R1's drop an answered turn's reasoning; SmolLM2's never sees it.
    for source in (QWEN3, DEEPSEEK_R1_DISTILL, CHATML_TEMPLATE):
        assert "Two and two" not in prompt_of(source, messages=TURNS)
    # Qwen3 keeps the reasoning of the turns after the last question (a tool loop).
    loop = [{"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "reasoning_content": "Ask the tool.",
             "tool_calls": [{"id": "c1", "type": "function", "function": {
                 "name": "weather", "arguments": '{"city": "Oslo"}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "Rain"}]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    assert "<think>\nAsk the tool.\n</think>\n\n<tool_call>" in prompt_of(
        QWEN3, messages=loop, tools=tools)


def test_enable_thinking_reaches_the_template() -> None:
    assert prompt_of(QWEN3, reasoning_effort="none").endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert prompt_of(QWEN3, reasoning_effort="low").endswith("<|im_start|>assistant\n")
    assert "Reasoning Mode: /no_think" in prompt_of(SMOLLM3, reasoning_effort="none")


SCHEMA = {"type": "json_schema", "json_schema": {"name": "n", "schema": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}}


def test_a_grammar_waits_for_the_end_of_the_reasoning() -> None:
    qwen3 = backend(QWEN3)
    generation, _, plan = qwen3.build(request(response_format=SCHEMA))
    # The block is opened for the model, so that the grammar knows where it is.
    assert "".join(chr(t) for t in generation.prompt).endswith("assistant\n<think>\n")
    assert plan is not None and plan.inside
    grammar = generation.sampling.grammar
    assert grammar is not None
    assert 'root ::= reasoning-0 "</think>" [ \\t\\n]* answer-root' in grammar
    # Thinking off: the prompt closed the block, and the answer is the grammar's at once.
    off, _, _ = qwen3.build(request(response_format=SCHEMA, reasoning_effort="none"))
    assert off.sampling.grammar is not None and "reasoning-0" not in off.sampling.grammar
    # Calls with tool_choice auto: free text (no "<tool_") after the reasoning, then calls.
    weather = [{"type": "function", "function": {"name": "weather"}}]
    calls, parse_calls, _ = backend(DEEPSEEK_R1_DISTILL).build(request(tools=weather))
    assert parse_calls and calls.sampling.grammar_trigger is None
    assert calls.sampling.grammar is not None
    assert 'after ::= free-0 ("<tool_" answer-root)?' in calls.sampling.grammar


# -- the split ---------------------------------------------------------------------


def split(pieces: list[str], *, inside: bool) -> tuple[str, str]:
    splitter = ThinkSplitter("<think>", "</think>", inside=inside)
    out = [splitter.feed(p) for p in pieces] + [splitter.finish()]
    return "".join(r for r, _ in out), "".join(c for _, c in out)


REPLY = "<think>\nFirst, 2+2 is 4.\nSo: 4 <3\n</think>\n\nIt is 4."


@settings(max_examples=200, deadline=None)
@given(cuts=st.lists(st.integers(0, len(REPLY)), max_size=8))
def test_the_split_does_not_depend_on_where_the_pieces_break(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(REPLY)]
    pieces = [REPLY[a:b] for a, b in pairwise(bounds)]
    assert split(pieces, inside=False) == ("First, 2+2 is 4.\nSo: 4 <3", "It is 4.")
    inner = REPLY.removeprefix("<think>")
    bounds = [0, *sorted(c for c in cuts if c <= len(inner)), len(inner)]
    pieces = [inner[a:b] for a, b in pairwise(bounds)]
    assert split(pieces, inside=True) == ("First, 2+2 is 4.\nSo: 4 <3", "It is 4.")


@pytest.mark.parametrize(
    ("pieces", "inside", "expected"),
    [
        (["Hello", " there"], False, ("", "Hello there")),  # no block: all answer
        (["<", "b>bold</b>"], False, ("", "<b>bold</b>")),  # a tag that is not the block
        (["  \n", "Hi"], False, ("", "  \nHi")),  # as the model wrote it
        (["<thi"], False, ("", "<thi")),  # cut inside the opening tag
        (["<think>Still", " going"], False, ("Still going", "")),  # never closed
        (["Still going\n</thi"], True, ("Still going\n</thi", "")),
        (["</think>Quick."], True, ("", "Quick.")),  # an empty block
        (["a</think>b</think>c"], True, ("a", "b</think>c")),  # one block only
    ],
)
def test_edges_of_the_split(pieces: list[str], inside: bool,
                            expected: tuple[str, str]) -> None:
    assert split(pieces, inside=inside) == expected


async def _rest(events: list[GenerationEvent]) -> AsyncIterator[GenerationEvent]:
    for event in events:
        yield event


def logprob(text: str) -> TokenLogprob:
    return TokenLogprob(token=text, logprob=-0.5, bytes=text.encode(), top=())


async def deltas(texts: list[str], finish: str, plan: ThinkPlan, *, calls: bool = False,
                 ) -> list[Delta]:
    events = [GenerationEvent(t, 0, completion_tokens=i + 1, logprobs=(logprob(t),))
              for i, t in enumerate(texts)]
    events[-1] = GenerationEvent(texts[-1], 0, finish, completion_tokens=len(texts),
                                 logprobs=(logprob(texts[-1]),))
    return [d async for d in engine_deltas(events[0], _rest(events[1:]), calls, None,
                                           think=plan)]


def fold(out: list[Delta]) -> dict[str, Any]:
    acc = Accumulator.of_deltas(id="chatcmpl-1", created=1, model="m", n=1, legacy=False)
    for delta in out:
        acc.add_delta(delta)
    result = acc.result()
    return {**result.choices[0].model_dump(exclude={"index"}),
            "usage": result.usage.model_dump() if result.usage else None}


QWEN3_PLAN = think_plan(template(QWEN3).thinking, request())
R1_PLAN = think_plan(template(DEEPSEEK_R1_DISTILL).thinking, request())
# What a Qwen3 model sends, token by token (its tags are single tokens).
QWEN3_TOKENS = ["<think>", "\n", "The", " user", " greets", ".", "\n", "</think>", "\n\n",
                "Hello", "!"]


async def test_the_engines_text_becomes_reasoning_then_the_answer() -> None:
    assert QWEN3_PLAN is not None
    out = await deltas(QWEN3_TOKENS, "stop", QWEN3_PLAN)
    assert [(d.reasoning, d.content) for d in out if d.reasoning or d.content] == [
        ("The", None), (" user", None), (" greets", None), (".", None),
        (None, "Hello"), (None, "!")]
    folded = fold(out)
    assert folded["message"]["reasoning_content"] == "The user greets."
    assert folded["message"]["content"] == "Hello!" and folded["finish_reason"] == "stop"
    # The reasoning tokens: up to the closing tag. The answer's logprobs only.
    assert folded["usage"]["completion_tokens_details"] == {"reasoning_tokens": 8}
    assert [lp["token"] for lp in folded["logprobs"]["content"]] == ["\n\n", "Hello", "!"]


async def test_a_reply_that_begins_inside_the_block_and_never_closes_it() -> None:
    assert R1_PLAN is not None and R1_PLAN.inside
    out = await deltas(["Okay", ",", " so", " the"], "length", R1_PLAN)
    folded = fold(out)
    assert folded["message"]["reasoning_content"] == "Okay, so the"
    assert folded["message"]["content"] == "" and folded["finish_reason"] == "length"
    assert folded["usage"]["completion_tokens_details"] == {"reasoning_tokens": 4}
    assert not any(d.logprobs for d in out)


async def test_tool_calls_are_read_from_the_answer_only() -> None:
    assert R1_PLAN is not None
    thought = ["I", " could", " write", " <tool", "_call>", " here", ".", "</think>", "\n"]
    call = ["<tool_call>", '\n{"name": "weather", "arguments": {"city": "Oslo"}}\n',
            "</tool_call>"]
    folded = fold(await deltas(thought + call, "stop", R1_PLAN, calls=True))
    assert folded["message"]["reasoning_content"] == "I could write <tool_call> here."
    assert folded["message"]["content"] is None and folded["finish_reason"] == "tool_calls"
    [made] = folded["message"]["tool_calls"]
    assert made["function"] == {"name": "weather", "arguments": '{"city": "Oslo"}'}
    assert json.loads(made["function"]["arguments"]) == {"city": "Oslo"}

"""Reasoning through the official SDKs: a gateway Kathan whose models are the strict
upstream fakes (``tests/upstreams``), each scripted to reason. Whatever the upstream
calls it (OpenAI-compatible ``reasoning_content`` or ``reasoning``, Anthropic's
signed ``thinking`` blocks, Gemini's thought parts), a client gets the reasoning
apart from the answer in its own dialect, streamed and whole alike: chat
completions' ``reasoning_content``, a Responses ``reasoning`` item before the
message, a Messages ``thinking`` block (with Anthropic's signature where an
anthropic deployment gave one); and the reasoning tokens in each usage.

An earlier turn's reasoning, sent back in any dialect, never reaches an upstream
that has no field for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest
from openai import OpenAI

from tests.conftest import LiveServer, start_server, stop_server
from tests.integration.test_dialects_upstream import (
    ANTHROPIC_KEY,
    GEMINI_KEY,
    OPENAI_KEY,
    Fakes,
    config,
)

THOUGHT = "The user greets me, so I greet them back."
SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds..."
CLAUDE_THOUGHT_START = "I need to find the GCD of 1071 and 462"
CLAUDE_ANSWER = "The greatest common divisor of 1071 and 462 is **21**."
GEMINI_ANSWER = "The sum of the first 10 prime numbers is 129."


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    world = Fakes()
    world.openai.reasoning = THOUGHT
    world.start()
    try:
        yield world
    finally:
        world.close()


@pytest.fixture(scope="module")
def gateway(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("reasoning"), config(fakes.urls), {
        "OPENAI_KEY": OPENAI_KEY, "GEMINI_KEY": GEMINI_KEY, "ANTHROPIC_KEY": ANTHROPIC_KEY})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def oa(gateway: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway.v1, api_key=gateway.api_key, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def an(gateway: LiveServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.base_url, api_key=gateway.api_key,
                             max_retries=0) as c:
        yield c


def extra(model: Any, name: str) -> Any:
    return (model.model_extra or {}).get(name)


# -- chat completions --------------------------------------------------------------


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_chat_gives_the_reasoning_apart_streamed_and_whole(
    oa: OpenAI, fakes: Fakes, field: str
) -> None:
    fakes.openai.reasoning_field = field
    try:
        whole = oa.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "Hi"}])
        chunks = list(oa.chat.completions.create(
            model="gpt", messages=[{"role": "user", "content": "Hi"}], stream=True,
            stream_options={"include_usage": True}))
    finally:
        fakes.openai.reasoning_field = "reasoning_content"
    message = whole.choices[0].message
    assert extra(message, "reasoning_content") == THOUGHT
    assert message.content == "Hello from the fake upstream."
    assert whole.usage is not None and whole.usage.completion_tokens_details is not None
    assert whole.usage.completion_tokens_details.reasoning_tokens == len(THOUGHT.split())
    streamed = "".join(extra(c.choices[0].delta, "reasoning_content") or ""
                       for c in chunks if c.choices)
    assert streamed == THOUGHT
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == \
        message.content
    # No chunk mixes the two, and the reasoning comes first.
    kinds = ["r" if extra(c.choices[0].delta, "reasoning_content") else "c"
             for c in chunks if c.choices and (c.choices[0].delta.content
                                               or extra(c.choices[0].delta, "reasoning_content"))]
    assert "".join(kinds) == "r" * len(THOUGHT.split()) + "c" * 5
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == len(THOUGHT.split())


def test_chat_gives_geminis_thoughts_and_claudes_thinking(oa: OpenAI) -> None:
    gemini = oa.chat.completions.create(
        model="gemini", messages=[{"role": "user", "content": "Sum the first 10 primes."}],
        reasoning_effort="low")
    assert extra(gemini.choices[0].message, "reasoning_content").startswith(
        "**Calculating the sum**")
    assert gemini.choices[0].message.content == GEMINI_ANSWER
    assert gemini.usage is not None and gemini.usage.completion_tokens_details is not None
    assert gemini.usage.completion_tokens_details.reasoning_tokens == 375
    claude = oa.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "GCD of 1071 and 462?"}],
        reasoning_effort="low")
    assert extra(claude.choices[0].message, "reasoning_content").startswith(
        CLAUDE_THOUGHT_START)
    assert claude.choices[0].message.content == CLAUDE_ANSWER


def test_an_earlier_turns_reasoning_content_is_not_sent_upstream(
    oa: OpenAI, fakes: Fakes
) -> None:
    oa.chat.completions.create(model="gpt", messages=[
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!", "reasoning_content": THOUGHT},
        {"role": "user", "content": "Again"}])
    assert all("reasoning_content" not in m for m in fakes.received("gpt")["messages"])


# -- Responses -------------------------------------------------------------------


def test_responses_put_a_reasoning_item_before_the_message(oa: OpenAI) -> None:
    whole = oa.responses.create(model="gpt", input="Hi")
    with oa.responses.stream(model="gpt", input="Hi") as stream:
        events = [event.type for event in stream]
        final = stream.get_final_response()
    for response in (whole, final):
        reasoning, message = response.output
        assert reasoning.type == "reasoning" and message.type == "message"
        assert reasoning.content is not None
        assert [(c.type, c.text) for c in reasoning.content] == [("reasoning_text", THOUGHT)]
        assert reasoning.summary == [] and reasoning.status == "completed"
        assert response.output_text == "Hello from the fake upstream."
        assert response.usage is not None
        assert response.usage.output_tokens_details.reasoning_tokens == len(THOUGHT.split())
    words = len(THOUGHT.split())
    assert events[:4 + words] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", *["response.reasoning_text.delta"] * words]
    assert events[4 + words:8 + words] == [
        "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done", "response.output_item.added"]
    assert events[-1] == "response.completed"


def test_a_continued_response_keeps_its_reasoning_from_the_upstream(
    oa: OpenAI, fakes: Fakes
) -> None:
    first = oa.responses.create(model="gpt", input="Hi")
    second = oa.responses.create(model="gpt", input="Again", previous_response_id=first.id)
    assert second.output[0].type == "reasoning"
    assert [m["role"] for m in fakes.received("gpt")["messages"]] == [
        "user", "assistant", "user"]
    assert all("reasoning_content" not in m for m in fakes.received("gpt")["messages"])
    # The reasoning item sent back as input is accepted as well.
    items: list[Any] = [{"role": "user", "content": "Hi"},
                        *[item.model_dump(exclude_none=True) for item in first.output],
                        {"role": "user", "content": "Again"}]
    oa.responses.create(model="gpt", input=items, store=False)
    assert [m["role"] for m in fakes.received("gpt")["messages"]] == [
        "user", "assistant", "user"]


# -- Messages --------------------------------------------------------------------


def test_messages_relay_claudes_signed_thinking(an: anthropic.Anthropic) -> None:
    asked: dict[str, Any] = {
        "model": "claude", "max_tokens": 2048,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [{"role": "user", "content": "GCD of 1071 and 462?"}]}
    whole = an.messages.create(**asked)
    with an.messages.stream(**asked) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    for message in (whole, final):
        thinking, text = message.content
        assert thinking.type == "thinking" and text.type == "text"
        assert thinking.thinking.startswith(CLAUDE_THOUGHT_START)
        assert thinking.signature == SIGNATURE
        assert text.text == CLAUDE_ANSWER
    assert deltas == ["thinking_delta", "thinking_delta", "signature_delta",
                      "text_delta", "text_delta", "text_delta"]


def test_messages_give_other_upstreams_reasoning_as_unsigned_thinking(
    an: anthropic.Anthropic, fakes: Fakes
) -> None:
    asked: dict[str, Any] = {"model": "gpt", "max_tokens": 200, "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Earlier thoughts.", "signature": ""},
            {"type": "text", "text": "Hello!"}]},
        {"role": "user", "content": "Again"}]}
    whole = an.messages.create(**asked)
    with an.messages.stream(**asked) as stream:
        final = stream.get_final_message()
    for message in (whole, final):
        thinking, text = message.content
        assert thinking.type == "thinking" and thinking.thinking == THOUGHT
        assert thinking.signature == ""
        assert text.type == "text" and text.text == "Hello from the fake upstream."
    # The earlier thinking block went nowhere: OpenAI's format has no place for it.
    assert all("reasoning_content" not in m for m in fakes.received("gpt")["messages"])

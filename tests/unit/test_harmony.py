"""gpt-oss models (backends/harmony.py): the prompt is what OpenAI's harmony library
renders for the conversation, and the generated tokens, made here by the same library's
encoding of a reply, split into reasoning, content and tool calls. The vocabulary the
library needs comes from the npm ``tiktoken`` package (``make`` puts it in
``.venv/share/tiktoken``; engine/harmony_vocab.py checks its digest)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyEncoding,
    Message,
    ReasoningEffort,
    Role,
    SystemContent,
    ToolDescription,
)

from kathan.backends import harmony
from kathan.backends.base import Delta, ToolCallDelta
from kathan.engine import harmony_vocab
from kathan.engine.types import GenerationEvent
from kathan.errors import InvalidRequestError, UnsupportedParameterError
from kathan.protocol.chat import ChatCompletionRequest

VOCAB = Path(__file__).parents[2] / ".venv" / "share" / "tiktoken"
TODAY = "2026-12-04"
WEATHER = {"type": "object", "properties": {"location": {"type": "string"}}}


@pytest.fixture(scope="module")
def encoding() -> Iterator[HarmonyEncoding]:
    directory = Path(os.environ.get(harmony_vocab.ENV) or VOCAB)
    if not harmony_vocab.present(directory):
        if os.environ.get("CI"):
            pytest.fail(f"no o200k vocabulary in {directory}: `make test` makes it")
        pytest.skip(f"no o200k vocabulary in {directory} (`make test` makes it)")
    before = os.environ.get(harmony_vocab.ENV)
    os.environ[harmony_vocab.ENV] = str(directory)
    try:
        yield harmony.load_encoding([], directory)
    finally:
        if before is None:
            os.environ.pop(harmony_vocab.ENV, None)
        else:
            os.environ[harmony_vocab.ENV] = before


def chat(**body: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "gpt-oss", **body})


def test_the_prompt_is_harmonys_rendering_of_the_conversation(
    encoding: HarmonyEncoding,
) -> None:
    request = chat(reasoning_effort="high", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Tokyo?"},
        {"role": "assistant", "content": None, "tool_calls": [{
            "id": "c1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"location":"Tokyo"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"sky":"clear"}'},
    ], tools=[{"type": "function", "function": {
        "name": "get_weather", "description": "Get weather", "parameters": WEATHER}}])
    expected = Conversation.from_messages([
        Message.from_role_and_content(Role.SYSTEM, SystemContent.new()
                                      .with_reasoning_effort(ReasoningEffort.HIGH)
                                      .with_conversation_start_date(TODAY)),
        Message.from_role_and_content(Role.DEVELOPER, DeveloperContent.new()
                                      .with_instructions("Be brief.")
                                      .with_function_tools([ToolDescription.new(
                                          "get_weather", "Get weather",
                                          parameters=WEATHER)])),
        Message.from_role_and_content(Role.USER, "Weather in Tokyo?"),
        Message.from_role_and_content(Role.ASSISTANT, '{"location":"Tokyo"}')
        .with_channel("commentary").with_recipient("functions.get_weather")
        .with_content_type("<|constrain|>json"),
        Message.from_author_and_content(Author.new(Role.TOOL, "functions.get_weather"),
                                        '{"sky":"clear"}')
        .with_channel("commentary").with_recipient("assistant"),
    ])
    rendered = encoding.render_conversation(harmony.conversation(request, TODAY))
    assert rendered == encoding.render_conversation(expected)
    text = encoding.decode(harmony.prompt(encoding, request))
    assert "Reasoning: high" in text and text.endswith("<|start|>assistant")
    assert "type get_weather" in text


def test_an_earlier_turns_answer_is_kept_and_tools_are_left_out_with_none(
    encoding: HarmonyEncoding,
) -> None:
    request = chat(tool_choice="none", messages=[
        {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"}],
        tools=[{"type": "function", "function": {"name": "f"}}])
    text = encoding.decode(harmony.prompt(encoding, request))
    assert "<|channel|>final<|message|>Hello!" in text
    assert "functions" not in text and "Reasoning: medium" in text


@pytest.mark.parametrize(("body", "param"), [
    ({"reasoning_effort": "none"}, "reasoning_effort"),
    ({"reasoning_effort": "xhigh"}, "reasoning_effort"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"tool_choice": "required", "tools": [{"type": "function", "function": {"name": "f"}}]},
     "tool_choice"),
    ({"stop": ["x"]}, "stop"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}}]}]},
     "messages[0].content[0]"),
])
def test_what_the_format_cannot_carry_is_a_400(encoding: HarmonyEncoding,
                                                body: dict[str, Any], param: str) -> None:
    request = chat(**{"messages": [{"role": "user", "content": "Hi"}], **body})
    with pytest.raises(UnsupportedParameterError) as refused:
        harmony.prompt(encoding, request)
    assert refused.value.param == param


def test_a_tool_result_must_answer_a_call(encoding: HarmonyEncoding) -> None:
    request = chat(messages=[{"role": "user", "content": "Hi"},
                             {"role": "tool", "tool_call_id": "nope", "content": "x"}])
    with pytest.raises(InvalidRequestError, match="nope"):
        harmony.prompt(encoding, request)


def reply(encoding: HarmonyEncoding, *messages: Message) -> list[int]:
    """What a gpt-oss model generates after the prompt's ``<|start|>assistant``: the
    library's own rendering of ``messages``, without that opening."""
    start = encoding.encode("<|start|>assistant", allowed_special="all")
    tokens: list[int] = []
    for message in messages:
        rendered = encoding.render(message)
        assert rendered[:len(start)] == start
        tokens += rendered[len(start):] if not tokens else rendered
    return tokens


async def run(tokens: list[int], encoding: HarmonyEncoding, *,
              per_event: int = 1, finish: str = "stop") -> list[Delta]:
    """The deltas of a scripted engine that generated ``tokens``."""
    chunks = [tokens[i:i + per_event] for i in range(0, len(tokens), per_event)]
    events = [GenerationEvent("", 0, completion_tokens=i + 1, prompt_tokens=10,
                              tokens=tuple(c)) for i, c in enumerate(chunks)]
    last = events[-1]
    events[-1] = GenerationEvent("", 0, finish, completion_tokens=len(tokens),
                                 prompt_tokens=10, tokens=last.tokens)

    async def rest() -> AsyncIterator[GenerationEvent]:
        for event in events[1:]:
            yield event

    return [d async for d in harmony.harmony_deltas(events[0], rest(), encoding, "call_x")]


async def test_reasoning_then_the_answer(encoding: HarmonyEncoding) -> None:
    tokens = reply(encoding,
                   Message.from_role_and_content(Role.ASSISTANT, "The user greets me.")
                   .with_channel("analysis"),
                   Message.from_role_and_content(Role.ASSISTANT, "Hello there!")
                   .with_channel("final"))
    # The model ends its last message with <|return|> where a rendered one has <|end|>.
    assert tokens[-1] == encoding.encode("<|end|>", allowed_special="all")[0]
    tokens[-1:] = encoding.encode("<|return|>", allowed_special="all")
    deltas = await run(tokens, encoding)
    assert "".join(d.reasoning or "" for d in deltas) == "The user greets me."
    assert "".join(d.content or "" for d in deltas) == "Hello there!"
    assert len([d for d in deltas if d.content]) > 1  # streamed in pieces
    finish = [d.finish_reason for d in deltas if d.finish_reason]
    assert finish == ["stop"]
    usage = deltas[-1].usage
    assert usage is not None and usage.completion_tokens == len(tokens)
    assert 0 < usage.reasoning_tokens < len(tokens)


async def test_a_tool_call_ends_the_choice_with_tool_calls(encoding: HarmonyEncoding) -> None:
    arguments = json.dumps({"location": "Tokyo"})
    tokens = reply(encoding,
                   Message.from_role_and_content(Role.ASSISTANT, "I need the weather.")
                   .with_channel("analysis"),
                   Message.from_role_and_content(Role.ASSISTANT, arguments)
                   .with_channel("commentary").with_recipient("functions.get_weather")
                   .with_content_type("<|constrain|>json"))
    assert tokens[-1] in encoding.stop_tokens_for_assistant_actions()  # <|call|>
    deltas = await run(tokens, encoding, per_event=3)
    pieces: list[ToolCallDelta] = [c for d in deltas for c in d.tool_calls]
    assert pieces[0].name == "get_weather" and pieces[0].id == "call_x_0_0"
    assert {p.index for p in pieces} == {0}
    assert "".join(p.arguments for p in pieces) == arguments
    assert not "".join(d.content or "" for d in deltas)
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["tool_calls"]


async def test_output_out_of_the_format_is_shown_not_lost(encoding: HarmonyEncoding) -> None:
    tokens = encoding.encode("<|message|>", allowed_special="all") + encoding.encode(
        "plain words")
    deltas = await run(tokens, encoding, finish="length")
    assert "plain words" in "".join(d.content or "" for d in deltas)
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]


def test_the_vocabulary_comes_from_a_models_own_tokens(tmp_path: Path,
                                                       encoding: HarmonyEncoding) -> None:
    # A gpt-oss GGUF's pieces are o200k's tokens in rank order: the file made from them
    # is the one the library checks.
    lines = (VOCAB / harmony_vocab.FILE).read_bytes().splitlines()
    pieces = [base64.b64decode(line.split()[0]) for line in lines] + [b"<|special|>"]
    path = harmony_vocab.write(harmony_vocab.from_pieces(pieces), tmp_path)
    assert harmony_vocab.present(tmp_path) and path.name == harmony_vocab.FILE
    with pytest.raises(harmony_vocab.VocabularyError, match="not o200k"):
        harmony_vocab.write(harmony_vocab.from_pieces(pieces[1:] + [b"x"]), tmp_path / "x")
    with pytest.raises(harmony_vocab.VocabularyError, match="o200k has"):
        harmony_vocab.from_pieces(pieces[:100])


class ScriptedEngine:
    """The engine seam of a gpt-oss model: its template speaks in channels, and it
    generates ``reply`` whatever it is asked, recording the request."""

    ready = True
    n_ctx = 4096

    def __init__(self, reply: list[int]) -> None:
        from types import SimpleNamespace

        from kathan.engine.template import ChatTemplate
        self.template = ChatTemplate(
            "{% for m in messages %}<|start|>{{ m['role'] }}<|channel|>final<|message|>"
            "{{ m['content'] }}<|end|>{% endfor %}", bos_token="", eos_token="<|return|>")
        self.model = SimpleNamespace(pieces=[], info=SimpleNamespace(n_vocab=201_088))
        self.config = SimpleNamespace(n_slots=4)
        self.reply = reply
        self.seen: Any = None

    async def generate(self, request: Any) -> AsyncIterator[GenerationEvent]:
        self.seen = request
        for i, token in enumerate(self.reply):
            last = i == len(self.reply) - 1
            yield GenerationEvent("", 0, "stop" if last else None, completion_tokens=i + 1,
                                  prompt_tokens=len(request.prompt), tokens=(token,))


async def test_the_local_backend_serves_a_gpt_oss_model_through_harmony(
    encoding: HarmonyEncoding,
) -> None:
    from kathan.backends.local import LocalBackend

    tokens = reply(encoding,
                   Message.from_role_and_content(Role.ASSISTANT, "Greeting.")
                   .with_channel("analysis"),
                   Message.from_role_and_content(Role.ASSISTANT, "Hi!").with_channel("final"))
    tokens[-1:] = encoding.encode("<|return|>", allowed_special="all")
    engine = ScriptedEngine(tokens)
    backend = LocalBackend(engine, retry_after=1)  # type: ignore[arg-type]
    request = chat(messages=[{"role": "user", "content": "Hello"}], reasoning_effort="low",
                   max_tokens=50)
    async with await backend.open(request) as stream:
        deltas = [d async for d in stream]
    assert engine.seen.tokens and engine.seen.prompt == harmony.prompt(encoding, request)
    assert "".join(d.reasoning or "" for d in deltas) == "Greeting."
    assert "".join(d.content or "" for d in deltas) == "Hi!"
    with pytest.raises(UnsupportedParameterError):
        backend.build(chat(messages=[{"role": "user", "content": "Hi"}],
                           reasoning_effort="none"))

"""gpt-oss models on the local engine: the harmony format, rendered and parsed by OpenAI's
own library (``openai-harmony``), never by hand.

A model is a harmony model when its GGUF's chat template speaks in channels
(``<|channel|>``). Its prompt is the conversation as harmony renders it for the
assistant's next message (``HarmonyFormat.prompt``): a system message with the
reasoning effort (``reasoning_effort`` low, medium or high; the format knows no other
level, so ``none``, ``minimal`` and ``xhigh`` are a 400), a developer message with the
request's system text and its function tools, then the turns. An earlier assistant
turn's reasoning is dropped from the prompt, as the format requires
(``auto_drop_analysis``); its tool calls are commentary messages to
``functions.<name>``, and a tool's result a message from that function.

The engine delivers each generated token's id (``GenerationRequest.tokens``) and
``harmony_deltas`` feeds them to the library's ``StreamableParser``: the ``analysis``
channel becomes reasoning, ``final`` (and a commentary preamble) content, a commentary
message to ``functions.<name>`` a tool call, ending the choice with ``tool_calls``.
What the format cannot carry is a 400 that says so: images (gpt-oss reads text),
``response_format`` other than text, a forced tool choice and ``stop`` strings.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from openai_harmony import (
    Author,
    Conversation,
    DeveloperContent,
    HarmonyEncoding,
    HarmonyEncodingName,
    HarmonyError,
    Message,
    ReasoningEffort,
    Role,
    StreamableParser,
    SystemContent,
    ToolDescription,
    load_harmony_encoding,
)

from kathan.backends.base import Delta, TokenUsage, ToolCallDelta
from kathan.engine import harmony_vocab
from kathan.engine.types import GenerationEvent
from kathan.errors import EngineError, InvalidRequestError, KathanError, UnsupportedParameterError
from kathan.protocol.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    FunctionMessage,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
)

MARKER = "<|channel|>"  # what a harmony chat template has and others lack
_EFFORTS = {"low": ReasoningEffort.LOW, "medium": ReasoningEffort.MEDIUM,
            "high": ReasoningEffort.HIGH}
_FUNCTIONS = "functions."


def is_harmony(template_source: str) -> bool:
    return MARKER in template_source


def load_encoding(pieces: Sequence[bytes], cache: Path) -> HarmonyEncoding:
    """The gpt-oss encoding, its vocabulary from the model's own tokens (``pieces``)
    unless ``TIKTOKEN_ENCODINGS_BASE`` already holds it; nothing is downloaded."""
    harmony_vocab.provide(pieces, cache)
    return load_harmony_encoding(HarmonyEncodingName.HARMONY_GPT_OSS)


def _text(content: str | Sequence[Any] | None, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for i, part in enumerate(content):
        if isinstance(part, ImagePart):
            raise UnsupportedParameterError(
                f"{where}[{i}]: gpt-oss models read text only; this part is an image.",
                param=f"{where}[{i}]")
        assert isinstance(part, TextPart)
        parts.append(part.text)
    return "".join(parts)


def check(request: ChatCompletionRequest) -> None:
    """A 400 for what the harmony format cannot carry."""
    effort = request.reasoning_effort
    if effort is not None and effort not in _EFFORTS:
        raise UnsupportedParameterError(
            f"reasoning_effort '{effort}' is not one gpt-oss models have: they reason at "
            "low, medium (the default) or high effort.", param="reasoning_effort")
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        raise UnsupportedParameterError(
            f"response_format '{fmt.type}' is not served for gpt-oss models on the local "
            "engine yet: their output is a format of its own (harmony), which a grammar "
            "would break.", param="response_format")
    choice = request.tool_choice
    if choice is not None and choice not in ("auto", "none"):
        raise UnsupportedParameterError(
            "tool_choice: a gpt-oss model decides itself whether to call a tool; "
            "'auto' and 'none' are served, a forced call is not.", param="tool_choice")
    if request.stop_list:
        raise UnsupportedParameterError(
            "stop is not served for gpt-oss models on the local engine yet.", param="stop")
    if request.functions or request.function_call:
        raise UnsupportedParameterError(
            "functions: the legacy form is not served for gpt-oss models; send tools.",
            param="functions")


def conversation(request: ChatCompletionRequest, today: str | None = None) -> Conversation:
    """The request as a harmony conversation."""
    effort = _EFFORTS[request.reasoning_effort or "medium"]
    system = SystemContent.new().with_reasoning_effort(effort).with_conversation_start_date(
        today or datetime.now(UTC).strftime("%Y-%m-%d"))
    instructions = "\n\n".join(
        _text(m.content, f"messages[{i}].content") for i, m in enumerate(request.messages)
        if isinstance(m, SystemMessage))
    tools = [t.function for t in request.tools or ()] if request.tool_choice != "none" else []
    messages = [Message.from_role_and_content(Role.SYSTEM, system)]
    if instructions or tools:
        developer = DeveloperContent.new()
        if instructions:
            developer = developer.with_instructions(instructions)
        if tools:
            developer = developer.with_function_tools([
                ToolDescription.new(f.name, f.description or "", parameters=f.parameters)
                for f in tools])
        messages.append(Message.from_role_and_content(Role.DEVELOPER, developer))
    names: dict[str, str] = {}  # a call's id -> its function
    for i, message in enumerate(request.messages):
        where = f"messages[{i}].content"
        if isinstance(message, UserMessage):
            messages.append(Message.from_role_and_content(Role.USER, _text(message.content,
                                                                           where)))
        elif isinstance(message, AssistantMessage):
            text = _text(message.content, where)
            if text:
                messages.append(Message.from_role_and_content(Role.ASSISTANT, text)
                                .with_channel("final"))
            for call in message.tool_calls or ():
                names[call.id] = call.function.name
                messages.append(
                    Message.from_role_and_content(Role.ASSISTANT, call.function.arguments)
                    .with_channel("commentary")
                    .with_recipient(_FUNCTIONS + call.function.name)
                    .with_content_type("<|constrain|>json"))
        elif isinstance(message, ToolMessage):
            name = names.get(message.tool_call_id)
            if name is None:
                raise InvalidRequestError(
                    f"messages[{i}] answers the call '{message.tool_call_id}', which no "
                    "earlier assistant message made.", param=f"messages[{i}].tool_call_id")
            messages.append(
                Message.from_author_and_content(Author.new(Role.TOOL, _FUNCTIONS + name),
                                                _text(message.content, where))
                .with_channel("commentary").with_recipient("assistant"))
        elif isinstance(message, FunctionMessage):
            messages.append(
                Message.from_author_and_content(Author.new(Role.TOOL, _FUNCTIONS + message.name),
                                                message.content or "")
                .with_channel("commentary").with_recipient("assistant"))
    return Conversation.from_messages(messages)


def prompt(encoding: HarmonyEncoding, request: ChatCompletionRequest) -> list[int]:
    """The prompt's tokens: the conversation rendered for the assistant's next message."""
    check(request)
    try:
        tokens: list[int] = encoding.render_conversation_for_completion(
            conversation(request), Role.ASSISTANT)
    except HarmonyError as exc:
        raise InvalidRequestError(f"messages: the harmony format refused the conversation: "
                                  f"{exc}", param="messages") from exc
    return tokens


class Splitter:
    """One choice's generated tokens, parsed into reasoning, content and tool calls."""

    def __init__(self, encoding: HarmonyEncoding, call_id: str) -> None:
        self._encoding = encoding
        self._parser = StreamableParser(encoding, Role.ASSISTANT)
        self._call_id = call_id
        self._call_message = -1  # the message (by number) whose tool call is open
        self.calls = 0
        self.reasoning_tokens = 0
        self._broken = False

    def feed(self, token: int) -> tuple[str, str, list[ToolCallDelta]]:
        """(reasoning, content, call pieces) that ``token`` adds."""
        if self._broken:
            return "", self._encoding.decode([token]), []
        parser = self._parser
        try:
            parser.process(token)
        except HarmonyError:
            # Out of the format: what follows is shown as it is, not lost.
            self._broken = True
            return "", self._encoding.decode([token]), []
        delta = parser.last_content_delta or ""
        channel, recipient = parser.current_channel, parser.current_recipient
        if channel == "analysis" and parser.current_role == Role.ASSISTANT:
            self.reasoning_tokens += 1
        if not delta:
            return "", "", []
        if recipient and recipient.startswith(_FUNCTIONS):
            number = len(parser.messages)
            if number != self._call_message:
                self._call_message = number
                self.calls += 1
                return "", "", [ToolCallDelta(
                    index=self.calls - 1, id=f"{self._call_id}_{self.calls - 1}",
                    name=recipient.removeprefix(_FUNCTIONS), arguments=delta)]
            return "", "", [ToolCallDelta(index=self.calls - 1, arguments=delta)]
        if channel == "analysis":
            return delta, "", []
        return "", delta, []


async def harmony_deltas(
    first: GenerationEvent, events: AsyncIterator[GenerationEvent],
    encoding: HarmonyEncoding, call_id: str, see: Any = None,
) -> AsyncGenerator[Delta, None]:
    """The engine's events (with token ids) for every choice as deltas, ending with the
    usage; ``see`` (when given) sees every event, for the usage of a stream cut short."""
    splitters: dict[int, Splitter] = {}
    prompt_tokens = cached = completion = reasoning = 0
    try:
        event: GenerationEvent | None = first
        while event is not None:
            if see is not None:
                see(event)
            index = event.index
            splitter = splitters.get(index)
            if splitter is None:
                splitter = splitters[index] = Splitter(encoding, f"{call_id}_{index}")
            thought, text, calls = "", "", []
            for token in event.tokens:
                more_thought, more_text, more_calls = splitter.feed(token)
                thought, text = thought + more_thought, text + more_text
                calls += more_calls
            if thought or text or calls:
                yield Delta(index=index, content=text or None, reasoning=thought or None,
                            tool_calls=tuple(calls))
            if event.finish_reason is not None:
                finish = event.finish_reason
                if finish == "stop" and splitter.calls:
                    finish = "tool_calls"
                yield Delta(index=index, finish_reason=finish)
                prompt_tokens = event.prompt_tokens
                cached = max(cached, event.cached_tokens)
                completion += event.completion_tokens
                reasoning += splitter.reasoning_tokens
            event = await anext(events, None)
    except KathanError:
        raise
    except Exception as exc:
        raise EngineError("The local engine failed while generating.") from exc
    yield Delta(usage=TokenUsage(prompt_tokens, completion, cached,
                                 reasoning_tokens=reasoning))

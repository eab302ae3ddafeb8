"""Anthropic's Messages API (``POST /v1/messages``) as wire models, and its translation to
and from the chat request every backend serves.

A Messages request becomes a ``ChatCompletionRequest`` (``to_chat``): the system
prompt a system message, ``tool_use`` blocks an assistant's ``tool_calls``,
``tool_result`` blocks tool messages, ``thinking`` blocks an assistant's
``reasoning_content``, ``tool_choice`` ``any`` ``required``,
``stop_sequences`` ``stop``, ``thinking`` a ``reasoning_effort``. It then takes the
one request path (keys, limits, ledger, routing, voice), and the deltas that come
back are rendered in Anthropic's shape by ``api/messages.py``. What the chat
request cannot carry (server tools, documents, more stop sequences than a backend
takes) is a 400 that names the field, never dropped.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kathan.errors import InvalidRequestError
from kathan.protocol.chat import (
    INT64_MAX,
    JSON_INTEGER,
    AssistantMessage,
    ChatCompletionRequest,
    ChatMessage,
    FunctionCall,
    FunctionDefinition,
    ImagePart,
    ImageURL,
    NamedFunction,
    NamedToolChoice,
    StreamOptions,
    SystemMessage,
    TextPart,
    Tool,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from kathan.voice.profile import accents, check_accent, check_language, languages

MAX_STOP_SEQUENCES = 4  # what every backend's chat request takes


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Block(_Wire):
    """A content block. A field this model does not know is refused, unless it is null:
    the SDK sends a reply's blocks back as it got them, with the output's own fields
    (``caller``, ``citations``) set to null, and a null asks for nothing."""

    @model_validator(mode="before")
    @classmethod
    def _drop_null_unknowns(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k in cls.model_fields}
        return data


class CacheControl(_Wire):
    type: Literal["ephemeral"]
    ttl: str | None = None


class TextBlock(_Block):
    type: Literal["text"]
    text: str
    cache_control: CacheControl | None = Field(
        None, description="Accepted; prompt caching is automatic (prefix reuse).")
    citations: list[dict[str, Any]] | None = None


class Base64Source(_Wire):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str


class URLSource(_Wire):
    type: Literal["url"]
    url: str


class ImageBlock(_Block):
    type: Literal["image"]
    source: Annotated[Base64Source | URLSource, Field(discriminator="type")]
    cache_control: CacheControl | None = None


class ToolUseBlock(_Block):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any]
    cache_control: CacheControl | None = None


ResultPart = Annotated[TextBlock | ImageBlock, Field(discriminator="type")]


class ToolResultBlock(_Block):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[ResultPart] | None = None
    is_error: bool | None = None
    cache_control: CacheControl | None = None


class ThinkingBlock(_Block):
    """An earlier turn's reasoning, as the API returned it. An anthropic deployment gets
    it as sent; for the others it is the assistant message's ``reasoning_content``, which
    each backend keeps in the prompt or drops as its model's format does (the upstream
    providers' drop it)."""

    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(_Block):
    type: Literal["redacted_thinking"]
    data: str


Block = Annotated[TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock
                  | RedactedThinkingBlock, Field(discriminator="type")]


class Message(_Wire):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolSpec(_Wire):
    """A client tool. Anthropic's server tools (web search, code execution, ...) carry a
    ``type`` with a version; Kathan runs none of them."""

    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None
    cache_control: CacheControl | None = None


class ToolChoice(_Wire):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingEnabled(_Wire):
    type: Literal["enabled"]
    budget_tokens: Annotated[int, Ge(1024), Le(INT64_MAX), *JSON_INTEGER]


class ThinkingDisabled(_Wire):
    type: Literal["disabled"]


class Metadata(_Wire):
    user_id: str | None = Field(None, max_length=256)


class VoiceExtras(_Wire):
    """Kathan's voice mode, as on chat completions: the extras another dialect's request
    (Messages, Responses) takes too."""

    finetune: bool | None = None
    language: str | None = Field(
        None, json_schema_extra={"anyOf": [{"enum": list(languages())}, {"type": "null"}]})
    gender: Literal["male", "female"] | None = None
    accent: str | None = Field(
        None, json_schema_extra={"anyOf": [{"enum": list(accents())}, {"type": "null"}]})

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        return None if value is None else check_language(value)

    @field_validator("accent")
    @classmethod
    def _known_accent(cls, value: str | None) -> str | None:
        return None if value is None else check_accent(value)


class MessagesRequest(VoiceExtras):
    """Anthropic's Messages request, plus Kathan's voice extras."""

    model: str = Field(min_length=1)
    max_tokens: Annotated[int, Ge(1), Le(INT64_MAX), *JSON_INTEGER]
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: Annotated[int, Ge(0), Le(INT64_MAX), *JSON_INTEGER] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None
    metadata: Metadata | None = None
    stream: bool | None = False
    thinking: Annotated[ThinkingEnabled | ThinkingDisabled, Field(discriminator="type")] | None \
        = None


class CountTokensRequest(_Wire):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Annotated[ThinkingEnabled | ThinkingDisabled, Field(discriminator="type")] | None \
        = None


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicErrorBody(BaseModel):
    """An error, in Anthropic's shape: what /v1/messages answers instead of Kathan's."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


class TokenCount(BaseModel):
    input_tokens: int


# -- the answer -------------------------------------------------------------------


class OutText(BaseModel):
    type: Literal["text"] = "text"
    text: str


class OutThinking(BaseModel):
    """The model's reasoning; ``signature`` is Anthropic's where an anthropic deployment
    answered (a client sends the block back with it), empty otherwise."""

    type: Literal["thinking"] = "thinking"
    thinking: str
    signature: str = ""


class OutToolUse(BaseModel):
    type: Literal["tool_use"] = "tool_use"
    id: str
    name: str
    input: dict[str, Any]


class MessagesUsage(BaseModel):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal"]


class MessageResponse(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[Annotated[OutThinking | OutText | OutToolUse, Field(discriminator="type")]]
    stop_reason: StopReason | None
    stop_sequence: str | None = None
    usage: MessagesUsage


def stop_reason(finish_reason: str | None) -> StopReason:
    """A chat finish reason as Anthropic's stop reason."""
    if finish_reason == "length":
        return "max_tokens"
    if finish_reason in ("tool_calls", "function_call"):
        return "tool_use"
    if finish_reason == "content_filter":
        return "refusal"
    return "end_turn"


# -- the translation ----------------------------------------------------------------


def _text(blocks: str | list[TextBlock] | list[ResultPart] | None, where: str) -> str:
    if blocks is None:
        return ""
    if isinstance(blocks, str):
        return blocks
    parts = []
    for i, block in enumerate(blocks):
        if not isinstance(block, TextBlock):
            raise InvalidRequestError(
                f"{where}[{i}]: only text blocks can go here; an image in a tool result "
                "cannot be passed to the model.", param=f"{where}[{i}]")
        parts.append(block.text)
    return "\n\n".join(parts)


def _image(block: ImageBlock) -> ImagePart:
    source = block.source
    url = (source.url if isinstance(source, URLSource)
           else f"data:{source.media_type};base64,{source.data}")
    return ImagePart(type="image_url", image_url=ImageURL(url=url))


def _messages(request: MessagesRequest | CountTokensRequest) -> list[ChatMessage]:
    out: list[ChatMessage] = []
    system = _text(request.system, "system") if request.system is not None else ""
    if system:
        out.append(SystemMessage(role="system", content=system))
    for m, message in enumerate(request.messages):
        where = f"messages[{m}].content"
        blocks = ([TextBlock(type="text", text=message.content)]
                  if isinstance(message.content, str) else message.content)
        if message.role == "assistant":
            texts: list[str] = []
            thoughts: list[str] = []
            calls: list[ToolCall] = []
            for i, block in enumerate(blocks):
                if isinstance(block, TextBlock):
                    texts.append(block.text)
                elif isinstance(block, ThinkingBlock):
                    thoughts.append(block.thinking)
                elif isinstance(block, ToolUseBlock):
                    calls.append(ToolCall(id=block.id, type="function", function=FunctionCall(
                        name=block.name, arguments=json.dumps(block.input))))
                elif isinstance(block, RedactedThinkingBlock):
                    continue  # Anthropic's encrypted reasoning: no other model reads it
                else:
                    raise InvalidRequestError(
                        f"{where}[{i}]: an assistant turn holds text, tool_use and thinking "
                        f"blocks, not {block.type}.", param=f"{where}[{i}]")
            out.append(AssistantMessage(role="assistant", content="".join(texts) or None,
                                        tool_calls=calls or None,
                                        reasoning_content="".join(thoughts) or None))
            continue
        parts: list[TextPart | ImagePart] = []
        for i, block in enumerate(blocks):
            if isinstance(block, ToolResultBlock):
                text = _text(block.content, f"{where}[{i}].content")
                if block.is_error:
                    text = f"Error: {text}"
                out.append(ToolMessage(role="tool", tool_call_id=block.tool_use_id,
                                       content=text))
            elif isinstance(block, TextBlock):
                parts.append(TextPart(type="text", text=block.text))
            elif isinstance(block, ImageBlock):
                parts.append(_image(block))
            else:
                raise InvalidRequestError(
                    f"{where}[{i}]: a user turn holds text, image and tool_result blocks, "
                    f"not {block.type}.", param=f"{where}[{i}]")
        if parts:
            only_text = all(isinstance(p, TextPart) for p in parts)
            content: str | list[TextPart | ImagePart] = (
                "".join(p.text for p in parts if isinstance(p, TextPart)) if only_text
                else parts)
            out.append(UserMessage(role="user", content=content))
    return out


def _tools(request: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    if request.tools:
        fields["tools"] = [Tool(type="function", function=FunctionDefinition(
            name=t.name, description=t.description, parameters=t.input_schema))
            for t in request.tools]
    choice = request.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequestError("tool_choice: type 'tool' needs the tool's 'name'.",
                                          param="tool_choice.name")
            fields["tool_choice"] = NamedToolChoice(type="function",
                                                    function=NamedFunction(name=choice.name))
        elif request.tools or choice.type == "none":
            fields["tool_choice"] = {"auto": "auto", "any": "required",
                                     "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use and request.tools:
            fields["parallel_tool_calls"] = False
    return fields


def _effort(request: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    thinking = request.thinking
    if isinstance(thinking, ThinkingEnabled):
        budget = thinking.budget_tokens
        return {"reasoning_effort": "low" if budget < 4096 else
                "medium" if budget < 16384 else "high"}
    return {}


_NOT_PASSED = frozenset({"model", "stream", "finetune", "language", "gender", "accent"})


def to_chat(request: MessagesRequest) -> ChatCompletionRequest:
    """The chat request that carries ``request`` through Kathan's one request path; it
    also carries ``request`` itself (``_anthropic``) for an ``anthropic`` deployment,
    unless voice mode, which rewrites the conversation, is asked for."""
    stops = request.stop_sequences or []
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(
            f"stop_sequences has {len(stops)} items; at most {MAX_STOP_SEQUENCES} are "
            "supported.", param="stop_sequences")
    if any(not s for s in stops):
        raise InvalidRequestError("stop_sequences: each stop sequence needs at least one "
                                  "character.", param="stop_sequences")
    metadata = request.metadata
    chat = ChatCompletionRequest.model_construct(
        **{k: v for k, v in {
            "model": request.model,
            "messages": _messages(request),
            "max_tokens": request.max_tokens,
            "stop": stops or None,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "top_k": request.top_k,
            "user": metadata.user_id if metadata is not None else None,
            "stream": bool(request.stream),
            "stream_options": StreamOptions(include_usage=True) if request.stream else None,
            "finetune": request.finetune,
            "language": request.language,
            "gender": request.gender,
            "accent": request.accent,
            **_tools(request),
            **_effort(request),
        }.items() if v is not None})
    voice = (request.finetune, request.language, request.gender, request.accent)
    if all(v is None for v in voice):
        chat._anthropic = request.model_dump(mode="json", exclude_none=True,
                                             exclude=set(_NOT_PASSED))
    return chat


def count_request(request: CountTokensRequest) -> ChatCompletionRequest:
    """The chat request whose prompt ``count_tokens`` measures."""
    return ChatCompletionRequest.model_construct(
        model=request.model, messages=_messages(request), **_tools(request),
        **_effort(request))

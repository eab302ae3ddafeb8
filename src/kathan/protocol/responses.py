"""OpenAI's Responses API (``/v1/responses``) as wire models, and its translation to the
chat request every backend serves.

A Responses request becomes a ``ChatCompletionRequest`` (``to_chat``): ``instructions``
a system message, the conversation's items (an earlier response's, when
``previous_response_id`` continues it, then ``input``) chat messages: ``message``
items by role, ``function_call`` items an assistant's ``tool_calls``,
``function_call_output`` items tool messages, ``reasoning`` items the
``reasoning_content`` of the assistant message after them; ``max_output_tokens`` ``max_tokens``,
``text.format`` ``response_format``, ``reasoning.effort`` ``reasoning_effort``. It then
takes the one request path (keys, limits, ledger, routing, voice) and the deltas that
come back are rendered as a ``response`` object and its typed events by
``api/openai_responses.py``. What the chat request cannot carry (built-in tools,
``background``, ``conversation``, files) is a 400 that names the field, never dropped.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

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
    JSONSchemaFormat,
    NamedFunction,
    NamedToolChoice,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    ResponseFormatText,
    StreamOptions,
    SystemMessage,
    TextPart,
    Tool,
    ToolCall,
    ToolMessage,
    UserMessage,
)
from kathan.protocol.messages import VoiceExtras

MAX_METADATA = 16  # OpenAI's bounds on metadata: pairs, key and value lengths
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
LOGPROBS = "message.output_text.logprobs"  # the one ``include`` value Kathan serves


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class _Item(_Wire):
    """An input item or part. A field this model does not know is refused, unless it is
    null: the SDK sends a response's output items back as input as it got them, with
    output-only fields set to null, and a null asks for nothing."""

    @model_validator(mode="before")
    @classmethod
    def _drop_null_unknowns(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k in cls.model_fields}
        return data


Status = Literal["in_progress", "completed", "incomplete"]


class InputText(_Item):
    type: Literal["input_text"]
    text: str


class InputImage(_Item):
    type: Literal["input_image"]
    image_url: str | None = Field(None, description="An http(s) URL or a base64 `data:` URL.")
    file_id: str | None = Field(None, description="Not served: Kathan has no Files API.")
    detail: Literal["low", "high", "auto"] | None = None


class InputFile(_Item):
    """A file: refused with a 400 (Kathan has no Files API and reads no documents)."""

    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(_Item):
    """An assistant's text, as a response gave it (sent back as input)."""

    type: Literal["output_text"]
    text: str
    annotations: list[Any] | None = None
    logprobs: list[Any] | None = None


class Refusal(_Item):
    type: Literal["refusal"]
    refusal: str


Part = Annotated[InputText | InputImage | InputFile | OutputText | Refusal,
                 Field(discriminator="type")]


class MessageItem(_Item):
    """A message; ``type`` may be left out (the SDK's easy input message)."""

    type: Literal["message"] | None = None
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[Part]
    id: str | None = None
    status: Status | None = None


class FunctionCallItem(_Item):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str
    id: str | None = None
    status: Status | None = None


OutputPart = Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]


class FunctionCallOutputItem(_Item):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[OutputPart]
    id: str | None = None
    status: Status | None = None


class ReasoningItem(_Item):
    """An earlier turn's reasoning, as a response gave it: its text goes with the
    assistant message after it (``reasoning_content``), which each backend keeps in the
    prompt or drops as its model's format does."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[Any] = Field(default_factory=list)
    content: list[Any] | None = None
    encrypted_content: str | None = None
    status: Status | None = None


class ItemReference(_Item):
    """A reference to a stored item: refused with a 400 (use ``previous_response_id``)."""

    type: Literal["item_reference"]
    id: str


def _item_type(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(
        value, "type", "message")
    return kind if kind is not None else "message"


Item = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_item_type),
]


class FunctionTool(_Wire):
    type: Literal["function"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class BuiltinTool(BaseModel):
    """A built-in tool (``web_search``, ``file_search``, ``code_interpreter``, ``mcp``, ...):
    refused with a 400 that names it; Kathan runs none of them."""

    model_config = ConfigDict(extra="allow")
    type: str


def _tool_type(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "function" if kind == "function" else "builtin"


AnyTool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[BuiltinTool, Tag("builtin")],
    Discriminator(_tool_type),
]


class FunctionChoice(_Wire):
    type: Literal["function"]
    name: str = Field(min_length=1)


class AllowedTool(_Wire):
    type: Literal["function"]
    name: str = Field(min_length=1)


class AllowedToolsChoice(_Wire):
    type: Literal["allowed_tools"]
    mode: Literal["auto", "required"]
    tools: list[AllowedTool] = Field(min_length=1)


class HostedChoice(BaseModel):
    """A choice of a built-in tool: refused with a 400, as the tool is."""

    model_config = ConfigDict(extra="allow")
    type: str


def _choice_type(value: Any) -> str:
    if isinstance(value, str):
        return "mode"
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("function", "allowed_tools") else "hosted"


ToolChoice = Annotated[
    Annotated[Literal["none", "auto", "required"], Tag("mode")]
    | Annotated[FunctionChoice, Tag("function")]
    | Annotated[AllowedToolsChoice, Tag("allowed_tools")]
    | Annotated[HostedChoice, Tag("hosted")],
    Discriminator(_choice_type),
]


class FormatText(_Wire):
    type: Literal["text"]


class FormatJSONObject(_Wire):
    type: Literal["json_object"]


class FormatJSONSchema(_Wire):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


class TextConfig(_Wire):
    format: Annotated[FormatText | FormatJSONObject | FormatJSONSchema,
                      Field(discriminator="type")] | None = None
    verbosity: Literal["low", "medium", "high"] | None = Field(
        None, description="Only `medium` (the model's own length) is served.")


class ReasoningConfig(_Wire):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = Field(
        None, description="`auto` is accepted: Kathan's backends write no summaries.")
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponseStreamOptions(_Wire):
    include_obfuscation: bool | None = None


class ConversationRef(_Wire):
    id: str


class PromptRef(_Wire):
    """A stored prompt template (OpenAI's dashboard prompts): not served."""

    id: str
    version: str | None = None
    variables: dict[str, str] | None = None


class ResponsesRequest(VoiceExtras):
    """OpenAI's Responses request, plus Kathan's voice extras."""

    model: str = Field(min_length=1)
    input: str | list[Item] | None = None
    instructions: str | None = None
    max_output_tokens: Annotated[int, Ge(1), Le(INT64_MAX), *JSON_INTEGER] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_logprobs: Annotated[int, Ge(0), Le(20), *JSON_INTEGER] | None = None
    tools: list[AnyTool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: Annotated[int, Ge(1), Le(INT64_MAX), *JSON_INTEGER] | None = Field(
        None, description="Not served: a 400.")
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = Field(
        None, description="Accepted; prompt caching is automatic (prefix reuse).")
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    stream: bool | None = False
    stream_options: ResponseStreamOptions | None = None
    store: bool | None = None
    previous_response_id: str | None = Field(None, min_length=1)
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    # Not served, each a 400 that names it.
    background: bool | None = None
    conversation: str | ConversationRef | None = None
    prompt: PromptRef | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_bounds(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA:
            raise ValueError(f"metadata holds at most {MAX_METADATA} pairs")
        for key, item in value.items():
            if len(key) > MAX_METADATA_KEY:
                raise ValueError(f"metadata keys are at most {MAX_METADATA_KEY} characters")
            if len(item) > MAX_METADATA_VALUE:
                raise ValueError(
                    f"metadata values are at most {MAX_METADATA_VALUE} characters")
        return value


# -- the answer -------------------------------------------------------------------


class OutTextPart(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[Any] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None


class OutMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: Status
    content: list[OutTextPart]


class OutReasoningText(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class OutReasoning(BaseModel):
    """The model's reasoning before its answer, as its text (Kathan writes no summaries)."""

    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[Any] = Field(default_factory=list)
    content: list[OutReasoningText]
    status: Status


class OutFunctionCall(BaseModel):
    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: Status


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class ResponseError(BaseModel):
    code: str
    message: str


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseObject(BaseModel):
    """A response, as ``POST``, ``GET`` and the stream's events give it."""

    id: str
    object: Literal["response"] = "response"
    created_at: float
    completed_at: float | None = None
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    model: str
    output: list[Annotated[OutReasoning | OutMessage | OutFunctionCall,
                           Field(discriminator="type")]]
    usage: ResponseUsage | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] = Field(default_factory=dict)
    store: bool = True
    temperature: float | None = None
    top_p: float | None = None
    top_logprobs: int | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: Any = "auto"
    tools: list[dict[str, Any]] = Field(default_factory=list)
    truncation: Literal["auto", "disabled"] = "disabled"
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = "default"
    background: bool = False


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: Literal[True] = True


# -- the translation ----------------------------------------------------------------


def refuse_unserved(request: ResponsesRequest) -> None:
    """A 400 for each parameter Kathan cannot honour, naming it."""
    def no(param: str, why: str) -> InvalidRequestError:
        return InvalidRequestError(f"{param}: {why}", param=param,
                                   code="unsupported_parameter")
    if request.background:
        raise no("background", "background responses are not served; send the request "
                 "with stream: true to follow a long response.")
    if request.conversation is not None:
        raise no("conversation", "conversations are not served; continue a response with "
                 "previous_response_id.")
    if request.prompt is not None:
        raise no("prompt", "stored prompt templates are not served; send the text as "
                 "instructions and input.")
    if request.max_tool_calls is not None:
        raise no("max_tool_calls", "a bound on the number of tool calls is not served.")
    if request.truncation == "auto":
        raise no("truncation", "'auto' (dropping the start of a conversation that does "
                 "not fit) is not served; a conversation too long for the model is a 400 "
                 "context_length_exceeded.")
    if request.service_tier in ("flex", "scale", "priority"):
        raise no("service_tier", f"'{request.service_tier}' is not served; every request "
                 "is served at the default tier.")
    if request.stream_options is not None and request.stream_options.include_obfuscation:
        raise no("stream_options.include_obfuscation", "obfuscation padding is not sent.")
    for i, value in enumerate(request.include or ()):
        if value != LOGPROBS:
            raise no(f"include[{i}]", f"'{value}' is not served; only '{LOGPROBS}' is.")
    if request.top_logprobs and LOGPROBS not in (request.include or ()):
        raise no("top_logprobs", f"needs include: ['{LOGPROBS}'].")
    text = request.text
    if text is not None and text.verbosity not in (None, "medium"):
        raise no("text.verbosity", f"'{text.verbosity}' is not served; replies are as long "
                 "as the model makes them (medium).")
    reasoning = request.reasoning
    if reasoning is not None:
        for name in ("summary", "generate_summary"):
            value = getattr(reasoning, name)
            if value not in (None, "auto"):
                raise no(f"reasoning.{name}", f"'{value}' is not served: Kathan's backends "
                         "write no reasoning summaries ('auto' is accepted).")
    for i, tool in enumerate(request.tools or ()):
        if isinstance(tool, BuiltinTool):
            raise no(f"tools[{i}].type", f"the built-in tool '{tool.type}' is not served; "
                     "Kathan serves function tools (type: function).")
    if isinstance(request.tool_choice, HostedChoice):
        raise no("tool_choice.type", f"'{request.tool_choice.type}' chooses a built-in tool, "
                 "which is not served.")


def _text_of(parts: str | list[Any], where: str, allowed: tuple[type, ...]) -> str:
    if isinstance(parts, str):
        return parts
    texts = []
    for i, part in enumerate(parts):
        if not isinstance(part, allowed):
            raise InvalidRequestError(
                f"{where}[{i}]: a {part.type} part cannot go here; this message holds text.",
                param=f"{where}[{i}]")
        texts.append(getattr(part, "refusal" if isinstance(part, Refusal) else "text"))
    return "".join(texts)


def _user_parts(parts: list[Any], where: str) -> str | list[TextPart | ImagePart]:
    out: list[TextPart | ImagePart] = []
    for i, part in enumerate(parts):
        if isinstance(part, InputText | OutputText):
            out.append(TextPart(type="text", text=part.text))
        elif isinstance(part, InputImage):
            if part.image_url is None:
                raise InvalidRequestError(
                    f"{where}[{i}]: an image by file_id cannot be served (Kathan has no Files "
                    "API); send image_url (an http(s) or data: URL).",
                    param=f"{where}[{i}].file_id")
            out.append(ImagePart(type="image_url", image_url=ImageURL(
                url=part.image_url, detail=part.detail)))
        elif isinstance(part, InputFile):
            raise InvalidRequestError(
                f"{where}[{i}]: input_file is not served; Kathan reads no documents. Send "
                "the text as input_text.", param=f"{where}[{i}]")
        else:
            raise InvalidRequestError(f"{where}[{i}]: a {part.type} part cannot go in a user "
                                      "message.", param=f"{where}[{i}]")
    if all(isinstance(p, TextPart) for p in out):
        return "".join(p.text for p in out if isinstance(p, TextPart))
    return out


def messages_of(items: list[Any], where: str = "input") -> list[ChatMessage]:
    """The chat messages of a conversation's items (``where`` names them in errors)."""
    out: list[ChatMessage] = []
    reasoning: list[str] = []  # for the assistant message that follows it
    for n, item in enumerate(items):
        at = f"{where}[{n}]"
        if not isinstance(item, ReasoningItem | FunctionCallItem) and not (
                isinstance(item, MessageItem) and item.role == "assistant"):
            reasoning = []  # reasoning before anything but the model's turn goes nowhere
        if isinstance(item, MessageItem):
            content = item.content
            if item.role in ("system", "developer"):
                out.append(SystemMessage(role="system", content=_text_of(
                    content, f"{at}.content", (InputText,))))
            elif item.role == "user":
                out.append(UserMessage(role="user", content=content if isinstance(
                    content, str) else _user_parts(content, f"{at}.content")))
            else:
                out.append(AssistantMessage(role="assistant", content=_text_of(
                    content, f"{at}.content", (OutputText, InputText, Refusal)),
                    reasoning_content="".join(reasoning) or None))
                reasoning = []
        elif isinstance(item, FunctionCallItem):
            call = ToolCall(id=item.call_id, type="function",
                            function=FunctionCall(name=item.name, arguments=item.arguments))
            last = out[-1] if out else None
            if isinstance(last, AssistantMessage) and not reasoning:
                last.tool_calls = [*(last.tool_calls or []), call]
            else:
                out.append(AssistantMessage(role="assistant", content=None,
                                            tool_calls=[call],
                                            reasoning_content="".join(reasoning) or None))
                reasoning = []
        elif isinstance(item, FunctionCallOutputItem):
            output = item.output if isinstance(item.output, str) else _text_of(
                item.output, f"{at}.output", (InputText,))
            out.append(ToolMessage(role="tool", tool_call_id=item.call_id, content=output))
        elif isinstance(item, ReasoningItem):
            reasoning += _reasoning_text(item)
        else:
            raise InvalidRequestError(
                f"{at}: item_reference is not served; continue a stored response with "
                "previous_response_id, or send the item itself.", param=at)
    return out


def _reasoning_text(item: ReasoningItem) -> list[str]:
    """A reasoning item's text (its ``reasoning_text`` parts; a summary is not the
    reasoning, and encrypted content is another server's)."""
    return [str(part.get("text") or "") for part in item.content or ()
            if isinstance(part, dict) and part.get("type") == "reasoning_text"]


def items_of(request: ResponsesRequest) -> list[Any]:
    """The request's ``input`` as items (a string is one user message)."""
    if request.input is None:
        return []
    if isinstance(request.input, str):
        return [MessageItem(role="user", content=request.input)]
    return list(request.input)


def _tools(request: ResponsesRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    tools = [t for t in request.tools or () if isinstance(t, FunctionTool)]
    choice = request.tool_choice
    if isinstance(choice, AllowedToolsChoice):
        names = {t.name for t in tools}
        for i, allowed in enumerate(choice.tools):
            if allowed.name not in names:
                raise InvalidRequestError(
                    f"tool_choice.tools[{i}]: '{allowed.name}' is not one of the request's "
                    "tools.", param=f"tool_choice.tools[{i}].name")
        keep = {a.name for a in choice.tools}
        tools = [t for t in tools if t.name in keep]
        fields["tool_choice"] = choice.mode
    elif isinstance(choice, FunctionChoice):
        fields["tool_choice"] = NamedToolChoice(type="function",
                                                function=NamedFunction(name=choice.name))
    elif isinstance(choice, str) and (tools or choice == "none"):
        fields["tool_choice"] = choice
    if tools:
        fields["tools"] = [Tool(type="function", function=FunctionDefinition(
            name=t.name, description=t.description, parameters=t.parameters, strict=t.strict))
            for t in tools]
        if request.parallel_tool_calls is not None:
            fields["parallel_tool_calls"] = request.parallel_tool_calls
    return fields


def _format(request: ResponsesRequest) -> dict[str, Any]:
    spec = request.text.format if request.text is not None else None
    if spec is None or isinstance(spec, FormatText):
        return {} if spec is None else {"response_format": ResponseFormatText(type="text")}
    if isinstance(spec, FormatJSONObject):
        return {"response_format": ResponseFormatJSONObject(type="json_object")}
    return {"response_format": ResponseFormatJSONSchema(
        type="json_schema", json_schema=JSONSchemaFormat(
            name=spec.name, description=spec.description, schema_=spec.schema_,
            strict=spec.strict))}


def to_chat(request: ResponsesRequest, history: list[Any]) -> ChatCompletionRequest:
    """The chat request that carries ``request`` through Kathan's one request path;
    ``history``: the items of the response it continues (``previous_response_id``), its
    output included. That response's instructions are not carried over, as OpenAI's
    are not."""
    refuse_unserved(request)
    messages: list[ChatMessage] = []
    if request.instructions:
        messages.append(SystemMessage(role="system", content=request.instructions))
    messages += messages_of(history, "previous_response_id")
    messages += messages_of(items_of(request))
    if not any(isinstance(m, UserMessage | ToolMessage | AssistantMessage) for m in messages):
        raise InvalidRequestError("input: the conversation needs at least one message to "
                                  "answer.", param="input")
    logprobs = LOGPROBS in (request.include or ())
    effort = request.reasoning.effort if request.reasoning is not None else None
    return ChatCompletionRequest.model_construct(
        **{k: v for k, v in {
            "model": request.model,
            "messages": messages,
            "max_tokens": request.max_output_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "user": request.user or request.safety_identifier,
            "logprobs": True if logprobs else None,
            "top_logprobs": request.top_logprobs if logprobs else None,
            "reasoning_effort": effort,
            "stream": bool(request.stream),
            "stream_options": StreamOptions(include_usage=True) if request.stream else None,
            "finetune": request.finetune,
            "language": request.language,
            "gender": request.gender,
            "accent": request.accent,
            **_tools(request),
            **_format(request),
        }.items() if v is not None})


def output_items(output: list[dict[str, Any]]) -> list[Any]:
    """A stored response's output as input items, for the response that continues it."""
    items: list[Any] = []
    for raw in output:
        if raw.get("type") == "message":
            items.append(MessageItem(role="assistant", content=[
                OutputText(type="output_text", text=part.get("text", ""))
                for part in raw.get("content", ())]))
        elif raw.get("type") == "reasoning":
            items.append(ReasoningItem(type="reasoning", id=raw.get("id"),
                                       content=raw.get("content") or []))
        elif raw.get("type") == "function_call":
            items.append(FunctionCallItem(type="function_call", call_id=raw["call_id"],
                                          name=raw["name"], arguments=raw["arguments"]))
    return items


def dump_items(items: list[Any]) -> list[dict[str, Any]]:
    """Items as JSON values, for the store."""
    return [item.model_dump(mode="json", exclude_none=True, by_alias=True) for item in items]


def load_items(values: list[dict[str, Any]]) -> list[Any]:
    """Items the store gave back."""
    return [_ITEM.validate_python(value) for value in values]


_ITEM: TypeAdapter[Any] = TypeAdapter(Item)

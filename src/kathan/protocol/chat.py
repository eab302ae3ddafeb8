"""Chat completion requests, responses and stream chunks.

The request accepts the union of the seeds' fields and OpenAI's: sampling
parameters, tools, response formats, the voice extras (``finetune``,
``language``, ``gender``, ``accent``) and llama.cpp's ``top_k``, ``min_p`` and
``repetition_penalty``. Unknown top-level fields are kept as provider extras
for upstreams that take them; a backend that cannot honour one answers 400,
so nothing a client sends is dropped silently.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, TypeVar

from annotated_types import Ge, Le
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    Strict,
    field_validator,
    model_serializer,
)
from pydantic_core import PydanticCustomError, PydanticUndefined, to_json

from kathan.voice.profile import accents, check_accent, check_language, languages


class _Wire(BaseModel):
    """A request's parts: unknown fields refused, and types as JSON Schema (the OpenAPI
    document) reads them: ``"yes"`` is no boolean, ``false`` and ``"1"`` no number,
    ``10.5`` no integer (``Integer``: ``10.0`` is one); any JSON number is a number."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _integer(value: Any) -> Any:
    # JSON Schema's integer (the OpenAPI document's word) takes 10.0, not true or "10".
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PydanticCustomError("int_type", "Input should be a valid integer")
    return value


# A JSON integer: an integral number, 10.0 included; 10.5 is refused (int_from_float).
# Each field bounds it (api/body.py reads an integer of any size up to 4300 digits); the
# bounds come before the validator, so that they reach the schema as minimum and maximum.
JSON_INTEGER = (Strict(False), BeforeValidator(_integer))
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class TextPart(_Wire):
    type: Literal["text"]
    text: str


class ImageURL(_Wire):
    url: str = Field(description="An http(s) URL or a base64 `data:` URL.")
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(_Wire):
    type: Literal["image_url"]
    image_url: ImageURL


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class FunctionCall(_Wire):
    name: str
    arguments: str = Field(description="The arguments as a JSON string.")


class ToolCall(_Wire):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(_Wire):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = Field(None, description="An optional name for the participant.")


class UserMessage(_Wire):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = Field(None, description="An optional name for the participant.")


class AssistantMessage(_Wire):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(None, description="An optional name for the participant.")
    tool_calls: list[ToolCall] | None = Field(None, description="Calls made by the assistant.")
    function_call: FunctionCall | None = Field(None, description="Legacy single function call.")
    refusal: str | None = Field(None, description="An assistant refusal, echoed back.")
    reasoning_content: str | None = Field(
        None, description="The reasoning of an earlier reply, echoed back: each backend "
        "keeps it or drops it from the prompt as its model's format does.")


class ToolMessage(_Wire):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str = Field(description="The call this message answers.")


class FunctionMessage(_Wire):
    role: Literal["function"]
    content: str | None
    name: str = Field(description="The function whose result this is.")


ChatMessage = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | FunctionMessage,
    Field(discriminator="role"),
]

StopString = Annotated[str, Field(min_length=1)]
TokenId = Annotated[str, Field(pattern=r"^[0-9]{1,9}$")]
Bias = Annotated[float, Field(ge=-100, le=100)]


class FunctionDefinition(_Wire):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(None, description="A JSON Schema object.")
    strict: bool | None = None


class Tool(_Wire):
    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(_Wire):
    name: str


class NamedToolChoice(_Wire):
    type: Literal["function"]
    function: NamedFunction


class ResponseFormatText(_Wire):
    type: Literal["text"]


class ResponseFormatJSONObject(_Wire):
    type: Literal["json_object"]


class JSONSchemaFormat(_Wire):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ResponseFormatJSONSchema(_Wire):
    type: Literal["json_schema"]
    json_schema: JSONSchemaFormat


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema,
    Field(discriminator="type"),
]


class StreamOptions(_Wire):
    include_usage: bool | None = Field(
        None, description="Send a final chunk with usage and empty `choices`."
    )
    include_obfuscation: bool | None = None


class ChatCompletionRequest(_Wire):
    """A chat request. Top-level fields beyond these are kept (``model_extra``): they
    pass through to OpenAI-compatible upstreams as provider extras, and every other
    backend refuses them with a 400 that names them."""

    model_config = ConfigDict(extra="allow")
    # A legacy completion (``/v1/completions``): its ``CompletionRequest`` as the client
    # sent it, for the backends that serve one (``serves_raw_prompts``): the local
    # engine continues its prompt without the chat template, an OpenAI-compatible
    # upstream gets it as sent. Never on the wire; ``messages`` then holds the prompt's
    # text for what reads it (the voice, the logs).
    _completion: Any = PrivateAttr(None)
    # An Anthropic Messages request (``/v1/messages``) as the client sent it (without its
    # model, stream and voice fields): an ``anthropic`` deployment is sent this body,
    # nothing lost (cache_control, thinking with its budget and earlier turns' thinking
    # blocks, top_k, metadata), rather than the translation of ``messages``.
    _anthropic: dict[str, Any] | None = PrivateAttr(None)

    messages: list[ChatMessage] = Field(min_length=1)
    model: str = Field(min_length=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: Annotated[int, Ge(1), Le(INT64_MAX), *JSON_INTEGER] | None = None
    max_completion_tokens: Annotated[int, Ge(1), Le(INT64_MAX), *JSON_INTEGER] | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = Field(
        None, description="Up to 4 stop sequences."
    )
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    # Every key is a token id: the schema says so (no other property), as the model does.
    logit_bias: Annotated[
        dict[TokenId, Bias], Field(json_schema_extra={"additionalProperties": False})
    ] | None = Field(
        None, description="Token id (as a string) to a bias from -100 to 100."
    )
    logprobs: bool | None = None
    top_logprobs: Annotated[int, Ge(0), Le(20), *JSON_INTEGER] | None = None
    n: Annotated[int, Ge(1), Le(128), *JSON_INTEGER] | None = None
    seed: Annotated[int, Ge(INT64_MIN), Le(INT64_MAX), *JSON_INTEGER] | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = Field(None, description="Legacy form of tools.")
    function_call: Literal["none", "auto"] | NamedFunction | None = Field(
        None, description="Legacy form of tool_choice."
    )
    response_format: ResponseFormat | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    # The voice-agent extras of the first seed (supported values: voice/data/voices.yaml).
    finetune: bool | None = Field(
        None, description="Voice-agent mode: speakable replies, from the model's voice "
        "variant when it has one.")
    # The schema lists the supported values; the validators say the same in words.
    language: str | None = Field(
        None, description="Reply language for voice mode: en, hi, es or fr. Turns voice "
        "mode on, as does gender or accent.",
        json_schema_extra={"anyOf": [{"enum": list(languages())}, {"type": "null"}]})
    gender: Literal["male", "female"] | None = Field(
        None, description="The voice's gender: the agent refers to itself accordingly.")
    accent: str | None = Field(
        None, description="Regional variety: american, british, indian (en), indian (hi), "
        "mexican (es), french (fr). An accent the language lacks is a 400.",
        json_schema_extra={"anyOf": [{"enum": list(accents())}, {"type": "null"}]})
    # llama.cpp's sampling extras.
    top_k: Annotated[int, Ge(0), Le(INT64_MAX), *JSON_INTEGER] | None = None
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=10)

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        return None if value is None else check_language(value)

    @field_validator("accent")
    @classmethod
    def _known_accent(cls, value: str | None) -> str | None:
        # Whether the language has it is a rule between two fields, which JSON Schema
        # cannot state: the service answers it with a 400 (ChatService.open).
        return None if value is None else check_accent(value)

    @property
    def stop_list(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class ResponseMessage(BaseModel):
    """``content`` is null when the reply only called tools; ``reasoning_content``, the
    model's reasoning, is there only when it reasoned."""

    role: Literal["assistant"] = "assistant"
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: FunctionCall | None = Field(
        None, description="The call, for requests that used the legacy `functions`."
    )

    @model_serializer(mode="wrap")
    def _omit_absent_calls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for key in ("reasoning_content", "tool_calls", "function_call"):
            if data.get(key) is None:
                data.pop(key, None)
        return data


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None
    refusal: list[TokenLogprob] | None = None


class Choice(BaseModel):
    index: int
    message: ResponseMessage
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


class _Sparse(BaseModel):
    """Only the fields that are set are sent: ``{"content": "Hel"}``."""

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}


class FunctionCallDelta(_Sparse):
    name: str | None = None
    arguments: str | None = None


class ToolCallChunk(_Sparse):
    """A piece of a tool call: ``id``, ``type`` and ``function.name`` first, then arguments."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class ChoiceDelta(_Sparse):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallChunk] | None = None
    function_call: FunctionCallDelta | None = Field(
        None, description="Legacy form of tool_calls, for requests that used `functions`."
    )


class ChunkChoice(BaseModel):
    index: int
    delta: ChoiceDelta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str | None = None


_M = TypeVar("_M", bound=BaseModel)


@functools.cache
def _blank(cls: type[BaseModel]) -> tuple[dict[str, Any], tuple[tuple[str, Any], ...], bool]:
    """The defaults of ``cls``'s fields in the model's order, its default factories,
    and whether it keeps extra fields."""
    defaults: dict[str, Any] = {}
    factories = []
    for name, f in cls.model_fields.items():
        if f.default_factory is not None:
            defaults[name] = None  # holds the field's place in the order
            factories.append((name, f.default_factory))
        else:
            defaults[name] = None if f.default is PydanticUndefined else f.default
    return defaults, tuple(factories), cls.model_config.get("extra") == "allow"


def construct(cls: type[_M], /, **values: Any) -> _M:
    """What ``cls.model_construct(**values)`` builds (trusted values, no validation), in
    a fraction of its time: streaming builds three models per token. Fields left out
    take their defaults.

    >>> construct(ChoiceDelta, content="Hel").model_dump_json()
    '{"content":"Hel"}'
    """
    defaults, factories, extra = _blank(cls)
    fields = defaults.copy()
    fields.update(values)
    for name, factory in factories:
        if name not in values:
            fields[name] = factory()
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", fields)
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", {} if extra else None)
    private = cls.__private_attributes__
    object.__setattr__(model, "__pydantic_private__", {
        name: attr.get_default() for name, attr in private.items()} if private else None)
    return model


class StreamChunks:
    """Builds the ``chat.completion.chunk`` objects of one stream (its id, time and model).

    Text alone, most of a stream, is ``text(index, content)``: its JSON, without
    building three models per token. Each choice index gets a template once, a
    real chunk serialized with a marker for the text and split around it, so the
    bytes are the model's own whatever its fields and their order.

    >>> chunks = StreamChunks(id="chatcmpl-1", created=1, model="m")
    >>> chunks.text(0, "Hel") == chunks.text_chunk(0, "Hel").model_dump_json().encode()
    True
    """

    __slots__ = ("_created", "_id", "_model", "_templates")

    _MARK = "\x00kathan-text\x00"

    def __init__(self, *, id: str, created: int, model: str) -> None:
        self._id = id
        self._created = created
        self._model = model
        self._templates: dict[int, tuple[bytes, bytes]] = {}

    def chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> ChatCompletionChunk:
        return construct(
            ChatCompletionChunk, id=self._id, object="chat.completion.chunk",
            created=self._created, model=self._model, choices=choices, usage=usage,
            system_fingerprint=None,
        )

    @staticmethod
    def choice(
        index: int,
        delta: ChoiceDelta,
        finish: str | None = None,
        logprobs: ChoiceLogprobs | None = None,
    ) -> ChunkChoice:
        return construct(ChunkChoice, index=index, delta=delta, finish_reason=finish,
                         logprobs=logprobs)

    def text_chunk(self, index: int, content: str) -> ChatCompletionChunk:
        """The chunk that ``text`` gives the JSON of."""
        return self.chunk([self.choice(index, construct(ChoiceDelta, role=None,
                                                        content=content))])

    def text(self, index: int, content: str) -> bytes:
        template = self._templates.get(index)
        if template is None:
            template = self._templates[index] = self._template(index)
        return template[0] + to_json(content) + template[1]

    def _template(self, index: int) -> tuple[bytes, bytes]:
        chunk = self.text_chunk(index, self._MARK)
        marker = to_json(self._MARK)
        before, found, after = chunk.__pydantic_serializer__.to_json(chunk).partition(marker)
        if not found or marker in after:
            raise ValueError("the text marker must occur once in a chunk's JSON")
        return before, after

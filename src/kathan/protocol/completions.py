"""OpenAI's legacy completions (``POST /v1/completions``): the request, its translation to
the chat request that carries it through Kathan's one request path, what the local
engine cannot honour of it, and the ``text_completion`` answer and chunks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from annotated_types import Ge, Le
from pydantic import BaseModel, ConfigDict, Field

from kathan.errors import InvalidRequestError
from kathan.protocol.chat import (
    INT64_MAX,
    INT64_MIN,
    JSON_INTEGER,
    ChatCompletionRequest,
    StopString,
    StreamOptions,
    Usage,
    UserMessage,
)

TokenId = Annotated[int, Ge(0), Le(2**31 - 1), *JSON_INTEGER]


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[TokenId] | list[list[TokenId]] = Field(
        description="Text, or token ids, to continue as it is (no chat template).")
    max_tokens: Annotated[int, Ge(1), Le(INT64_MAX), *JSON_INTEGER] | None = Field(
        None, description="16 unless given, as OpenAI's (within the model's own limits).")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    n: Annotated[int, Ge(1), Le(128), *JSON_INTEGER] | None = None
    stop: StopString | Annotated[list[StopString], Field(max_length=4)] | None = None
    seed: Annotated[int, Ge(INT64_MIN), Le(INT64_MAX), *JSON_INTEGER] | None = None
    logprobs: Annotated[int, Ge(0), Le(5), *JSON_INTEGER] | None = Field(
        None, description="How many alternatives to give per token (legacy shape).")
    echo: bool | None = False
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    best_of: Annotated[int, Ge(1), Le(20), *JSON_INTEGER] | None = None
    suffix: str | None = None
    user: str | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    top_k: Annotated[int, Ge(0), Le(INT64_MAX), *JSON_INTEGER] | None = None
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=10)


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: CompletionLogprobs | None = None
    finish_reason: Literal["stop", "length", "content_filter"] | None = None


class TextCompletion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


def prompt_of(request: CompletionRequest) -> str | list[int]:
    """The one prompt to continue: a string, or token ids."""
    prompt = request.prompt
    if isinstance(prompt, str):
        return prompt
    if not prompt:
        raise InvalidRequestError("prompt is an empty list.", param="prompt")
    if len(prompt) == 1 and isinstance(prompt[0], str | list):
        only = prompt[0]
        return only if isinstance(only, str) else list(only)
    if all(isinstance(p, int) for p in prompt):
        return [p for p in prompt if isinstance(p, int)]
    raise InvalidRequestError(
        f"prompt holds {len(prompt)} prompts; this server continues one prompt per "
        "request: send each as its own request.", param="prompt")


def local_prompt(request: CompletionRequest) -> str | list[int]:
    """The prompt the local engine continues; a 400 naming what it cannot honour (an
    OpenAI-compatible upstream gets all of these as sent)."""
    if request.suffix:
        raise InvalidRequestError(
            "suffix (insertion) is not supported: the models served here do not fill in "
            "the middle.", param="suffix")
    if request.best_of is not None and request.best_of != 1:
        raise InvalidRequestError(
            "best_of other than 1 is not supported: use 'n' to get several completions.",
            param="best_of")
    if request.echo and request.logprobs is not None:
        raise InvalidRequestError(
            "echo with logprobs is not supported: the prompt's own tokens get no "
            "log probabilities here.", param="echo")
    raw = prompt_of(request)
    if request.echo and not isinstance(raw, str):
        raise InvalidRequestError("echo needs a text prompt: a prompt of token ids is not "
                                  "echoed.", param="echo")
    return raw


def _shown(prompt: str | list[str] | list[int] | list[list[int]]) -> str:
    """The prompt as the chat request's one message shows it (to the voice, the logs)."""
    if isinstance(prompt, str):
        return prompt
    if prompt and all(isinstance(p, int) for p in prompt):
        return f"<{len(prompt)} prompt tokens>"
    only = prompt[0] if len(prompt) == 1 else None
    if isinstance(only, str):
        return only
    if isinstance(only, list):
        return f"<{len(only)} prompt tokens>"
    return f"<{len(prompt)} prompts>"


def to_chat(request: CompletionRequest) -> ChatCompletionRequest:
    """The chat request that carries ``request`` (``_completion``) through the one
    request path: its fields that the path reads (limits, the key's cap, the ledger)
    as chat fields, the prompt as its one message's text. What a backend cannot
    honour is its 400 (the local engine's: ``local_prompt``)."""
    fields: dict[str, Any] = {
        "model": request.model,
        "messages": [UserMessage(role="user", content=_shown(request.prompt))],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "n": request.n,
        "stop": request.stop,
        "seed": request.seed,
        "logprobs": True if request.logprobs is not None else None,
        "top_logprobs": request.logprobs,
        "logit_bias": request.logit_bias,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "user": request.user,
        "stream": bool(request.stream),
        "stream_options": request.stream_options,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "repetition_penalty": request.repetition_penalty,
    }
    chat = ChatCompletionRequest.model_construct(
        **{k: v for k, v in fields.items() if v is not None})
    chat._completion = request
    return chat

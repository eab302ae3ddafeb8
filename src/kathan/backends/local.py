"""The ``local`` backend: chat requests served by the embedded llama.cpp engine."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from typing import Any

from kathan.backends.base import Delta, LoadStats, TokenUsage
from kathan.engine.engine import LocalEngine
from kathan.engine.grammar import GrammarError, json_object_grammar, json_schema_grammar
from kathan.engine.sampling import SamplingParams, grammar_parses
from kathan.engine.template import TemplateRenderError
from kathan.engine.types import (
    EngineOverloaded,
    GenerationEvent,
    GenerationRequest,
    RequestTooLarge,
)
from kathan.engine.types import TokenLogprob as EngineLogprob
from kathan.errors import (
    ContextLengthExceededError,
    EngineError,
    InvalidRequestError,
    KathanError,
    ModelNotReadyError,
    ServiceUnavailableError,
    UnsupportedParameterError,
)
from kathan.protocol.chat import (
    AssistantMessage,
    ChatCompletionRequest,
    ChatMessage,
    TextPart,
    TokenLogprob,
    ToolMessage,
    TopLogprob,
)

# Roles the chat template does not know by these names.
_ROLE_ALIASES = {"developer": "system"}


def _unsupported(request: ChatCompletionRequest) -> tuple[str, str] | None:
    """The first field this backend cannot honour yet, with the reason."""
    checks: list[tuple[bool, str, str]] = [
        (bool(request.tools), "tools", "tool calling"),
        (request.tool_choice is not None, "tool_choice", "tool calling"),
        (request.parallel_tool_calls is not None, "parallel_tool_calls", "tool calling"),
        (bool(request.functions), "functions", "function calling"),
        (request.function_call is not None, "function_call", "function calling"),
        (bool(request.finetune), "finetune", "voice-agent mode"),
        (request.language is not None, "language", "voice-agent mode"),
        (request.gender is not None, "gender", "voice-agent mode"),
        (request.accent is not None, "accent", "voice-agent mode"),
        (
            request.reasoning_effort is not None,
            "reasoning_effort",
            "reasoning effort (this model does not reason)",
        ),
    ]
    for i, message in enumerate(request.messages):
        if isinstance(message, AssistantMessage) and (message.tool_calls or message.function_call):
            field = "tool_calls" if message.tool_calls else "function_call"
            checks.append((True, f"messages[{i}].{field}", "tool-call history"))
        if isinstance(message.content, list) and any(
            part.type == "image_url" for part in message.content
        ):
            checks.append((True, f"messages[{i}].content", "image input (this model has no vision)"))
    for failed, field, what in checks:
        if failed:
            return field, what
    return None


def _message_dict(message: ChatMessage) -> dict[str, Any]:
    content = message.content
    if isinstance(content, list):
        content = "".join(part.text for part in content if isinstance(part, TextPart))
    out: dict[str, Any] = {
        "role": _ROLE_ALIASES.get(message.role, message.role),
        "content": content or "",
    }
    name = getattr(message, "name", None)
    if name is not None:
        out["name"] = name
    if isinstance(message, ToolMessage):
        out["tool_call_id"] = message.tool_call_id
    return out


def sampling_params(request: ChatCompletionRequest) -> SamplingParams:
    return SamplingParams(
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p,
        top_k=request.top_k or 0,
        min_p=request.min_p or 0.0,
        presence_penalty=request.presence_penalty or 0.0,
        frequency_penalty=request.frequency_penalty or 0.0,
        repetition_penalty=request.repetition_penalty or 1.0,
        logit_bias={int(k): v for k, v in (request.logit_bias or {}).items()},
        seed=request.seed,
    )


class LocalBackend:
    """Answers chat requests with a ``LocalEngine``."""

    def __init__(self, engine: LocalEngine, *, retry_after: int) -> None:
        self.engine = engine
        self._retry_after = retry_after

    @property
    def ready(self) -> bool:
        return self.engine.ready

    def build(self, request: ChatCompletionRequest) -> GenerationRequest:
        """Validate and tokenize; raise ``KathanError`` for what cannot be served."""
        if not self.engine.ready:
            raise ModelNotReadyError(
                "The model is still loading; try again shortly.", retry_after=self._retry_after
            )
        problem = _unsupported(request)
        if problem is not None:
            field, what = problem
            raise UnsupportedParameterError(
                f"'{field}' is not supported by model '{request.model}': {what} is not "
                "available on the local engine yet.",
                param=field,
            )
        n_vocab = self.engine.model.info.n_vocab
        for token in request.logit_bias or {}:
            if int(token) >= n_vocab:
                raise InvalidRequestError(
                    f"logit_bias names token {token}, but the vocabulary has {n_vocab} tokens.",
                    param="logit_bias",
                )
        template = self.engine.template
        assert template is not None
        try:
            text = template.render([_message_dict(m) for m in request.messages])
        except TemplateRenderError as exc:
            raise InvalidRequestError(str(exc), param="messages") from exc
        prompt = self.engine.tokenize_prompt(text)
        n_ctx = self.engine.n_ctx
        requested = request.max_completion_tokens or request.max_tokens
        if len(prompt) + (requested or 1) > n_ctx:
            asked = f" plus {requested} requested completion tokens" if requested else ""
            raise ContextLengthExceededError(
                f"This model's context is {n_ctx} tokens, but the prompt has {len(prompt)} "
                f"tokens{asked} ({len(prompt) + (requested or 1)} in all).",
                param="max_tokens" if requested else "messages",
            )
        if request.top_logprobs is not None and not request.logprobs:
            raise InvalidRequestError(
                "'top_logprobs' needs 'logprobs': true.", param="top_logprobs"
            )
        n = request.n or 1
        slots = self.engine.config.n_slots
        if n > slots:
            raise InvalidRequestError(
                f"'n' is {n}, but this model runs at most {slots} sequences at once.", param="n"
            )
        max_tokens = requested or (n_ctx - len(prompt))
        grammar = self._grammar(request)
        return GenerationRequest(
            prompt=prompt,
            sampling=replace(sampling_params(request), grammar=grammar),
            max_tokens=max_tokens,
            stop=request.stop_list,
            n=n,
            logprobs=(request.top_logprobs or 0) if request.logprobs else None,
        )

    def _grammar(self, request: ChatCompletionRequest) -> str | None:
        """The grammar that enforces ``response_format``, or None for plain text."""
        fmt = request.response_format
        if fmt is None or fmt.type == "text":
            return None
        try:
            if fmt.type == "json_schema" and fmt.json_schema.schema_ is not None:
                grammar = json_schema_grammar(fmt.json_schema.schema_)
            else:
                grammar = json_object_grammar()
        except GrammarError as exc:
            raise InvalidRequestError(
                f"response_format: {exc}.", param="response_format", code="invalid_json_schema"
            ) from exc
        if not grammar_parses(self.engine.model, grammar):
            raise InvalidRequestError(
                "response_format: the schema produced a grammar llama.cpp cannot parse.",
                param="response_format",
                code="invalid_json_schema",
            )
        return grammar

    def stats(self) -> LoadStats:
        s = self.engine.stats()
        return LoadStats(s.queued, s.running, s.kv_cells_used, s.n_ctx, s.n_slots)

    async def open(self, request: ChatCompletionRequest) -> AsyncIterator[Delta]:
        events = self.engine.generate(self.build(request))
        try:
            # Wait for admission and the first token, so that overload and queue
            # timeouts are still answered with a status code, not mid-stream.
            first = await anext(events)
        except EngineOverloaded as exc:
            await events.aclose()
            raise ServiceUnavailableError(
                f"The local engine is at capacity: {exc}. Retry shortly.",
                retry_after=self._retry_after,
                code="engine_overloaded",
            ) from exc
        except RequestTooLarge as exc:
            await events.aclose()
            raise ContextLengthExceededError(
                f"The request does not fit: {exc}. Lower 'n' or 'max_tokens'.", param="n"
            ) from exc
        except StopAsyncIteration:  # pragma: no cover - an engine always sends a first event
            raise EngineError("The local engine ended the request without output.") from None
        except Exception as exc:
            raise EngineError("The local engine failed before the first token.") from exc
        except BaseException:
            # Cancelled while queued (the client left): release the engine's job now.
            await events.aclose()
            raise
        return self._deltas(first, events)

    async def _deltas(
        self, first: GenerationEvent, events: AsyncGenerator[GenerationEvent]
    ) -> AsyncIterator[Delta]:
        prompt = cached = completion = 0
        try:
            event: GenerationEvent | None = first
            while event is not None:
                logprobs = tuple(_logprob(lp) for lp in event.logprobs)
                if event.text or logprobs:
                    yield Delta(index=event.index, content=event.text, logprobs=logprobs)
                if event.finish_reason is not None:
                    yield Delta(index=event.index, finish_reason=event.finish_reason)
                    prompt = event.prompt_tokens
                    cached = max(cached, event.cached_tokens)
                    completion += event.completion_tokens
                event = await anext(events, None)
        except KathanError:
            raise
        except Exception as exc:
            raise EngineError("The local engine failed while generating.") from exc
        finally:
            await events.aclose()
        yield Delta(usage=TokenUsage(prompt, completion, cached))


def _logprob(entry: EngineLogprob) -> TokenLogprob:
    return TokenLogprob(
        token=entry.token,
        logprob=entry.logprob,
        bytes=list(entry.bytes),
        top_logprobs=[
            TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in entry.top
        ],
    )

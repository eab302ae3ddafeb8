"""The ``local`` backend: chat requests served by the embedded llama.cpp engine."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from openai_harmony import HarmonyEncoding, HarmonyError

from kathan.backends import harmony
from kathan.backends.base import Delta, DeltaStream, LoadStats, Stage, TokenUsage
from kathan.backends.reasoning import ThinkPlan, ThinkSplitter, think_plan
from kathan.backends.toolcalls import (
    CLOSE,
    OPEN,
    TRIGGER,
    Piece,
    ToolCallParser,
    ToolUse,
    call_text,
    markup_stops,
    tool_response_text,
    tool_use,
    tools_system_prompt,
)
from kathan.engine import harmony_vocab
from kathan.engine.engine import LocalEngine
from kathan.engine.grammar import (
    GrammarError,
    behind_reasoning,
    json_object_grammar,
    json_schema_grammar,
    tool_calls_grammar,
)
from kathan.engine.sampling import SamplingParams, grammar_parses
from kathan.engine.template import TemplateRenderError
from kathan.engine.types import (
    EngineOverloaded,
    GenerationEvent,
    GenerationRequest,
    Halt,
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
    ContentPart,
    FunctionMessage,
    TextPart,
    TokenLogprob,
    ToolMessage,
    TopLogprob,
)
from kathan.protocol.completions import local_prompt

# Where a gpt-oss model's vocabulary is written for the harmony library, from its GGUF.
HARMONY_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / \
    "kathan" / "tiktoken"

# Roles the chat template does not know by these names.
_ROLE_ALIASES = {"developer": "system"}


def _unsupported(request: ChatCompletionRequest) -> tuple[str, str] | None:
    """The first field this backend cannot honour yet, with the reason."""
    for extra in request.model_extra or {}:
        return extra, ""
    checks: list[tuple[bool, str, str]] = []
    for i, message in enumerate(request.messages):
        if isinstance(message.content, list) and any(
            part.type == "image_url" for part in message.content
        ):
            checks.append((True, f"messages[{i}].content", "image input (this model has no vision)"))
    for failed, field, what in checks:
        if failed:
            return field, what
    return None


def _text(content: str | list[TextPart] | list[ContentPart] | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content if isinstance(part, TextPart))
    return content or ""


def template_messages(
    messages: list[ChatMessage], use: ToolUse | None, *, native_tools: bool
) -> list[dict[str, Any]]:
    """The conversation as the chat template's ``messages``.

    With ``native_tools`` the template renders tool calls and results itself
    (Hugging Face's convention). Otherwise they become text in the documented
    fallback format, and the tools are described in the system message.
    """
    out: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool_call_id -> function name
    for i, message in enumerate(messages):
        item: dict[str, Any] = {
            "role": _ROLE_ALIASES.get(message.role, message.role),
            "content": _text(message.content),
        }
        if isinstance(message, AssistantMessage):
            if message.reasoning_content is not None:
                # The template keeps it or drops it, as its format does (Qwen3's keeps
                # the reasoning of the turns after the last question; most drop it).
                item["reasoning_content"] = message.reasoning_content
            calls = [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()]
            if message.function_call is not None:
                fc = message.function_call
                calls.append((f"call_legacy_{i}", fc.name, fc.arguments))
            names.update((cid, name) for cid, name, _ in calls)
            if calls and native_tools:
                item["tool_calls"] = [
                    {"id": cid, "type": "function",
                     "function": {"name": name, "arguments": _json_or_text(args)}}
                    for cid, name, args in calls
                ]
            elif calls:
                texts = [call_text(name, args) for _, name, args in calls]
                item["content"] = "\n".join([item["content"], *texts] if item["content"] else texts)
        elif isinstance(message, ToolMessage | FunctionMessage):
            if isinstance(message, ToolMessage):
                name = names.get(message.tool_call_id)
                if name is None:
                    raise InvalidRequestError(
                        f"messages[{i}] answers tool call '{message.tool_call_id}', but no "
                        "earlier assistant message made a call with that id.",
                        param=f"messages[{i}].tool_call_id",
                    )
            else:
                name = message.name
            if native_tools:
                item["role"] = "tool"
                item["name"] = name
                if isinstance(message, ToolMessage):
                    item["tool_call_id"] = message.tool_call_id
            else:
                response = tool_response_text(item["content"], name=name)
                if out and out[-1].get("tool_responses"):
                    out[-1]["content"] += "\n" + response  # one turn for all results
                    continue
                item = {"role": "user", "content": response, "tool_responses": True}
        elif message.name is not None:
            item["name"] = message.name
        out.append(item)
    for item in out:
        item.pop("tool_responses", None)
    if use is not None and use.calls_allowed and not native_tools:
        described = tools_system_prompt(
            [{"type": "function", "function": f.model_dump(exclude_none=True)}
             for f in use.functions],
            parallel=use.several,
        )
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{described}".lstrip()
        else:
            out.insert(0, {"role": "system", "content": described})
    return out


def _json_or_text(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except json.JSONDecodeError:
        return arguments


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

    def __init__(
        self, engine: LocalEngine, *, retry_after: int, default_max_tokens: int | None = None
    ) -> None:
        self.engine = engine
        self._retry_after = retry_after
        self._harmony_checked = False
        self._harmony_encoding: HarmonyEncoding | None = None
        # A request without max_tokens gets at most this many, within what fits.
        self._default_max_tokens = default_max_tokens

    @property
    def ready(self) -> bool:
        return self.engine.ready

    # Continues a legacy completion's prompt (``/v1/completions``) without the chat
    # template; ``local_prompt`` refuses what it cannot honour.
    serves_raw_prompts = True

    def count_tokens(self, request: ChatCompletionRequest) -> int:
        """The prompt's length in tokens, as ``build`` renders and tokenizes it."""
        return len(self.build(request)[0].prompt)

    def build(
        self, request: ChatCompletionRequest
    ) -> tuple[GenerationRequest, bool, ThinkPlan | None]:
        """Validate and tokenize; raise ``KathanError`` for what cannot be served.

        Also says whether the output may hold tool calls to parse, and how it reasons
        (a ``<think>`` template's plan, whose splitter separates the reasoning).
        """
        if not self.engine.ready:
            raise ModelNotReadyError(
                "The model is still loading; try again shortly.", retry_after=self._retry_after
            )
        encoding = self._harmony()
        if encoding is not None and request._completion is None:
            return self._build_harmony(request, encoding), False, None
        problem = _unsupported(request)
        if problem is not None:
            field, what = problem
            raise UnsupportedParameterError(
                f"'{field}' is not supported by model '{request.model}': "
                + (f"{what} is not available on the local engine yet." if what else
                   "it is not a parameter the local engine knows."),
                param=field,
            )
        n_vocab = self.engine.model.info.n_vocab
        for token in request.logit_bias or {}:
            if int(token) >= n_vocab:
                raise InvalidRequestError(
                    f"logit_bias names token {token}, but the vocabulary has {n_vocab} tokens.",
                    param="logit_bias",
                )
        if request._completion is not None:
            return self._build_raw(request, local_prompt(request._completion)), False, None
        use = tool_use(request)
        template = self.engine.template
        assert template is not None
        plan = think_plan(template.thinking, request)
        # A template that lists tools itself is used only if it also asks for
        # calls in the format the parser reads.
        native = template.supports_tools and OPEN in template.source
        extra: dict[str, Any] = {}
        if native and use is not None and use.calls_allowed:
            extra["tools"] = [
                {"type": "function", "function": f.model_dump(exclude_none=True)}
                for f in use.functions
            ]
        if plan is not None:
            extra.update(plan.variables)
        try:
            messages = template_messages(request.messages, use, native_tools=native)
            text = template.render(messages, **extra)
        except TemplateRenderError as exc:
            raise InvalidRequestError(str(exc), param="messages") from exc
        content = self._content_grammar(request)
        calls = use is not None and use.calls_allowed
        if plan is not None and plan.on and not plan.inside and (content or calls):
            # A grammar must know where the reasoning ends: the block is opened here,
            # as the model itself would begin (Qwen3 and SmolLM3 open it first thing).
            text += plan.thinking.open + "\n"
            plan = replace(plan, inside=True)
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
        room = n_ctx - len(prompt)
        max_tokens = requested or min(self._default_max_tokens or room, room)
        grammar, trigger = content, None
        if use is not None and use.calls_allowed:
            grammar, trigger = self._tools_grammar(use, content)
        if grammar is not None and plan is not None and plan.inside:
            # Calls and formats hold for the answer: the reasoning before it is free.
            grammar = behind_reasoning(grammar, plan.thinking.close, trigger=trigger)
            trigger = None
            self._check_parses(grammar, use.field if calls and use else "response_format",
                               "the grammar after the reasoning")
        return (
            GenerationRequest(
                prompt=prompt,
                sampling=replace(
                    sampling_params(request), grammar=grammar, grammar_trigger=trigger
                ),
                max_tokens=max_tokens,
                stop=(*request.stop_list, *markup_stops(template.markup, use)),
                n=n,
                logprobs=(request.top_logprobs or 0) if request.logprobs else None,
                halt=Halt() if use is not None and use.calls_allowed else None,
            ),
            use is not None and use.calls_allowed,
            plan,
        )

    def _harmony(self) -> HarmonyEncoding | None:
        """The harmony encoding when the model is a gpt-oss one (its template says so),
        loaded once; None for every other model."""
        if self._harmony_checked:
            return self._harmony_encoding
        template = self.engine.template
        if template is not None and harmony.is_harmony(template.source):
            try:
                self._harmony_encoding = harmony.load_encoding(
                    self.engine.model.pieces, HARMONY_CACHE)
            except (harmony_vocab.VocabularyError, HarmonyError, OSError) as exc:
                raise EngineError(
                    f"This model speaks the harmony format (gpt-oss), but its encoding "
                    f"could not be loaded: {exc}.") from exc
        self._harmony_checked = True
        return self._harmony_encoding

    def _build_harmony(
        self, request: ChatCompletionRequest, encoding: HarmonyEncoding
    ) -> GenerationRequest:
        """A gpt-oss model's request: the harmony prompt, and every token's id back."""
        for extra in request.model_extra or {}:
            raise UnsupportedParameterError(
                f"'{extra}' is not supported by model '{request.model}': it is not a "
                "parameter the local engine knows.", param=extra)
        prompt = harmony.prompt(encoding, request)
        n_ctx = self.engine.n_ctx
        requested = request.max_completion_tokens or request.max_tokens
        if len(prompt) + (requested or 1) > n_ctx:
            raise ContextLengthExceededError(
                f"This model's context is {n_ctx} tokens, but the prompt has {len(prompt)} "
                f"tokens ({len(prompt) + (requested or 1)} in all with the completion).",
                param="max_tokens" if requested else "messages")
        n = request.n or 1
        if n > self.engine.config.n_slots:
            raise InvalidRequestError(
                f"'n' is {n}, but this model runs at most {self.engine.config.n_slots} "
                "sequences at once.", param="n")
        room = n_ctx - len(prompt)
        return GenerationRequest(
            prompt=prompt, sampling=sampling_params(request),
            max_tokens=requested or min(self._default_max_tokens or room, room), n=n,
            logprobs=(request.top_logprobs or 0) if request.logprobs else None, tokens=True)

    def _build_raw(self, request: ChatCompletionRequest, raw: str | list[int]) -> GenerationRequest:
        """A legacy completion: the prompt continued as it is (text tokenized as
        llama.cpp's server does, special tokens included; or the token ids given)."""
        model = self.engine.model
        n_vocab = model.info.n_vocab
        if isinstance(raw, str):
            prompt = model.tokenize(raw, add_special=model.info.add_bos, parse_special=True)
        else:
            bad = [t for t in raw if not 0 <= t < n_vocab]
            if bad:
                raise InvalidRequestError(
                    f"prompt holds token {bad[0]}, but the vocabulary has {n_vocab} tokens "
                    f"(0 to {n_vocab - 1}).", param="prompt")
            prompt = list(raw)
        if not prompt:
            raise InvalidRequestError("prompt is empty: give at least one token.",
                                      param="prompt")
        n_ctx = self.engine.n_ctx
        requested = request.max_tokens
        if len(prompt) + (requested or 1) > n_ctx:
            asked = f" plus {requested} requested completion tokens" if requested else ""
            raise ContextLengthExceededError(
                f"This model's context is {n_ctx} tokens, but the prompt has {len(prompt)} "
                f"tokens{asked} ({len(prompt) + (requested or 1)} in all).",
                param="max_tokens" if requested else "prompt")
        n = request.n or 1
        slots = self.engine.config.n_slots
        if n > slots:
            raise InvalidRequestError(
                f"'n' is {n}, but this model runs at most {slots} sequences at once.", param="n")
        room = n_ctx - len(prompt)
        return GenerationRequest(
            prompt=prompt, sampling=sampling_params(request),
            # OpenAI's default for a completion is 16 tokens, within this model's default.
            max_tokens=requested or min(16, self._default_max_tokens or room, room),
            stop=request.stop_list, n=n,
            logprobs=(request.top_logprobs or 0) if request.logprobs else None)

    def _content_grammar(self, request: ChatCompletionRequest) -> str | None:
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
        self._check_parses(grammar, "response_format", "the schema")
        return grammar

    def _tools_grammar(self, use: ToolUse, content: str | None) -> tuple[str, str | None]:
        """The grammar for calls (and the trigger that turns it on, for ``auto``).

        ``required`` and a named function force a call from the first token.
        ``auto`` leaves the model free until it opens a tool tag; with a
        ``response_format`` too, the reply is either that format or calls.
        """
        callable_ = [(f.name, f.parameters, f"{use.where(i)}.parameters")
                     for i, f in use.callable]
        if use.choice != "auto":
            root = "calls"
        elif content is None:
            root = "after_trigger"
        else:
            root = "calls_or_content"
        try:
            grammar = tool_calls_grammar(
                callable_, open_tag=OPEN, close_tag=CLOSE, parallel=use.several, root=root,
                content=content, trigger=TRIGGER,
            )
        except GrammarError as exc:
            raise InvalidRequestError(
                f"{exc}.", param=exc.where or use.field, code="invalid_function_parameters"
            ) from exc
        self._check_parses(grammar, use.field, f"the parameter schemas in '{use.field}'")
        return grammar, (TRIGGER if root == "after_trigger" else None)

    def _check_parses(self, grammar: str, param: str, what: str) -> None:
        if not grammar_parses(self.engine.model, grammar):
            raise InvalidRequestError(
                f"{param}: {what} produced a grammar llama.cpp cannot parse.",
                param=param,
                code="invalid_json_schema",
            )

    def stats(self) -> LoadStats:
        s = self.engine.stats()
        return LoadStats(s.queued, s.running, s.kv_cells_used, s.n_ctx, s.n_slots)

    def check(self, request: ChatCompletionRequest) -> None:
        self.build(request)

    async def probe(self) -> bool:
        return self.ready

    async def open(self, request: ChatCompletionRequest) -> DeltaStream:
        generation, parse_calls, plan = self.build(request)
        events = self.engine.generate(generation)
        try:
            # Wait for admission and the first token, so that overload and queue
            # timeouts are still answered with a status code, not mid-stream.
            first = await anext(events)
        except EngineOverloaded as exc:
            await events.aclose()
            # Retry-After from the rate sequences finish lately (the configured one until
            # any has finished).
            retry_after = exc.retry_after or self._retry_after
            raise ServiceUnavailableError(
                f"The local engine is at capacity: {exc}. Retry in {retry_after} s.",
                retry_after=retry_after,
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
        # The engine's job is the stream's to release (``events.aclose`` aborts it).
        counts = _Counts(first)
        if generation.tokens:
            assert self._harmony_encoding is not None
            deltas = harmony.harmony_deltas(first, events, self._harmony_encoding,
                                            f"call_{id(events):x}", counts.see)
        else:
            deltas = engine_deltas(first, events, parse_calls, generation.halt, counts,
                                   think=plan)
        stream = DeltaStream(deltas, on_close=events.aclose)
        stream.count_with(counts.usage)
        completion = request._completion
        if completion is not None and completion.echo:
            stream.wrap(_echo(local_prompt(completion), generation.n))
        return stream


def _echo(prompt: str | list[int], n: int) -> Stage:
    """A legacy completion's ``echo``: each choice's text begins with the prompt."""
    async def echoed(deltas: AsyncGenerator[Delta, None]) -> AsyncGenerator[Delta, None]:
        for index in range(n):
            yield Delta(index=index, content=str(prompt))
        async for delta in deltas:
            yield delta
    return echoed


async def engine_deltas(
    first: GenerationEvent,
    events: AsyncIterator[GenerationEvent],
    parse_calls: bool,
    halt: Halt | None,
    counts: _Counts | None = None,
    *,
    think: ThinkPlan | None = None,
) -> AsyncGenerator[Delta, None]:
    """The engine's events for every choice as deltas, ending with the usage.

    With ``think`` (a ``<think>`` template) each choice's text is first split by its
    own ``ThinkSplitter``: the reasoning becomes reasoning deltas (without logprobs:
    they are the answer's), and only the answer goes on, so calls and formats are
    read from it alone; the tokens until the block closed are the reasoning tokens.
    With ``parse_calls`` each choice's answer goes through its own
    ``ToolCallParser``; a choice whose parser is ``done`` is ended through
    ``halt``. A choice cut by ``max_tokens`` keeps its partial call in
    ``tool_calls`` with ``finish_reason`` ``length``, as OpenAI does.
    ``counts`` (when given) sees every event, for the usage of a stream cut short.
    """
    prompt = cached = completion = 0
    parsers: dict[int, ToolCallParser] = {}
    splitters: dict[int, ThinkSplitter] = {}
    reasoned: dict[int, int] = {}  # a choice's tokens until its block closed
    try:
        event: GenerationEvent | None = first
        while event is not None:
            if counts is not None:
                counts.see(event)
            index = event.index
            logprobs = tuple(_logprob(lp) for lp in event.logprobs)
            text = event.text
            if think is not None:
                splitter = splitters.get(index)
                if splitter is None:
                    splitter = splitters[index] = think.splitter()
                was = splitter.thinking
                reasoning, text = splitter.feed(text)
                if event.finish_reason is not None:
                    more, rest = splitter.finish()
                    reasoning, text = reasoning + more, text + rest
                if was or splitter.thinking:
                    reasoned[index] = event.completion_tokens
                    logprobs = ()  # a reasoning token's: not the answer's
                if reasoning:
                    yield Delta(index=index, reasoning=reasoning)
            if not parse_calls:
                if text or logprobs:
                    yield Delta(index=index, content=text, logprobs=logprobs)
            else:
                parser = parsers.setdefault(index, ToolCallParser())
                done = parser.done
                pieces = parser.feed(text)
                if event.finish_reason is not None:
                    pieces += parser.finish(cut=event.finish_reason == "length")
                elif parser.done and not done and halt is not None:
                    halt.end(index)  # a loop over its calls, or out of the format
                if pieces or logprobs:
                    yield _split(index, pieces, logprobs)
            if event.finish_reason is not None:
                finish = event.finish_reason
                if finish == "stop" and index in parsers and parsers[index].calls:
                    finish = "tool_calls"
                yield Delta(index=index, finish_reason=finish,
                            stop=event.stop if finish == "stop" else None)
                prompt = event.prompt_tokens
                cached = max(cached, event.cached_tokens)
                completion += event.completion_tokens
            event = await anext(events, None)
    except KathanError:
        raise
    except Exception as exc:
        raise EngineError("The local engine failed while generating.") from exc
    yield Delta(usage=TokenUsage(prompt, completion, cached, sum(reasoned.values())))


class _Counts:
    """The tokens a generation consumed so far, from its events: the prompt (processed
    once the first token exists) and each choice's generated tokens."""

    __slots__ = ("_cached", "_generated", "_prompt")

    def __init__(self, first: GenerationEvent) -> None:
        self._prompt = first.prompt_tokens
        self._cached = first.cached_tokens
        self._generated: dict[int, int] = {}

    def see(self, event: GenerationEvent) -> None:
        self._generated[event.index] = max(self._generated.get(event.index, 0),
                                           event.completion_tokens)
        self._prompt = max(self._prompt, event.prompt_tokens)
        self._cached = max(self._cached, event.cached_tokens)

    def usage(self) -> TokenUsage:
        return TokenUsage(self._prompt, sum(self._generated.values()), self._cached)


def _split(index: int, pieces: list[Piece], logprobs: tuple[TokenLogprob, ...]) -> Delta:
    """One delta from a parser's pieces: the content text and the tool-call pieces."""
    text = "".join(p for p in pieces if isinstance(p, str))
    calls = tuple(p for p in pieces if not isinstance(p, str))
    return Delta(index=index, content=text or None, logprobs=logprobs, tool_calls=calls)


def _logprob(entry: EngineLogprob) -> TokenLogprob:
    return TokenLogprob(
        token=entry.token,
        logprob=entry.logprob,
        bytes=list(entry.bytes),
        top_logprobs=[
            TopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.bytes)) for t in entry.top
        ],
    )

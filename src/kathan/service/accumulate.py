"""Builds a non-streaming ``ChatCompletion``: from the deltas a stream renders
as chunks (what the service does), or from the chunks themselves.

Both folds land in the same state and the same ``result()``, and the rules
that make a chunk out of a delta (the legacy ``function_call`` form, finish
reasons) are applied the same way; tests check that accumulating the
deltas equals accumulating the chunks a streaming client received. Folding
the deltas skips building a dozen chunk models per reply.
"""

from __future__ import annotations

from typing import Any

from kathan.backends.base import Delta, TokenUsage
from kathan.protocol.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChoiceLogprobs,
    FunctionCall,
    ResponseMessage,
    TokenLogprob,
    ToolCall,
    Usage,
    construct,
)


def usage_of(u: TokenUsage) -> Usage:
    """A backend's token counts as the API reports them."""
    return construct(
        Usage,
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.prompt_tokens + u.completion_tokens,
        prompt_tokens_details={"cached_tokens": u.cached_tokens},
        completion_tokens_details={"reasoning_tokens": u.reasoning_tokens},
    )


class _Call:
    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class Accumulator:
    """Folds chunks into a completion.

    >>> from kathan.protocol.chat import StreamChunks
    >>> chunks = StreamChunks(id="chatcmpl-1", created=1, model="m")
    >>> acc = Accumulator()
    >>> acc.add(chunks.text_chunk(0, "Hel"))
    >>> acc.add(chunks.text_chunk(0, "lo!"))
    >>> acc.result().choices[0].message.content
    'Hello!'
    """

    def __init__(self) -> None:
        self._head: dict[str, Any] | None = None  # id, created, model, fingerprint
        self._legacy = False
        self._content: dict[int, list[str]] = {}
        self._reasoning: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}
        self._logprobs: dict[int, list[TokenLogprob]] = {}
        self._usage: Usage | None = None
        self._calls: dict[int, dict[int, _Call]] = {}
        self._function: dict[int, _Call] = {}

    @classmethod
    def of_deltas(cls, *, id: str, created: int, model: str, n: int, legacy: bool) -> Accumulator:
        """An accumulator fed with ``add_delta``: the reply's names, its ``n`` choices, and
        ``legacy`` when the request used ``functions`` (calls become ``function_call``)."""
        acc = cls()
        acc._head = {"id": id, "created": created, "model": model, "system_fingerprint": None}
        acc._legacy = legacy
        for index in range(n):
            acc._content[index] = []
            acc._finish[index] = None
        return acc

    def add_delta(self, delta: Delta) -> None:
        """Fold one delta as the chunk a stream makes of it would be folded."""
        index = delta.index
        if delta.content or delta.logprobs or delta.tool_calls or delta.reasoning:
            parts = self._content.setdefault(index, [])
            self._finish.setdefault(index, None)
            if delta.content:
                parts.append(delta.content)
            if delta.reasoning:
                self._reasoning.setdefault(index, []).append(delta.reasoning)
            calls = delta.tool_calls
            if calls and self._legacy:
                # One call per reply in the legacy form: the first call's name, all arguments.
                legacy = self._function.setdefault(index, _Call())
                legacy.name = calls[0].name or legacy.name
                legacy.arguments.append("".join(c.arguments for c in calls))
            elif calls:
                by_index = self._calls.setdefault(index, {})
                for piece in calls:
                    call = by_index.setdefault(piece.index, _Call())
                    call.id = piece.id or call.id
                    call.name = piece.name or call.name
                    call.arguments.append(piece.arguments)
            if delta.logprobs:
                self._logprobs.setdefault(index, []).extend(delta.logprobs)
        elif delta.finish_reason is not None:
            self._content.setdefault(index, [])
            finish = delta.finish_reason
            self._finish[index] = (
                "function_call" if self._legacy and finish == "tool_calls" else finish)
        elif delta.usage is not None:
            self._usage = usage_of(delta.usage)

    def add(self, chunk: ChatCompletionChunk) -> None:
        if self._head is None:
            self._head = {"id": chunk.id, "created": chunk.created, "model": chunk.model,
                          "system_fingerprint": chunk.system_fingerprint}
        for choice in chunk.choices:
            parts = self._content.setdefault(choice.index, [])
            self._finish.setdefault(choice.index, None)
            if choice.delta.content:
                parts.append(choice.delta.content)
            if choice.delta.reasoning_content:
                self._reasoning.setdefault(choice.index, []).append(
                    choice.delta.reasoning_content)
            if choice.finish_reason is not None:
                self._finish[choice.index] = choice.finish_reason
            for piece in choice.delta.tool_calls or ():
                call = self._calls.setdefault(choice.index, {}).setdefault(piece.index, _Call())
                call.id = piece.id or call.id
                if piece.function is not None:
                    call.name = piece.function.name or call.name
                    call.arguments.append(piece.function.arguments or "")
            legacy = choice.delta.function_call
            if legacy is not None:
                call = self._function.setdefault(choice.index, _Call())
                call.name = legacy.name or call.name
                call.arguments.append(legacy.arguments or "")
            if choice.logprobs is not None and choice.logprobs.content:
                self._logprobs.setdefault(choice.index, []).extend(choice.logprobs.content)
        if chunk.usage is not None:
            self._usage = chunk.usage

    def result(self) -> ChatCompletion:
        if self._head is None:
            raise ValueError("no chunks to accumulate")
        # Built without validation: every value comes from chunks Kathan built itself.
        return construct(
            ChatCompletion,
            **self._head,
            choices=[
                construct(
                    Choice,
                    index=index,
                    message=self._message(index, parts),
                    finish_reason=self._finish[index],
                    logprobs=(
                        construct(ChoiceLogprobs, content=self._logprobs[index])
                        if index in self._logprobs
                        else None
                    ),
                )
                for index, parts in sorted(self._content.items())
            ],
            usage=self._usage,
        )


    def _message(self, index: int, parts: list[str]) -> ResponseMessage:
        calls = self._calls.get(index, {})
        legacy = self._function.get(index)
        reasoning = self._reasoning.get(index)
        tool_calls = [
            construct(
                ToolCall, id=c.id, type="function",
                function=construct(FunctionCall, name=c.name, arguments="".join(c.arguments)),
            )
            for _, c in sorted(calls.items())
        ]
        return construct(
            ResponseMessage,
            # Content is null when the reply only called tools.
            content="".join(parts) if parts or not (calls or legacy) else None,
            reasoning_content="".join(reasoning) if reasoning else None,
            tool_calls=tool_calls or None,
            function_call=(
                construct(FunctionCall, name=legacy.name, arguments="".join(legacy.arguments))
                if legacy is not None
                else None
            ),
        )


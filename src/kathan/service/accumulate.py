"""Builds a non-streaming ``ChatCompletion`` from the stream of chunks.

Non-streaming responses are this accumulation of the very chunks a
streaming client would have received, so the two cannot disagree.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

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


class _Call:
    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []


class Accumulator:
    """Folds chunks into a completion.

    >>> acc = Accumulator()
    >>> for chunk in chunks:
    ...     acc.add(chunk)
    >>> acc.result().choices[0].message.content
    'Hello!'
    """

    def __init__(self) -> None:
        self._first: ChatCompletionChunk | None = None
        self._content: dict[int, list[str]] = {}
        self._finish: dict[int, str | None] = {}
        self._logprobs: dict[int, list[TokenLogprob]] = {}
        self._usage: Usage | None = None
        self._calls: dict[int, dict[int, _Call]] = {}
        self._function: dict[int, _Call] = {}

    def add(self, chunk: ChatCompletionChunk) -> None:
        if self._first is None:
            self._first = chunk
        for choice in chunk.choices:
            parts = self._content.setdefault(choice.index, [])
            self._finish.setdefault(choice.index, None)
            if choice.delta.content:
                parts.append(choice.delta.content)
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
        if self._first is None:
            raise ValueError("no chunks to accumulate")
        first = self._first
        # Built without validation: every value comes from chunks Kathan built itself.
        return construct(
            ChatCompletion,
            id=first.id,
            created=first.created,
            model=first.model,
            system_fingerprint=first.system_fingerprint,
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
            tool_calls=tool_calls or None,
            function_call=(
                construct(FunctionCall, name=legacy.name, arguments="".join(legacy.arguments))
                if legacy is not None
                else None
            ),
        )


async def accumulate(chunks: AsyncIterable[ChatCompletionChunk]) -> ChatCompletion:
    acc = Accumulator()
    async for chunk in chunks:
        acc.add(chunk)
    return acc.result()

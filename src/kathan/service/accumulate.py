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
    ResponseMessage,
    TokenLogprob,
    Usage,
)


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
            if choice.logprobs is not None and choice.logprobs.content:
                self._logprobs.setdefault(choice.index, []).extend(choice.logprobs.content)
        if chunk.usage is not None:
            self._usage = chunk.usage

    def result(self) -> ChatCompletion:
        if self._first is None:
            raise ValueError("no chunks to accumulate")
        first = self._first
        return ChatCompletion(
            id=first.id,
            created=first.created,
            model=first.model,
            system_fingerprint=first.system_fingerprint,
            choices=[
                Choice(
                    index=index,
                    message=ResponseMessage(content="".join(parts)),
                    finish_reason=self._finish[index],
                    logprobs=(
                        ChoiceLogprobs(content=self._logprobs[index])
                        if index in self._logprobs
                        else None
                    ),
                )
                for index, parts in sorted(self._content.items())
            ],
            usage=self._usage,
        )


async def accumulate(chunks: AsyncIterable[ChatCompletionChunk]) -> ChatCompletion:
    acc = Accumulator()
    async for chunk in chunks:
        acc.add(chunk)
    return acc.result()

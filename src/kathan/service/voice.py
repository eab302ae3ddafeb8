"""Voice-agent mode in the serving layer: the persona goes into the request, and
every backend's deltas go through the speech shaper on the way out."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import replace

from kathan.backends.base import Delta
from kathan.errors import InvalidRequestError
from kathan.protocol.chat import ChatCompletionRequest
from kathan.voice.persona import with_persona
from kathan.voice.profile import Voice, check_pair
from kathan.voice.shaper import SpeechShaper


def check_voice_pair(request: ChatCompletionRequest) -> None:
    """An accent the request's language lacks is a 400 naming ``accent``: each field is
    valid alone (the schema lists both), the pair is not."""
    try:
        check_pair(request.language, request.accent)
    except ValueError as exc:
        raise InvalidRequestError(str(exc), param="accent") from None


def voice_request(request: ChatCompletionRequest, voice: Voice) -> ChatCompletionRequest:
    """The request a backend gets in voice mode: the persona merged into its messages,
    and the voice fields consumed here (an upstream must not apply them again)."""
    if request.logprobs or request.top_logprobs:
        raise InvalidRequestError(
            "logprobs cannot be honoured in voice mode: the reply is rewritten for speech, "
            "so its text is not the tokens the model chose. Drop logprobs, or the voice "
            "fields (finetune, language, gender, accent).",
            param="logprobs" if request.logprobs else "top_logprobs",
        )
    return request.model_copy(update={
        "messages": with_persona(request.messages, voice),
        "finetune": None, "language": None, "gender": None, "accent": None,
    })


def voice_length(
    request: ChatCompletionRequest, default: int, *ceilings: int | None
) -> ChatCompletionRequest:
    """A voice request without ``max_tokens`` (or ``max_completion_tokens``) gets
    ``default``, lowered to the tightest of ``ceilings`` (the model's, the key's) so
    that it never asks more than they allow; a request's own value is left as it is.

    >>> from kathan.protocol.chat import ChatCompletionRequest as R
    >>> ask = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    >>> voice_length(R(**ask), 150, None, 100).max_tokens
    100
    >>> voice_length(R(**ask, max_tokens=1000), 150, None).max_tokens
    1000
    """
    if request.max_tokens is not None or request.max_completion_tokens is not None:
        return request
    cap = min([default, *(c for c in ceilings if c is not None)])
    return request.model_copy(update={"max_tokens": cap})


_ENDED = re.compile(r"[.?!।॥…][\"'”’»)]*$")
_CLAUSE_END = re.compile(r"[\s,;:—–-]+$")


def _closed(text: str, locale: str) -> str:
    """The last piece of a reply ends as a sentence, so the voice's intonation falls."""
    if _ENDED.search(text):
        return text
    # A clause mark left where the reply was cut becomes the full stop.
    text = _CLAUSE_END.sub("", text)
    return text + ("।" if locale.startswith("hi") else ".")


async def speak(deltas: AsyncIterator[Delta], locale: str) -> AsyncGenerator[Delta, None]:
    """A ``DeltaStream`` stage: each choice's text as speakable pieces. Every content
    delta that comes out is one whole piece (a sentence, or an early clause first),
    cleaned and normalized for ``locale``. Pieces after a choice's first end as sentences and start with a space, so the
    concatenation a client makes reads as the whole cleaned text. Reasoning is never
    spoken: its deltas (and signatures) are dropped. Tool calls, finish
    reasons and usage pass through; a choice's text is flushed before it finishes,
    its last piece closed with a full stop when it lacks one (a reply cut by
    ``max_tokens`` or a stop sequence, a last line without punctuation).
    """
    shapers: dict[int, SpeechShaper] = {}
    started: set[int] = set()

    def pieces(index: int, texts: list[str]) -> list[Delta]:
        out = []
        for text in texts:
            if index in started:
                # Only the first piece may end at a clause; a later one cut at a line
                # break after "Watch the following:" is spoken as a sentence too.
                out.append(Delta(index=index, content=" " + _closed(text, locale)))
            else:
                out.append(Delta(index=index, content=text))
                started.add(index)
        return out

    async for delta in deltas:
        if delta.reasoning is not None or delta.signature is not None:
            delta = replace(delta, reasoning=None, signature=None)
            if not (delta.content or delta.tool_calls or delta.finish_reason or delta.usage):
                continue
        index = delta.index
        if delta.content or delta.tool_calls:
            if delta.content:
                shaper = shapers.get(index)
                if shaper is None:
                    shaper = shapers[index] = SpeechShaper(locale)
                for piece in pieces(index, shaper.feed(delta.content)):
                    yield piece
            if delta.tool_calls:
                yield Delta(index=index, tool_calls=delta.tool_calls)
        elif delta.finish_reason is not None:
            shaper = shapers.pop(index, None)
            if shaper is not None:
                rest = shaper.flush()
                if rest:
                    rest[-1] = _closed(rest[-1], locale)
                for piece in pieces(index, rest):
                    yield piece
            yield delta
        else:
            yield delta

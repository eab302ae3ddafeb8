"""The persona prompt of a voice, composed from data files (``data/persona_*.yaml``),
and merged with the caller's own system message, whose instructions are kept."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import yaml

from kathan.protocol.chat import ChatMessage, SystemMessage, TextPart
from kathan.voice.profile import Voice


@functools.cache
def _load(name: str) -> dict[str, Any]:
    text = resources.files("kathan.voice").joinpath(f"data/{name}.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def persona(voice: Voice) -> str:
    """The system prompt for ``voice``: spoken style, language and regional variety, and
    the grammatical gender the agent uses for itself.

    >>> "ustedes" in persona(Voice("es", "mexican", "female", "es-MX"))
    True
    """
    common, lang = _load("persona_common"), _load(f"persona_{voice.language}")
    parts = [common["speech"], lang["language"], lang["accents"][voice.accent]]
    if voice.gender is not None:
        parts.append(lang["gender"][voice.gender])
    return "\n\n".join(parts)


def with_persona(messages: list[ChatMessage], voice: Voice) -> list[ChatMessage]:
    """``messages`` with the persona first. A leading system (or developer) message is
    kept, after the persona and a line that says to keep its instructions; without
    one, the persona becomes the system message."""
    prompt = persona(voice)
    if messages and isinstance(messages[0], SystemMessage):
        first = messages[0]
        own = first.content if isinstance(first.content, str) else "".join(
            part.text for part in first.content if isinstance(part, TextPart))
        merged = f"{prompt}\n\n{_load('persona_common')['operator']}\n{own}"
        return [first.model_copy(update={"role": "system", "content": merged}), *messages[1:]]
    return [SystemMessage(role="system", content=prompt), *messages]

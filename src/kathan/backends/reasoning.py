"""Reasoning on the local engine in the ``<think>`` format (Qwen3, DeepSeek-R1 and its
distills, SmolLM3): what ``reasoning_effort`` asks of a template, and the streaming
split of a choice's text into its reasoning and its answer.

The template says how its model reasons (``ChatTemplate.thinking``). A template that
takes ``enable_thinking`` turns thinking off for ``reasoning_effort: none`` and on for
every other value (it has no levels: the model thinks as long as it likes); one
without the switch always thinks, and ``none`` is a 400 that says so. A template
that does not speak the format refuses ``reasoning_effort`` altogether.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from kathan.engine.template import Thinking
from kathan.errors import UnsupportedParameterError
from kathan.protocol.chat import ChatCompletionRequest


@dataclass(frozen=True, slots=True)
class ThinkPlan:
    """What one request does with a ``<think>`` template.

    ``variables`` go to the template (``enable_thinking``); ``inside``: the output
    begins inside the block (the generation prompt opened it); ``on``: the model is
    to think (false once ``enable_thinking`` is false: the prompt holds a closed,
    empty block, and a grammar applies from the first token).
    """

    thinking: Thinking
    variables: dict[str, Any] = field(default_factory=dict)
    inside: bool = False
    on: bool = True

    def splitter(self) -> ThinkSplitter:
        return ThinkSplitter(self.thinking.open, self.thinking.close, inside=self.inside)


def think_plan(thinking: Thinking | None, request: ChatCompletionRequest) -> ThinkPlan | None:
    """The request's plan, or None for a template without the format; raises the 400s
    for the ``reasoning_effort`` values the template cannot honour."""
    effort = request.reasoning_effort
    if thinking is None:
        if effort is not None:
            raise UnsupportedParameterError(
                f"'reasoning_effort' is not supported by model '{request.model}': this "
                "model does not reason (its chat template has no reasoning format).",
                param="reasoning_effort")
        return None
    if not thinking.switch:
        if effort == "none":
            raise UnsupportedParameterError(
                f"'reasoning_effort' none cannot be honoured by model '{request.model}': it "
                "always reasons (its chat template cannot turn thinking off). Leave "
                "reasoning_effort out, or give another value.", param="reasoning_effort")
        return ThinkPlan(thinking, inside=thinking.opens(None))
    enable = None if effort is None else effort != "none"
    return ThinkPlan(thinking, {} if enable is None else {"enable_thinking": enable},
                     inside=thinking.opens(enable), on=enable is not False)


_UNDECIDED, _THINKING, _ANSWERING = range(3)


class ThinkSplitter:
    """Splits one choice's text, as it streams, into reasoning and answer.

    ``inside``: the text begins inside the block (the prompt opened it); otherwise
    the block counts only if the text begins with the opening tag (after
    whitespace). The tags may be split across pieces: a piece that could be the
    start of a tag is held until the next one decides. The whitespace the format
    puts around the block (after the opening tag, before and after the closing
    one) is not part of either text. A block that never closes is all reasoning.

    >>> s = ThinkSplitter("<think>", "</think>", inside=False)
    >>> [s.feed(t) for t in ["<th", "ink>\\nHm", "m.\\n</th", "ink>\\n\\nHi", "!"]]
    [('', ''), ('Hm', ''), ('m.', ''), ('', 'Hi'), ('', '!')]
    """

    __slots__ = ("_close", "_held", "_open", "_state", "_strip")

    def __init__(self, open_tag: str, close_tag: str, *, inside: bool) -> None:
        self._open = open_tag
        self._close = close_tag
        self._state = _THINKING if inside else _UNDECIDED
        self._held = ""  # text not given out yet: a possible tag, or trailing whitespace
        self._strip = True  # leading whitespace of the current part is dropped

    @property
    def thinking(self) -> bool:
        """Whether the text so far ends inside the block."""
        return self._state == _THINKING

    def feed(self, text: str) -> tuple[str, str]:
        """The reasoning and the answer ``text`` completes (either may be empty)."""
        if self._state == _ANSWERING:
            return "", self._answer(text)
        held = self._held + text
        self._held = ""
        if self._state == _UNDECIDED:
            start = held.lstrip()
            if len(start) < len(self._open) and self._open.startswith(start):
                self._held = held  # nothing yet, or what may become the opening tag
                return "", ""
            if not start.startswith(self._open):
                self._state = _ANSWERING
                self._strip = False  # an answer without a block is as the model wrote it
                return "", self._answer(held)
            self._state = _THINKING
            held = start[len(self._open):]
        return self._think(held)

    def finish(self) -> tuple[str, str]:
        """What is still held, when the choice ends."""
        held, self._held = self._held, ""
        if self._state == _THINKING:
            return self._reasoning(held.rstrip()), ""
        if self._state == _UNDECIDED:
            self._state = _ANSWERING
            return "", held
        return "", ""

    def _think(self, text: str) -> tuple[str, str]:
        end = text.find(self._close)
        if end >= 0:
            self._state = _ANSWERING
            reasoning = self._reasoning(text[:end].rstrip())
            self._strip = True
            return reasoning, self._answer(text[end + len(self._close):])
        keep = _partial_tag(text, self._close)
        body = text[:len(text) - keep]
        spoken = body.rstrip()
        self._held = text[len(spoken):]  # trailing whitespace, then a possible tag
        return self._reasoning(spoken), ""

    def _reasoning(self, text: str) -> str:
        if self._strip:
            text = text.lstrip()
            self._strip = not text
        return text

    def _answer(self, text: str) -> str:
        if self._strip:
            text = text.lstrip()
            self._strip = not text
        return text


def _partial_tag(text: str, tag: str) -> int:
    """The length of the longest end of ``text`` that begins ``tag`` (shorter than it)."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0

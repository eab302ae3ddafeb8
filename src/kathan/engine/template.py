"""Chat templates: the Jinja2 template from the GGUF metadata, rendered in a sandbox.

Templates are untrusted input (they come inside model files), so they run in
Jinja2's immutable sandbox with only the helpers Hugging Face templates expect.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import TemplateError, meta, nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Used only when a GGUF file carries no template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# How templates mark turns: <|im_start|>, <|eot_id|>, <|start_header_id|> and the like,
# and DeepSeek's with full-width bars (<｜User｜>, <｜end▁of▁sentence｜>).
_MARKER = re.compile(r"<[|｜][^|｜<>\s]{1,64}[|｜]>")

# The reasoning block of the <think> format (Qwen3, DeepSeek-R1 and its distills, QwQ,
# SmolLM3): the model thinks between these tags, then answers.
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


class TemplateRenderError(Exception):
    """The template refused the conversation (``raise_exception``) or failed to render."""


class _Generation(Extension):
    """Hugging Face's ``{% generation %}`` block (SmolLM3's template has one): it marks
    the assistant's text for training, and renders as its body."""

    tags = {"generation"}  # noqa: RUF012 - jinja2.ext.Extension declares it a set

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _raise_exception(message: str) -> None:
    raise TemplateRenderError(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@dataclass(frozen=True, slots=True)
class Thinking:
    """How a template's model reasons, in the ``<think>`` format.

    ``switch``: the template takes ``enable_thinking`` (Qwen3, SmolLM3: false writes
    an empty, closed block into the generation prompt, and the model answers at
    once); without it the model always thinks (DeepSeek-R1's distills). ``opened``:
    per value of ``enable_thinking`` (None: not given), whether the generation prompt
    itself opens the block, so that the output begins inside it (DeepSeek-R1's
    distills write ``<think>\n`` there); otherwise the model may open it.
    """

    switch: bool
    opened: tuple[tuple[bool | None, bool], ...]
    open: str = THINK_OPEN
    close: str = THINK_CLOSE

    def opens(self, enable_thinking: bool | None) -> bool:
        """Whether the generation prompt opens the block, for this ``enable_thinking``."""
        return dict(self.opened).get(enable_thinking, False)


def _opens_block(suffix: str) -> bool:
    return suffix.rfind(THINK_OPEN) > suffix.rfind(THINK_CLOSE)


class ChatTemplate:
    """A compiled chat template.

    >>> t = ChatTemplate(CHATML_TEMPLATE, bos_token="", eos_token="<|im_end|>")
    >>> t.render([{"role": "user", "content": "hi"}])
    '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'

    ``markup`` is the template's own markers (``<|...|>``) and the BOS and EOS
    strings: text a reply must never show, since it would start a turn of its own.

    >>> t.markup
    ('<|im_end|>', '<|im_start|>')
    """

    def __init__(self, source: str, *, bos_token: str, eos_token: str) -> None:
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[_Generation])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
            variables = meta.find_undeclared_variables(env.parse(source))
        except TemplateError as exc:
            raise TemplateRenderError(f"the model's chat template does not compile: {exc}") from exc
        #: Whether the template renders a ``tools`` list itself.
        self.supports_tools = "tools" in variables
        self.source = source
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.markup: tuple[str, ...] = tuple(sorted(
            {*_MARKER.findall(source), *(t for t in (bos_token, eos_token) if t.strip())}
        ))
        #: The ``<think>`` reasoning format, when the template speaks it (None otherwise).
        self.thinking = self._thinking("enable_thinking" in variables)

    def _thinking(self, switch: bool) -> Thinking | None:
        """The template speaks ``<think>`` when it has the closing tag: it writes the
        block, or strips it from earlier turns (the model writes it, then). Whether
        the generation prompt opens the block is seen by rendering it: the text that
        ``add_generation_prompt`` adds to a one-message conversation."""
        if THINK_CLOSE not in self.source:
            return None
        probe = [{"role": "user", "content": "Hello"}]
        opened: list[tuple[bool | None, bool]] = []
        for enable in (None, True, False) if switch else (None,):
            extra = {} if enable is None else {"enable_thinking": enable}
            try:
                bare = self.render(probe, add_generation_prompt=False, **extra)
                asked = self.render(probe, add_generation_prompt=True, **extra)
            except TemplateRenderError:
                return None  # it cannot render a plain question: not a template to trust
            suffix = asked[len(bare):] if asked.startswith(bare) else asked[
                asked.rfind("Hello") + len("Hello"):]
            opened.append((enable, _opens_block(suffix)))
        return Thinking(switch=switch, opened=tuple(opened))

    def render(
        self,
        messages: list[dict[str, Any]],
        *,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> str:
        try:
            return self._template.render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
                **extra,
            )
        except TemplateRenderError:
            raise
        except (TemplateError, TypeError, ValueError, KeyError) as exc:
            raise TemplateRenderError(f"the chat template could not render: {exc}") from exc

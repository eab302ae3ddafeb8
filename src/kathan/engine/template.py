"""Chat templates: the Jinja2 template from the GGUF metadata, rendered in a sandbox.

Templates are untrusted input (they come inside model files), so they run in
Jinja2's immutable sandbox with only the helpers Hugging Face templates expect.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from jinja2 import TemplateError, meta
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Used only when a GGUF file carries no template of its own.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# How templates mark turns: <|im_start|>, <|eot_id|>, <|start_header_id|> and the like.
_MARKER = re.compile(r"<\|[^|<>\s]{1,64}\|>")


class TemplateRenderError(Exception):
    """The template refused the conversation (``raise_exception``) or failed to render."""


def _raise_exception(message: str) -> None:
    raise TemplateRenderError(message)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


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
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
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

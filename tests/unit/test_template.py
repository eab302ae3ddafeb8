import pytest

from kathan.engine.template import CHATML_TEMPLATE, ChatTemplate, TemplateRenderError


def test_chatml_renders_with_generation_prompt() -> None:
    t = ChatTemplate(CHATML_TEMPLATE, bos_token="", eos_token="<|im_end|>")
    out = t.render([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert out == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"


def test_sandbox_blocks_attribute_escapes() -> None:
    evil = "{{ messages.__class__.__mro__[1].__subclasses__() }}"
    with pytest.raises(TemplateRenderError):
        ChatTemplate(evil, bos_token="", eos_token="").render([{"role": "user", "content": "x"}])


def test_raise_exception_is_reported() -> None:
    t = ChatTemplate("{{ raise_exception('roles must alternate') }}", bos_token="", eos_token="")
    with pytest.raises(TemplateRenderError, match="roles must alternate"):
        t.render([])


def test_template_that_does_not_compile() -> None:
    with pytest.raises(TemplateRenderError, match="does not compile"):
        ChatTemplate("{% for %}", bos_token="", eos_token="")

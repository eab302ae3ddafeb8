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


# A cut-down Qwen2.5-style template: it lists tools and renders calls itself.
TOOLS_TEMPLATE = (
    "{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}"
    "</tools><|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function | tojson }}</tool_call>{% endfor %}"
    "<|im_end|>\n{% endfor %}<|im_start|>assistant\n"
)


def test_templates_that_render_tools_are_recognised() -> None:
    assert ChatTemplate(TOOLS_TEMPLATE, bos_token="", eos_token="").supports_tools
    assert not ChatTemplate(CHATML_TEMPLATE, bos_token="", eos_token="").supports_tools


def test_native_tool_history_goes_through_the_template() -> None:
    from kathan.backends.local import template_messages
    from kathan.backends.toolcalls import tool_use
    from kathan.protocol.chat import ChatCompletionRequest

    request = ChatCompletionRequest.model_validate({"model": "m", "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "ok"}]})
    messages = template_messages(request.messages, tool_use(request), native_tools=True)
    assert messages[1]["tool_calls"][0]["function"] == {"name": "f", "arguments": {"a": 1}}
    assert messages[2] == {"role": "tool", "content": "ok", "name": "f", "tool_call_id": "c1"}
    assert all("<tools>" not in m["content"] for m in messages)  # the template lists them
    text = ChatTemplate(TOOLS_TEMPLATE, bos_token="", eos_token="").render(
        messages, tools=[{"type": "function", "function": {"name": "f"}}])
    assert '<tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>' in text
    assert text.startswith("<|im_start|>system\n<tools>")


LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{{ m.content }}<|eot_id|>{% endfor %}<|start_header_id|>assistant<|end_header_id|>\n\n"
)


@pytest.mark.parametrize(
    ("source", "bos", "eos", "markup"),
    [
        (CHATML_TEMPLATE, "", "<|im_end|>", ("<|im_end|>", "<|im_start|>")),
        (LLAMA3_TEMPLATE, "<|begin_of_text|>", "<|eot_id|>",
         ("<|begin_of_text|>", "<|end_header_id|>", "<|eot_id|>", "<|start_header_id|>")),
        ("[INST] {{ messages[0].content }} [/INST]", "<s>", "</s>", ("</s>", "<s>")),
        ("{{ messages[0].content }} a | b <not|markup>", "", "", ()),
    ],
)
def test_markup_is_the_templates_markers_and_its_bos_and_eos(
    source: str, bos: str, eos: str, markup: tuple[str, ...]
) -> None:
    assert ChatTemplate(source, bos_token=bos, eos_token=eos).markup == markup

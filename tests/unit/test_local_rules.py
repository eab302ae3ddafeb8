"""The local backend's request rules, without a model."""

import pytest

from kathan.backends.local import _unsupported, sampling_params, template_messages
from kathan.backends.toolcalls import markup_stops, tool_use
from kathan.errors import InvalidRequestError
from kathan.protocol.chat import ChatCompletionRequest


def req(**kw: object) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}
    )


def test_plain_request_is_supported() -> None:
    assert _unsupported(req(temperature=0.5, stop=["x"], seed=3, response_format={"type": "text"})) is None
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}
    assert _unsupported(req(response_format=schema, n=2, logprobs=True)) is None


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]},
         "messages[0].content"),
        ({"frobnicate": 1}, "frobnicate"),
    ],
)
def test_unhonoured_fields_are_named(kw: dict[str, object], field: str) -> None:
    problem = _unsupported(req(**kw))
    assert problem is not None and problem[0] == field


def test_developer_role_renders_as_system_and_parts_join() -> None:
    message = req(messages=[{"role": "developer", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]).messages[0]
    assert template_messages([message], None, native_tools=False) == [
        {"role": "system", "content": "ab"}
    ]


def test_sampling_defaults_match_openai() -> None:
    params = sampling_params(req())
    assert params.temperature == 1.0 and params.top_p == 1.0
    assert params.repetition_penalty == 1.0 and params.logit_bias == {}
    params = sampling_params(req(temperature=0, logit_bias={"42": -100}, top_k=5, seed=9))
    assert params.temperature == 0 and params.logit_bias == {42: -100} and params.top_k == 5
    assert params.seed == 9


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.mark.parametrize(
    ("kw", "param"),
    [
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"parallel_tool_calls": False}, "parallel_tool_calls"),
        ({"function_call": "auto"}, "function_call"),
        ({"tools": [WEATHER], "functions": [{"name": "f"}]}, "functions"),
        ({"tools": [WEATHER], "function_call": "auto"}, "function_call"),
        ({"functions": [{"name": "f"}], "tool_choice": "auto"}, "tool_choice"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice"),
        ({"functions": [{"name": "f"}], "function_call": {"name": "g"}}, "function_call"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
            "type": "array"}}}]}, "tools[0].function.parameters"),
    ],
)
def test_inconsistent_tool_fields_name_the_field(kw: dict[str, object], param: str) -> None:
    with pytest.raises(InvalidRequestError) as info:
        tool_use(req(**kw))
    assert info.value.param == param


def test_tool_use_defaults_and_legacy_mapping() -> None:
    use = tool_use(req(tools=[WEATHER]))
    assert use is not None and use.choice == "auto" and use.parallel and use.field == "tools"
    named = {"type": "function", "function": {"name": "get_weather"}}
    use = tool_use(req(tools=[WEATHER], tool_choice=named, parallel_tool_calls=False))
    assert use is not None and use.choice == "get_weather" and not use.parallel
    assert [f.name for _, f in use.callable] == ["get_weather"]
    use = tool_use(req(functions=[{"name": "f"}], function_call={"name": "f"}))
    assert use is not None and use.choice == "f" and not use.parallel
    assert use.where(0) == "functions[0]"
    assert tool_use(req()) is None


def test_tool_history_renders_in_the_fallback_format() -> None:
    request = req(tools=[WEATHER], messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
            {"id": "c2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "tool", "tool_call_id": "c2", "content": "25C"},
    ])
    out = template_messages(request.messages, tool_use(request), native_tools=False)
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[0]["content"].startswith("Be brief.\n\n") and '"get_weather"' in out[0]["content"]
    assert out[2]["content"] == (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    )
    assert out[3]["content"].count("<tool_response>") == 2 and "25C" in out[3]["content"]


def test_legacy_function_history_and_unknown_call_ids() -> None:
    request = req(messages=[
        {"role": "user", "content": "hi"},
        {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
        {"role": "function", "name": "f", "content": "done"},
    ])
    out = template_messages(request.messages, None, native_tools=False)
    assert '"name": "f"' in out[1]["content"] and "done" in out[2]["content"]
    orphan = req(messages=[{"role": "tool", "tool_call_id": "x", "content": "r"}])
    with pytest.raises(InvalidRequestError) as info:
        template_messages(orphan.messages, None, native_tools=False)
    assert info.value.param == "messages[0].tool_call_id"


def test_tool_choice_none_does_not_describe_tools() -> None:
    request = req(tools=[WEATHER], tool_choice="none")
    out = template_messages(request.messages, tool_use(request), native_tools=False)
    assert out == [{"role": "user", "content": "hi"}]


def test_unknown_top_level_fields_are_kept_and_refused_by_name() -> None:
    request = req(guided_json={"type": "object"})
    assert request.model_extra == {"guided_json": {"type": "object"}}
    assert _unsupported(request) == ("guided_json", "")


@pytest.mark.parametrize(
    ("kw", "parsed"),
    [
        ({}, False),
        ({"tools": [WEATHER], "tool_choice": "none"}, False),
        ({"tools": [WEATHER]}, True),
        ({"tools": [WEATHER], "tool_choice": "required"}, True),
        ({"functions": [WEATHER["function"]]}, True),
    ],
)
def test_markup_ends_a_reply_except_call_tags_where_calls_are_parsed(
    kw: dict[str, object], parsed: bool
) -> None:
    stops = markup_stops(["<|im_start|>", "<|im_end|>"], tool_use(req(**kw)))
    expected = {"<tool_response>", "</tool_response>", "<tools>", "</tools>",
                "<|im_start|>", "<|im_end|>"}
    assert set(stops) == (expected if parsed else expected | {"<tool_call>", "</tool_call>"})

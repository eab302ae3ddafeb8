"""A Responses request as the chat request it becomes (``protocol/responses.to_chat``):
each item kind, the tools and formats, and a 400 naming what cannot be carried."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from kathan.errors import InvalidRequestError
from kathan.protocol import responses as wire
from kathan.protocol.chat import NamedToolChoice, ResponseFormatJSONSchema


def chat(body: dict[str, Any], history: list[Any] | None = None) -> Any:
    return wire.to_chat(wire.ResponsesRequest.model_validate({"model": "m", **body}),
                        history or [])


def roles(request: Any) -> list[tuple[str, Any]]:
    return [(m.role, m.content) for m in request.messages]


def test_a_string_is_one_user_message_after_the_instructions() -> None:
    request = chat({"input": "Hi", "instructions": "Be brief.", "max_output_tokens": 9,
                    "temperature": 0.5, "user": "u1"})
    assert roles(request) == [("system", "Be brief."), ("user", "Hi")]
    assert (request.max_tokens, request.temperature, request.user) == (9, 0.5, "u1")


def test_items_become_messages_calls_and_results() -> None:
    request = chat({"input": [
        {"role": "developer", "content": "Use tools."},
        {"role": "user", "content": [{"type": "input_text", "text": "Weather "},
                                     {"type": "input_text", "text": "in Oslo?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [
            {"type": "reasoning_text", "text": "Oslo: look it up."}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Checking.", "annotations": [],
                      "logprobs": None}]},
        {"type": "function_call", "call_id": "c1", "name": "weather",
         "arguments": '{"city":"Oslo"}', "id": "fc_1", "status": "completed"},
        {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "Rain"},
        {"type": "function_call_output", "call_id": "c2",
         "output": [{"type": "input_text", "text": "noon"}]},
    ]})
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "tool", "tool"]
    assert request.messages[1].content == "Weather in Oslo?"
    assistant = request.messages[2]
    assert assistant.content == "Checking."
    # The reasoning goes with the turn it came before; each backend keeps or drops it.
    assert assistant.reasoning_content == "Oslo: look it up."
    assert [c.id for c in assistant.tool_calls] == ["c1", "c2"]
    assert [(m.tool_call_id, m.content) for m in request.messages[3:]] == [
        ("c1", "Rain"), ("c2", "noon")]


def test_an_image_by_url_goes_to_the_model() -> None:
    request = chat({"input": [{"role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"}]}]})
    [user] = request.messages
    assert [p.type for p in user.content] == ["text", "image_url"]
    assert user.content[1].image_url.detail == "low"


def test_the_history_comes_before_the_input_without_its_instructions() -> None:
    earlier = [wire.MessageItem(role="user", content="My name is Ada."),
               *wire.output_items([{"type": "message", "content": [
                   {"type": "output_text", "text": "Hello Ada."}]}])]
    request = chat({"input": "Name?", "instructions": "Be kind."}, earlier)
    assert roles(request) == [("system", "Be kind."), ("user", "My name is Ada."),
                              ("assistant", "Hello Ada."), ("user", "Name?")]


def test_stored_items_load_back_as_they_were() -> None:
    items = wire.items_of(wire.ResponsesRequest.model_validate({"model": "m", "input": [
        {"role": "user", "content": "Hi"},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}]}))
    assert wire.load_items(wire.dump_items(items)) == items


def test_tools_choices_and_formats() -> None:
    tools = [{"type": "function", "name": "a", "parameters": {"type": "object"}},
             {"type": "function", "name": "b", "strict": True}]
    named = chat({"input": "x", "tools": tools, "tool_choice": {"type": "function",
                                                                "name": "b"},
                  "parallel_tool_calls": False})
    assert isinstance(named.tool_choice, NamedToolChoice)
    assert named.tool_choice.function.name == "b" and named.parallel_tool_calls is False
    assert [t.function.name for t in named.tools] == ["a", "b"]
    allowed = chat({"input": "x", "tools": tools, "tool_choice": {
        "type": "allowed_tools", "mode": "required", "tools": [{"type": "function",
                                                                 "name": "a"}]}})
    assert [t.function.name for t in allowed.tools] == ["a"]
    assert allowed.tool_choice == "required"
    formatted = chat({"input": "x", "text": {"format": {
        "type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}}})
    assert isinstance(formatted.response_format, ResponseFormatJSONSchema)
    assert formatted.response_format.json_schema.schema_ == {"type": "object"}
    effort = chat({"input": "x", "reasoning": {"effort": "low", "summary": "auto"}})
    assert effort.reasoning_effort == "low"
    probs = chat({"input": "x", "include": [wire.LOGPROBS], "top_logprobs": 3})
    assert (probs.logprobs, probs.top_logprobs) == (True, 3)


@pytest.mark.parametrize(("body", "param"), [
    ({"background": True}, "background"),
    ({"conversation": {"id": "conv_1"}}, "conversation"),
    ({"prompt": {"id": "pmpt_1"}}, "prompt"),
    ({"max_tool_calls": 2}, "max_tool_calls"),
    ({"truncation": "auto"}, "truncation"),
    ({"service_tier": "priority"}, "service_tier"),
    ({"stream_options": {"include_obfuscation": True}}, "stream_options.include_obfuscation"),
    ({"include": ["reasoning.encrypted_content"]}, "include[0]"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"text": {"verbosity": "low"}}, "text.verbosity"),
    ({"reasoning": {"summary": "detailed"}}, "reasoning.summary"),
    ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
    ({"tool_choice": {"type": "web_search_preview"}}, "tool_choice.type"),
    ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
     "input[0].content[0].file_id"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
     "input[0].content[0]"),
    ({"input": [{"role": "system", "content": [{"type": "input_image",
                                                "image_url": "https://x/y.png"}]}]},
     "input[0].content[0]"),
    ({"input": []}, "input"),
    ({"tools": [{"type": "function", "name": "a"}], "tool_choice": {
        "type": "allowed_tools", "mode": "auto", "tools": [{"type": "function",
                                                             "name": "zz"}]}},
     "tool_choice.tools[0].name"),
])
def test_what_cannot_be_carried_is_a_400_that_names_it(body: dict[str, Any],
                                                       param: str) -> None:
    with pytest.raises(InvalidRequestError) as refused:
        chat({"input": "x", **body})
    assert refused.value.param == param
    assert refused.value.message.startswith(param.split("[")[0])


@pytest.mark.parametrize("body", [
    {"metadata": {f"k{i}": "v" for i in range(17)}},
    {"metadata": {"k" * 65: "v"}},
    {"metadata": {"k": "v" * 513}},
    {"input": [{"role": "robot", "content": "x"}]},
    {"temperature": 2.5},
    {"input": [{"type": "function_call", "call_id": "", "name": "f", "arguments": "{}"}]},
])
def test_a_body_outside_the_schema_is_a_validation_error(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        wire.ResponsesRequest.model_validate({"model": "m", "input": "x", **body})


def test_reasoning_goes_with_the_next_assistant_turn_only() -> None:
    request = chat({"input": [
        {"type": "reasoning", "summary": [], "content": [
            {"type": "reasoning_text", "text": "lost"}]},
        {"role": "user", "content": "Hi"},
        {"type": "reasoning", "summary": [{"type": "summary_text", "text": "a summary"}],
         "encrypted_content": "opaque"},
        {"type": "reasoning", "summary": [], "content": [
            {"type": "reasoning_text", "text": "Call it."}]},
        {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "ok"},
    ]})
    user, call, result = request.messages
    assert (call.reasoning_content, call.content) == ("Call it.", None)
    assert [c.id for c in call.tool_calls] == ["c1"]

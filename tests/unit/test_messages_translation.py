"""Anthropic's Messages request as the chat request every backend serves, and back."""

from __future__ import annotations

from typing import Any

import pytest

from kathan.errors import InvalidRequestError
from kathan.protocol.chat import (
    AssistantMessage,
    ImagePart,
    NamedToolChoice,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from kathan.protocol.messages import MessagesRequest, stop_reason, to_chat


def req(**fields: Any) -> MessagesRequest:
    return MessagesRequest.model_validate(
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}],
         **fields})


def test_system_blocks_stop_sequences_and_sampling() -> None:
    chat = to_chat(req(system=[{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}],
                       stop_sequences=["END"], temperature=0.5, top_p=0.9, top_k=40,
                       metadata={"user_id": "u1"}))
    assert chat.messages[0] == SystemMessage(role="system", content="Be\n\nbrief.")
    assert chat.messages[1] == UserMessage(role="user", content="hi")
    assert (chat.stop, chat.temperature, chat.top_p, chat.top_k, chat.user, chat.max_tokens) == (
        ["END"], 0.5, 0.9, 40, "u1", 10)
    assert chat.stream is False and chat.stream_options is None


def test_tool_use_and_tool_result_become_calls_and_tool_messages() -> None:
    chat = to_chat(req(
        tools=[{"name": "get_weather", "description": "d",
                "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        messages=[
            {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}, "caller": None}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
                 "content": [{"type": "text", "text": "no such city"}]},
                {"type": "text", "text": "And tomorrow?"}]},
        ]))
    user, assistant, result, failed, follow = chat.messages
    assert isinstance(assistant, AssistantMessage) and assistant.content == "Let me look."
    assert assistant.reasoning_content == "hmm"  # each backend keeps or drops it
    [call] = assistant.tool_calls or []
    assert (call.id, call.function.name, call.function.arguments) == (
        "toolu_1", "get_weather", '{"city": "Paris"}')
    assert result == ToolMessage(role="tool", tool_call_id="toolu_1", content="Sunny")
    assert isinstance(failed, ToolMessage) and failed.content == "Error: no such city"
    assert follow == UserMessage(role="user", content="And tomorrow?")
    assert chat.tool_choice == "required" and chat.parallel_tool_calls is False
    assert chat.tools is not None and chat.tools[0].function.name == "get_weather"


def test_a_named_tool_and_images() -> None:
    chat = to_chat(req(
        tools=[{"name": "f", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "f"},
        messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "AAAA"}},
            {"type": "image", "source": {"type": "url", "url": "https://x.example/a.png"}},
            {"type": "text", "text": "What is this?"}]}]))
    assert isinstance(chat.tool_choice, NamedToolChoice) and chat.tool_choice.function.name == "f"
    [message] = chat.messages
    assert isinstance(message.content, list)
    first, second, _ = message.content
    assert isinstance(first, ImagePart) and first.image_url.url == "data:image/png;base64,AAAA"
    assert isinstance(second, ImagePart) and second.image_url.url == "https://x.example/a.png"


def test_thinking_becomes_a_reasoning_effort() -> None:
    assert to_chat(req(thinking={"type": "enabled", "budget_tokens": 2048})
                   ).reasoning_effort == "low"
    assert to_chat(req(thinking={"type": "enabled", "budget_tokens": 10000})
                   ).reasoning_effort == "medium"
    assert to_chat(req(thinking={"type": "disabled"})).reasoning_effort is None


@pytest.mark.parametrize(("fields", "param"), [
    ({"stop_sequences": ["a", "b", "c", "d", "e"]}, "stop_sequences"),
    ({"stop_sequences": [""]}, "stop_sequences"),
    ({"tools": [{"name": "f", "input_schema": {}}], "tool_choice": {"type": "tool"}},
     "tool_choice.name"),
    ({"messages": [{"role": "assistant", "content": [
        {"type": "tool_result", "tool_use_id": "x", "content": "y"}]}]}, "messages[0].content[0]"),
])
def test_what_cannot_be_carried_is_a_400_naming_it(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequestError) as error:
        to_chat(req(**fields))
    assert error.value.param == param


def test_unknown_fields_are_refused_unless_null() -> None:
    with pytest.raises(ValueError, match="caller"):
        req(messages=[{"role": "assistant", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": {}, "caller": {"x": 1}}]}])
    with pytest.raises(ValueError, match="service_tier"):
        req(service_tier="auto")
    with pytest.raises(ValueError):
        req(tools=[{"type": "web_search_20250305", "name": "web_search"}])


def test_stop_reasons() -> None:
    assert [stop_reason(f) for f in ("stop", "length", "tool_calls", "content_filter", None)] == [
        "end_turn", "max_tokens", "tool_use", "refusal", "end_turn"]


def test_every_error_on_the_messages_paths_is_in_anthropics_shape(tmp_path: Any) -> None:
    from tests.unit.test_accounts_api import ADMIN, bearer, client_with

    with client_with(tmp_path, max_body_bytes=2000) as c:
        for r in (
            c.post("/v1/messages", content=b"{" + b" " * 3000 + b"}", headers=bearer(ADMIN)),
            c.get("/v1/messages", headers=bearer(ADMIN)),
            c.post("/v1/messages", json={"model": "fake"}),
        ):
            assert r.json()["type"] == "error", r.text
            assert set(r.json()["error"]) == {"type", "message"}
        assert [r.status_code for r in (
            c.post("/v1/messages", content=b"{" + b" " * 3000 + b"}", headers=bearer(ADMIN)),
            c.get("/v1/messages", headers=bearer(ADMIN)))] == [413, 405]


def test_the_request_itself_rides_along_for_an_anthropic_deployment() -> None:
    body = {"model": "m", "max_tokens": 9, "stream": True, "top_k": 5,
            "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "Hi"}]}
    chat = to_chat(MessagesRequest.model_validate(body))
    assert chat._anthropic == {k: v for k, v in body.items() if k not in ("model", "stream")}
    # Voice mode rewrites the conversation: the translation is what goes then.
    voiced = to_chat(MessagesRequest.model_validate({**body, "language": "en"}))
    assert voiced._anthropic is None

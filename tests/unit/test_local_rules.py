"""The local backend's request rules, without a model."""

import pytest

from kathan.backends.local import _message_dict, _unsupported, sampling_params
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
        ({"parallel_tool_calls": True}, "parallel_tool_calls"),
        ({"finetune": True}, "finetune"),
        ({"gender": "female"}, "gender"),
        ({"accent": "british"}, "accent"),
        ({"tool_choice": "none"}, "tool_choice"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
         "messages[0].tool_calls"),
    ],
)
def test_unhonoured_fields_are_named(kw: dict[str, object], field: str) -> None:
    problem = _unsupported(req(**kw))
    assert problem is not None and problem[0] == field


def test_finetune_false_is_the_normal_path() -> None:
    assert _unsupported(req(finetune=False)) is None


def test_developer_role_renders_as_system_and_parts_join() -> None:
    message = req(messages=[{"role": "developer", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]).messages[0]
    assert _message_dict(message) == {"role": "system", "content": "ab"}


def test_sampling_defaults_match_openai() -> None:
    params = sampling_params(req())
    assert params.temperature == 1.0 and params.top_p == 1.0
    assert params.repetition_penalty == 1.0 and params.logit_bias == {}
    params = sampling_params(req(temperature=0, logit_bias={"42": -100}, top_k=5, seed=9))
    assert params.temperature == 0 and params.logit_bias == {42: -100} and params.top_k == 5
    assert params.seed == 9

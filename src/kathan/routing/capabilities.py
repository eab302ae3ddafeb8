"""What a configured model can do, and the request fields that need it."""

from __future__ import annotations

from dataclasses import dataclass

from kathan.errors import InvalidRequestError
from kathan.protocol.chat import ChatCompletionRequest, ImagePart


@dataclass(frozen=True, slots=True)
class Capabilities:
    tools: bool = True
    vision: bool = True
    json_schema: bool = True
    reasoning: bool = True


def required_capabilities(request: ChatCompletionRequest) -> list[tuple[str, str]]:
    """(capability, the field that needs it) for what the request uses."""
    needs: list[tuple[str, str]] = []
    for i, message in enumerate(request.messages):
        content = message.content
        if isinstance(content, list) and any(isinstance(p, ImagePart) for p in content):
            needs.append(("vision", f"messages[{i}].content"))
    if request.tools or request.functions:
        needs.append(("tools", "tools" if request.tools else "functions"))
    if request.response_format is not None and request.response_format.type == "json_schema":
        needs.append(("json_schema", "response_format"))
    if request.reasoning_effort is not None and request.reasoning_effort != "none":
        needs.append(("reasoning", "reasoning_effort"))
    return needs


def check_capabilities(
    model_id: str, capabilities: Capabilities, request: ChatCompletionRequest
) -> None:
    """A 400 naming the first field that needs a capability the model lacks."""
    for capability, param in required_capabilities(request):
        if not getattr(capabilities, capability):
            raise InvalidRequestError(
                f"Model '{model_id}' does not support {capability} "
                f"(its capabilities do not include it), so '{param}' cannot be honoured.",
                param=param, code="unsupported_capability",
            )

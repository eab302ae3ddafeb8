"""Schemathesis hooks: aim positive cases at the served model, so they reach the engine."""

from typing import Any

import schemathesis


@schemathesis.hook
def before_load_schema(context: schemathesis.HookContext, raw_schema: dict[str, Any]) -> None:
    request = raw_schema["components"]["schemas"]["ChatCompletionRequest"]
    request["properties"]["model"] = {
        "type": "string",
        "enum": ["smollm2-135m-instruct", "default"],
    }

"""Schemathesis hooks, for what is true of this deployment or this moment and so cannot be
in the API's schema. Every other rule is in the schema itself, and the checks hold the
server to it.

- The served models are what this server's config loads (the test server serves the
  embedded model as ``smollm2-135m-instruct``, alias ``default``), not a property of
  the API: a chat or embeddings request naming another model gets a 404, and a key
  given another model a 400. Positive cases name served models, so they reach the
  engine and the keys are created; negative cases still try any other name.
- The test server caps ``max_tokens`` (and ``max_completion_tokens``) at 4 and ``n``
  at 2 (``requests.max_tokens``, ``requests.max_n``: a 400 above them), so that
  every generated request finishes in moments: the caps are its configuration, not
  the API's, so they go into the schema here.
- The test server serves only the local engine, which refuses with a 400 a parameter
  it does not know (``unsupported_parameter``), while a provider deployment forwards
  it: so the schema allows extra properties in a chat request, and this server's
  positive cases send none (negative cases still try them).
- Token ids are a model's: the embedded model's vocabulary has ``N_VOCAB`` of them (an
  embeddings request with another id gets a 400), so positive cases draw ids within it.
- ``expires_at`` must lie in the future (the schema's description says so); JSON Schema
  has no notion of "now", so a time the generator drew in the past moves to the future.
"""

from datetime import UTC, datetime
from typing import Any

import schemathesis

SERVED = ["smollm2-135m-instruct", "default"]
# tests/integration/test_schema.py's server config, `requests:`.
MAX_TOKENS = 4
MAX_N = 2
N_VOCAB = 49152  # SmolLM2's vocabulary


def _cap(prop: dict[str, Any], maximum: int) -> None:
    for option in prop["anyOf"]:
        if option.get("type") == "integer":
            option["maximum"] = maximum


@schemathesis.hook
def before_load_schema(context: schemathesis.HookContext, raw_schema: dict[str, Any]) -> None:
    schemas = raw_schema["components"]["schemas"]
    request = schemas["ChatCompletionRequest"]
    request["properties"]["model"] = {"type": "string", "enum": SERVED}
    request["additionalProperties"] = False
    _cap(request["properties"]["max_tokens"], MAX_TOKENS)
    _cap(request["properties"]["max_completion_tokens"], MAX_TOKENS)
    _cap(request["properties"]["n"], MAX_N)
    embeddings = schemas["EmbeddingRequest"]["properties"]
    embeddings["model"] = {"type": "string", "enum": SERVED}
    for option in embeddings["input"]["anyOf"]:
        ids = option.get("items", {})
        ids = ids.get("items", ids)  # a list of lists of ids, or a list of ids
        if ids.get("type") == "integer":
            ids["maximum"] = N_VOCAB - 1
    for name in ("KeyCreateRequest", "AdminKeyCreateRequest", "KeyUpdateRequest"):
        models = schemas[name]["properties"]["models"]
        for option in models["anyOf"]:
            if option.get("type") == "array":
                option["items"] = {"type": "string", "enum": SERVED}


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Any, kwargs: dict[str, Any]) -> None:
    body = case.body
    if not isinstance(body, dict) or not isinstance(body.get("expires_at"), str):
        return
    try:
        when = datetime.fromisoformat(body["expires_at"].replace("z", "Z"))
    except ValueError:
        return  # not a time: a negative case, left as drawn
    aware = when if when.tzinfo else when.replace(tzinfo=UTC)
    if aware <= datetime.now(UTC):
        body["expires_at"] = "2099-01-01T00:00:00Z"

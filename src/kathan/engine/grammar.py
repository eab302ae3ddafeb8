"""GBNF grammars for structured output, built from JSON Schema.

The conversion is llama-cpp-python's port of llama.cpp's json-schema-to-grammar.
That port does not enforce numeric bounds, so Kathan rewrites a bounded
integer into an ``enum`` of its values when the range is small enough, and
refuses bounds it cannot enforce instead of ignoring them.
"""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

MAX_ENUMERATED_RANGE = 1000
_UNENFORCED = ("exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minimum", "maximum")


class GrammarError(Exception):
    """A schema that cannot be turned into a grammar; the message says why."""


# The port's string character rule admits raw control characters, which JSON
# forbids inside strings (json.loads rejects them); llama.cpp's own converter
# excludes them, and so does Kathan.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_STRICT_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def _strict(grammar: str) -> str:
    return grammar.replace(_LOOSE_CHAR, _STRICT_CHAR)


def json_object_grammar() -> str:
    """Any JSON object, with bounded whitespace."""
    return _strict(str(json_schema_to_gbnf(json.dumps({"type": "object"}))))


def json_schema_grammar(schema: dict[str, Any]) -> str:
    """A grammar whose every sentence validates against ``schema``."""
    try:
        prepared = _enforceable(schema, "schema")
        return _strict(str(json_schema_to_gbnf(json.dumps(prepared))))
    except GrammarError:
        raise
    except (AssertionError, KeyError, TypeError, ValueError, RecursionError) as exc:
        raise GrammarError(f"the JSON schema cannot be compiled to a grammar: {exc}") from exc


def _enforceable(node: Any, where: str) -> Any:
    """Copy of ``node`` with bounded integers enumerated; unenforceable bounds raise."""
    if isinstance(node, list):
        return [_enforceable(item, f"{where}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, dict):
        return node
    out = {key: _enforceable(value, f"{where}.{key}") for key, value in node.items()}
    bounds = [
        key
        for key in _UNENFORCED
        if isinstance(node.get(key), int | float) and not isinstance(node.get(key), bool)
    ]
    if not bounds:
        return out
    if node.get("type") == "integer" and "multipleOf" not in node:
        low = _bound(node, "minimum", "exclusiveMinimum", +1)
        high = _bound(node, "maximum", "exclusiveMaximum", -1)
        if low is not None and high is not None:
            if high < low:
                raise GrammarError(f"{where}: no integer lies between its bounds")
            if high - low <= MAX_ENUMERATED_RANGE:
                for key in _UNENFORCED:
                    out.pop(key, None)
                out.pop("type", None)
                out["enum"] = list(range(low, high + 1))
                return out
    raise GrammarError(
        f"{where}: {', '.join(bounds)} can be enforced only on integers with both bounds "
        f"spanning at most {MAX_ENUMERATED_RANGE + 1} values"
    )


def _bound(node: dict[str, Any], inclusive: str, exclusive: str, step: int) -> int | None:
    if inclusive in node:
        value = node[inclusive]
        return int(-(-value // 1)) if step > 0 else int(value // 1)
    if exclusive in node:
        value = node[exclusive]
        return int(value // 1) + 1 if step > 0 else int(-(-value // 1)) - 1
    return None

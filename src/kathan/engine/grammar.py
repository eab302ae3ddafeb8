"""GBNF grammars for structured output, built from JSON Schema.

The conversion is llama-cpp-python's port of llama.cpp's json-schema-to-grammar.
That port does not enforce numeric bounds, so Kathan rewrites a bounded
integer into an ``enum`` of its values when the range is small enough, and
refuses bounds it cannot enforce instead of ignoring them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

MAX_ENUMERATED_RANGE = 1000
_UNENFORCED = ("exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minimum", "maximum")


class GrammarError(Exception):
    """A schema that cannot be turned into a grammar; the message says why.

    ``where`` names the request field that holds the schema, when known.
    """

    def __init__(self, message: str, *, where: str | None = None) -> None:
        super().__init__(message)
        self.where = where


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


def json_schema_grammar(schema: dict[str, Any], *, where: str = "schema") -> str:
    """A grammar whose every sentence validates against ``schema``."""
    try:
        prepared = _enforceable(schema, where)
        return _strict(str(json_schema_to_gbnf(json.dumps(prepared))))
    except GrammarError:
        raise
    except Exception as exc:  # the converter fails in many ways on schemas it cannot read
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


_LITERAL_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r"}


def literal(text: str) -> str:
    """``text`` as a GBNF string literal."""
    return '"' + "".join(_LITERAL_ESCAPES.get(ch, ch) for ch in text) + '"'


_RULE = re.compile(r"^([a-zA-Z0-9-]+) ::= (.*)$")


def prefixed(grammar: str, prefix: str) -> str:
    """``grammar`` with every rule renamed ``<prefix><name>``, so grammars can be combined."""
    lines = []
    for line in grammar.splitlines():
        match = _RULE.match(line)
        if match is None:
            if line.strip():
                raise GrammarError(f"unexpected grammar line: {line!r}")
            continue
        lines.append(f"{prefix}{match.group(1)} ::= {_prefix_refs(match.group(2), prefix)}")
    return "\n".join(lines)


def _prefix_refs(body: str, prefix: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch in "\"[{":
            close = {'"': '"', "[": "]", "{": "}"}[ch]
            j = i + 1
            while j < len(body) and body[j] != close:
                j += 2 if body[j] == "\\" else 1
            out.append(body[i : j + 1])
            i = j + 1
        elif ch.isalnum() or ch == "-":
            j = i
            while j < len(body) and (body[j].isalnum() or body[j] == "-"):
                j += 1
            out.append(prefix + body[i:j])
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def tool_calls_grammar(
    tools: Sequence[tuple[str, dict[str, Any] | None, str]],
    *,
    open_tag: str,
    close_tag: str,
    parallel: bool,
    root: str,
    content: str | None = None,
    trigger: str = "",
) -> str:
    """A grammar for tool calls written as ``<open>{"name": ..., "arguments": {...}}<close>``.

    ``tools`` are (name, parameters schema, request field of the schema)
    triples; each call's arguments validate against its function's schema. ``root`` picks what the grammar
    describes:

    - ``"calls"``: one call (or several, with ``parallel``) and nothing else;
    - ``"after_trigger"``: the same text minus ``trigger``, a prefix of the first
      ``open_tag``, for a grammar that turns on once the model has written it;
    - ``"calls_or_content"``: either calls or the ``content`` grammar's text.
    """
    rules: list[str] = []
    bodies: list[str] = []
    for i, (name, parameters, where) in enumerate(tools):
        if parameters is None:  # a function without parameters
            schema: dict[str, Any] = {
                "type": "object", "properties": {}, "additionalProperties": False,
            }
        else:  # arguments are always an object, even where the schema leaves it open
            schema = {"type": "object", **parameters}
        try:
            grammar = json_schema_grammar(schema, where=where)
        except GrammarError as exc:
            raise GrammarError(str(exc), where=where) from exc
        rules.append(prefixed(grammar, f"tool{i}-"))
        head = literal(f'{{"name": {json.dumps(name)}, "arguments": ')
        bodies.append(f"tool{i}-call")
        rules.append(f'tool{i}-call ::= {head} tool{i}-root "}}"')
    nl = '"\\n"?'
    rules.append(f"call-body ::= {' | '.join(bodies)}")
    rules.append(f"call-rest ::= {nl} call-body {nl} {literal(close_tag)}")
    rules.append(f"call ::= {literal(open_tag)} call-rest")
    # A newline after a call may be followed by the end: a model that writes
    # one is not forced into another call.
    more = f" ({nl} call)* {nl}" if parallel else f" {nl}"
    if root == "calls":
        rules.append(f"root ::= call{more}")
    elif root == "after_trigger":
        if not open_tag.startswith(trigger):
            raise ValueError("the trigger must be a prefix of the open tag")
        rest = open_tag[len(trigger) :]
        rules.append(f"root ::= {literal(rest) + ' ' if rest else ''}call-rest{more}")
    elif root == "calls_or_content":
        if content is None:
            raise ValueError("calls_or_content needs a content grammar")
        rules.append(prefixed(content, "content-"))
        rules.append(f"root ::= call{more} | content-root")
    else:
        raise ValueError(f"unknown root {root!r}")
    return "\n".join(rules)


def _char_class(chars: str) -> str:
    escaped = "".join("\\" + ch if ch in "\\]^-" else {"\n": "\\n", "\t": "\\t"}.get(ch, ch)
                      for ch in chars)
    return f"[^{escaped}]"


def excluding(name: str, text: str) -> list[str]:
    """Rules for any text in which ``text`` never occurs, rooted at ``<name>-0``.

    Each rule ``<name>-<k>`` is a state of the automaton that matches ``text``
    (Knuth-Morris-Pratt): ``k`` characters of it are matched so far; a character
    that would complete it has no way on.
    """
    size = len(text)
    fail = [0] * size  # the longest proper border of each prefix
    border = 0
    for i in range(1, size):
        while border and text[i] != text[border]:
            border = fail[border - 1]
        if text[i] == text[border]:
            border += 1
        fail[i] = border

    def step(state: int, ch: str) -> int:
        while state and text[state] != ch:
            state = fail[state - 1]
        return state + 1 if text[state] == ch else 0

    alphabet = "".join(sorted(set(text)))
    rules = []
    for state in range(size):
        ways = [f"{_char_class(alphabet)} {name}-0"]
        for ch in alphabet:
            after = step(state, ch)
            if after < size:
                ways.append(f"{literal(ch)} {name}-{after}")
        rules.append(f"{name}-{state} ::= ({' | '.join(ways)})?")
    return rules


def behind_reasoning(grammar: str, close_tag: str, *, trigger: str | None = None) -> str:
    """``grammar`` for a reply that begins inside a reasoning block: free text without
    ``close_tag``, the tag, whitespace, then ``grammar``'s text. With ``trigger`` (a
    lazy grammar, which describes what follows its trigger), the answer is free text
    without the trigger, then optionally the trigger and ``grammar``'s text.

    The reasoning itself is never constrained; the grammar holds from the first token
    rather than waiting for the tag, so a reply that never closes its block is all
    reasoning, cut by ``max_tokens``.
    """
    rules = [prefixed(grammar, "answer-"), *excluding("reasoning", close_tag)]
    answer = "answer-root"
    if trigger:
        rules += excluding("free", trigger)
        rules.append(f"after ::= free-0 ({literal(trigger)} answer-root)?")
        answer = "after"
    rules.append(f"root ::= reasoning-0 {literal(close_tag)} [ \\t\\n]* {answer}")
    return "\n".join(rules)

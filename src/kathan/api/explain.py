"""One rule for validation messages: ``error.message`` names the field and the real
reason first, in plain words (``detail`` keeps pydantic's items as they are).

Pydantic reports a value that matches no member of a union once per member:
``stop`` given five strings fails as "not a string" and as "a list of at most
4". ``explain`` keeps the errors of the member whose type the input has (the
list's own ``too_long`` here) and drops the mismatches of the others; when no
member's type matched, it says which types are accepted and which was given.
Union members in pydantic's locations (``constrained-str``, a discriminator's
tag) are left out by following the location through the body itself, so the
field reads as the client wrote it: ``messages[0].content``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

# The error types that only say "the value is not of this type": one per union member.
_TYPE_NAMES = {
    "string_type": "a string",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "dataclass_type": "an object",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "decimal_type": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "none_required": "null",
    "datetime_type": "a date-time string",
    "date_type": "a date string",
}
_SOURCES = ("body", "query", "path", "header", "cookie")


def display(loc: Sequence[Any]) -> str:
    """A location as a client writes it.

    >>> display(["messages", 0, "content"])
    'messages[0].content'
    """
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def kind(value: Any) -> str:
    """The JSON type of ``value``, in words.

    >>> kind(None), kind(2.5), kind([])
    ('null', 'a decimal number', 'an array')
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    return "an object"


def shown(value: Any, limit: int = 40) -> str:
    """``value`` as JSON, cut to ``limit`` characters."""
    try:
        text = json.dumps(value, ensure_ascii=True, default=str)
    except ValueError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class _Issue:
    __slots__ = ("error", "is_key", "mismatch", "path", "source")

    def __init__(self, error: dict[str, Any], body: Any) -> None:
        self.error = error
        loc = list(error.get("loc", ()))
        self.source = loc.pop(0) if loc and loc[0] in _SOURCES else "body"
        self.path, self.is_key = (
            _follow(loc, body, error.get("type") == "missing") if self.source == "body"
            else (tuple(loc), False))
        if error.get("type") in ("union_tag_invalid", "union_tag_not_found"):
            tag = str((error.get("ctx") or {}).get("discriminator", "")).strip("'")
            self.path = (*self.path, tag) if tag else self.path
        self.mismatch = _is_mismatch(error)

    @property
    def type(self) -> str:
        return str(self.error.get("type", ""))


def _follow(loc: list[Any], body: Any, missing: bool) -> tuple[tuple[Any, ...], bool]:
    """``loc`` without the union members pydantic names in it: the parts found in the body."""
    path: list[Any] = []
    node = body
    is_key = False
    for i, part in enumerate(loc):
        if _has(node, part):
            path.append(part)
            node = node[part]
        elif part == "[key]":
            is_key = True
        elif i == len(loc) - 1 and missing and isinstance(part, str):
            path.append(part)
    return tuple(path), is_key


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return isinstance(part, str) and part in node
    return isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)


def _is_mismatch(error: dict[str, Any]) -> bool:
    kind_ = error.get("type")
    if kind_ in _TYPE_NAMES:
        return True
    # A literal (or a tagged union) offered a value of another JSON type altogether.
    return kind_ == "literal_error" and not isinstance(error.get("input"), str)


def pick(issues: list[_Issue]) -> list[_Issue]:
    """The issues that explain the failure: a union member's type mismatch is dropped
    when another member matched the input's type and failed for a reason of its own."""
    kept = []
    for issue in issues:
        if issue.mismatch and any(
            other is not issue and other.path[: len(issue.path)] == issue.path
            and not (other.mismatch and other.path == issue.path)
            for other in issues
        ):
            continue
        kept.append(issue)
    return kept or issues


def explain(errors: Sequence[dict[str, Any]], body: Any) -> tuple[str, str | None]:
    """The message and the ``param`` for pydantic ``errors`` about ``body`` (the parsed
    JSON, or what FastAPI read): the field first, then the reason."""
    issues = pick([_Issue(dict(e), body) for e in errors])
    first = issues[0]
    same = [i for i in issues if i.path == first.path and i.source == first.source
            and i.mismatch and first.mismatch]
    field = display(first.path[:-1] if first.is_key else first.path)
    message = _sentence(first, field, same, body)
    others = {(i.source, i.path) for i in issues} - {(first.source, first.path)}
    if others:
        n = len(others)
        message += f" ({n} more problem{'s' if n > 1 else ''} in `detail`.)"
    return message, field or None


def _sentence(issue: _Issue, field: str, same: list[_Issue], body: Any) -> str:
    error = issue.error
    kind_ = issue.type
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    value = error.get("input")
    name = f"'{field}'" if field else "The request body"
    if issue.is_key:
        name = f"the key {shown(issue.path[-1])} of '{field}'" if field else "a key of the body"
    if issue.mismatch:
        wanted: list[str] = []
        for i in same or [issue]:
            noun = _TYPE_NAMES.get(i.type) or _literal(i.error)
            if noun not in wanted:
                wanted.append(noun)
        expected = " or ".join(wanted)
        if not field:
            return f"The request body must be {expected}, not {kind(value)}."
        return f"Invalid type for {name}: expected {expected}, but got {kind(value)} instead."
    if kind_ == "missing":
        if field:
            return f"Missing required parameter: {name}."
        if issue.source == "body" and body is None:  # FastAPI reads a body of null as none
            return "The request body must be an object, not null."
        return "The request body is empty: send a JSON object."
    if kind_ == "extra_forbidden":
        return f"Unrecognized parameter: {name}."
    if kind_ in ("too_long", "too_short"):
        actual = ctx.get("actual_length", len(value) if isinstance(value, list | str) else "?")
        bound = ctx.get("max_length" if kind_ == "too_long" else "min_length")
        limit = "at most" if kind_ == "too_long" else "at least"
        items = "item" if actual == 1 else "items"
        allowed = ("is" if bound == 1 else "are") + (
            " allowed" if kind_ == "too_long" else " required")
        return f"{name} has {actual} {items}; {limit} {bound} {allowed}."
    if kind_ in ("string_too_long", "string_too_short"):
        actual = len(value) if isinstance(value, str) else "?"
        if kind_ == "string_too_short" and actual == 0:
            return f"{name} must not be empty."
        bound = ctx.get("max_length" if kind_ == "string_too_long" else "min_length")
        limit = "at most" if kind_ == "string_too_long" else "at least"
        return f"{name} is {actual} characters long; {limit} {bound} are allowed."
    bounds = {"greater_than_equal": ("at least", "ge"), "less_than_equal": ("at most", "le"),
              "greater_than": ("greater than", "gt"), "less_than": ("less than", "lt")}
    if kind_ in bounds:
        words, key = bounds[kind_]
        return f"{name} must be {words} {_number(ctx.get(key))}, but got {shown(value)}."
    if kind_ == "int_from_float":
        return f"Invalid type for {name}: expected an integer, but got a decimal number instead."
    if kind_ == "finite_number":
        return f"{name} must be a finite number, but got {shown(value)}."
    if kind_ == "literal_error":
        return f"Invalid value for {name}: expected {ctx.get('expected')}, but got {shown(value)}."
    if kind_ == "union_tag_invalid":
        return (f"Invalid value for {name}: expected one of {ctx.get('expected_tags')}, "
                f"but got {shown(ctx.get('tag'))}.")
    if kind_ == "union_tag_not_found":
        return f"Missing required parameter: {name}."
    if kind_ == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        form = f"the pattern {pattern}" if len(pattern) <= 40 else "the form the schema gives"
        return f"Invalid value for {name}: {shown(value)} does not match {form}."
    if kind_ in ("value_error", "assertion_error") and "error" in ctx:
        return f"Invalid value for {name}: {ctx['error']}"
    if kind_ == "json_invalid":
        return f"The body is not valid JSON: {ctx.get('error', error.get('msg'))}."
    return f"Invalid value for {name}: {error.get('msg')}."


def _number(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _literal(error: dict[str, Any]) -> str:
    expected = (error.get("ctx") or {}).get("expected")
    return f"one of {expected}" if expected else "another value"

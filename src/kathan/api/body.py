"""Request bodies: one reading of JSON for every route that takes one.

A body is JSON whatever its content type says: ``curl -d '{...}'`` labels it a
form, and OpenAI-compatible clients are used that way. ``load`` is the one
check all routes share, before any schema: the bytes are UTF-8, one standard
JSON value (no ``NaN`` or ``Infinity``), nested at most ``MAX_DEPTH`` deep,
with no key twice in an object, no integer longer than ``MAX_INT_DIGITS`` digits,
no number past a double's range, and no unpaired surrogate (``"\ud800"``, which is no character) in a
string. An integer of any size below that is JSON, as inside a free-form value (a
JSON schema, a tool's parameters); where a field is typed, its schema bounds it.
What fails gets a 422 whose message says what and, when it lies in the
body, where. A NUL is a character like any other here: each schema says where
it may stand (names and emails refuse control characters).

``JSONBodyRoute`` gives FastAPI's routes the same reading; the generation routes
call ``load`` themselves (``deps.read_json``). On every route the key is checked
before the body is judged: a 401 comes before a 422.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message

from kathan.api.explain import display
from kathan.errors import RequestValidationFailed

MAX_DEPTH = 64
REFUSED = "kathan.refused_body"  # scope key: the body's RequestValidationFailed
# CPython's own limit on turning an integer into text and back (sys.int_info's default
# max_str_digits): a longer one could not be written back out, to a store or upstream.
MAX_INT_DIGITS = 4300

_CONSTANTS = {"NaN", "Infinity", "-Infinity"}
# Cheap signs that a body may hold a string ``load`` refuses; only then are its strings walked.
_SUSPECT = re.compile(rb"\\u[dD][89a-fA-F]")


class _Refused(ValueError):
    """A value ``load``'s parser refuses; ``where`` finds it afterwards."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Refused("duplicate_key", f"the key '{key}' appears twice in one object")
            seen.add(key)
    return obj


def _too_long(text: str) -> bool:
    return len(text) - text.startswith("-") > MAX_INT_DIGITS


def _int(text: str) -> int:
    if _too_long(text):
        raise _Refused("number_too_large", f"the integer {text[:12]}... has "
                       f"{len(text) - text.startswith('-')} digits; at most "
                       f"{MAX_INT_DIGITS} are allowed")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused("number_too_large", f"the number {text[:24]} is out of range "
                       "(a double holds up to about 1.8e308)")
    return value


def _constant(text: str) -> Any:
    raise _Refused("json_invalid", f"{text} is not a JSON value")


def _refuse(kind: str, message: str, loc: list[str | int]) -> RequestValidationFailed:
    path = display(loc)
    sentence = (f"Invalid value for '{path}': {message}." if path
                else f"The request body is not valid JSON: {message}.")
    return RequestValidationFailed(
        [{"loc": ["body", *loc], "msg": message, "type": kind}],
        message=sentence, param=path or None)


def load(raw: bytes) -> Any:
    """The body's JSON value, or a ``RequestValidationFailed`` saying what is wrong.

    >>> load(b'{"a": [1, 2.5]}')
    {'a': [1, 2.5]}
    >>> load(b'{"a": 1, "a": 2}')
    Traceback (most recent call last):
    ...
    kathan.errors.RequestValidationFailed: The request body is not valid JSON: the key 'a' appears twice in one object.
    """
    if not raw.strip():
        raise RequestValidationFailed(
            [{"loc": ["body"], "msg": "Field required", "type": "missing"}],
            message="The request body is empty: send a JSON object.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refuse("json_invalid", f"it is not UTF-8 (byte 0x{raw[exc.start]:02x} at "
                      f"offset {exc.start})", []) from None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_int=_int,
                           parse_float=_float, parse_constant=_constant)
    except _Refused as exc:
        raise _refuse(exc.kind, exc.message, _locate(text, exc)) from None
    except json.JSONDecodeError as exc:
        raise _refuse("json_invalid", f"{exc.msg} at line {exc.lineno} column {exc.colno}",
                      []) from None
    except RecursionError:
        raise _refuse("json_invalid", f"it is nested more than {MAX_DEPTH} levels deep",
                      []) from None
    # Nesting past MAX_DEPTH needs that many brackets; most bodies have fewer.
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and _deeper(value):
        # Named by the top-level field it starts in: the full path would be as deep.
        raise _refuse("json_invalid", f"it is nested more than {MAX_DEPTH} levels deep",
                      (_too_deep(value) or [])[:1])
    if _SUSPECT.search(raw):
        found = _bad_string(value, [])
        if found is not None:
            raise _refuse("string_unicode", *found)
    return value


def _locate(text: str, refused: _Refused) -> list[str | int]:
    """Where in the body the value ``refused`` stands: parsed again with markers."""
    marker = object()

    def mark(_: object) -> object:
        return marker

    def pairs(items: list[tuple[str, Any]]) -> Any:
        keys = [k for k, _ in items]
        if len(set(keys)) != len(keys):
            return marker
        return dict(items)

    hooks: dict[str, Any] = {"parse_constant": mark}
    if refused.kind == "duplicate_key":
        hooks["object_pairs_hook"] = pairs
    else:
        hooks["parse_int"] = lambda t: marker if _too_long(t) else 0
        hooks["parse_float"] = lambda t: marker if math.isinf(float(t)) else 0.0
    try:
        value = json.loads(text, **hooks)
    except (ValueError, RecursionError):
        return []
    return _find(value, marker, []) or []


def _find(value: Any, marker: object, loc: list[str | int]) -> list[str | int] | None:
    if value is marker:
        return loc
    items: Any = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found = _find(item, marker, [*loc, key])
        if found is not None:
            return found
    return None


def _deeper(value: Any) -> bool:
    """Whether arrays and objects nest in ``value`` more than ``MAX_DEPTH`` deep."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        for child in node.values() if isinstance(node, dict) else node:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def _too_deep(value: Any) -> list[str | int] | None:
    """The place past ``MAX_DEPTH`` levels of arrays and objects, if there is one."""
    stack: list[tuple[Any, list[str | int]]] = [(value, [])]
    while stack:
        node, loc = stack.pop()
        if isinstance(node, dict | list) and len(loc) >= MAX_DEPTH:
            return loc
        if isinstance(node, dict):
            stack.extend((v, [*loc, k]) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, [*loc, i]) for i, v in enumerate(node))
    return None


def _bad_string(value: Any, loc: list[str | int]) -> tuple[str, list[str | int]] | None:
    """The first string (key or value) holding an unpaired surrogate."""
    if isinstance(value, str):
        return _string_problem(value, loc)
    if isinstance(value, dict):
        for key, item in value.items():
            found = _string_problem(key, loc, key=True) or _bad_string(item, [*loc, key])
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _bad_string(item, [*loc, index])
            if found is not None:
                return found
    return None


def _string_problem(
    text: str, loc: list[str | int], *, key: bool = False
) -> tuple[str, list[str | int]] | None:
    what = "a key" if key else "the string"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        return (f"{what} contains an unpaired surrogate (\\u{code:04x}), which is not a "
                "character"), loc
    return None


class JSONBodyRoute(APIRoute):
    """A FastAPI route whose JSON body is read by ``load``, whatever its content type,
    before FastAPI validates it against the route's model."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def handle(request: Request) -> Response:
            raw = await request.body()
            try:
                load(raw)
            except RequestValidationFailed as refused:
                # Answered in place of FastAPI's 422 for the body, after the route's
                # dependencies: a 401 or 403 comes first, as on the chat route.
                request.scope[REFUSED] = refused
                raw = b"null"
            return await handler(_as_json(request, raw))

        return handle


def _as_json(request: Request, raw: bytes) -> Request:
    """``request`` labelled ``application/json``, its body read again from ``raw``."""
    scope = dict(request.scope)
    scope["headers"] = [(k, v) for k, v in request.scope["headers"] if k != b"content-type"]
    scope["headers"].append((b"content-type", b"application/json"))
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}
        return await request.receive()

    return Request(scope, receive)

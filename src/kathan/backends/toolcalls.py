"""Tool calls as text: the format the local engine writes, and its streaming parser.

A model without tool support in its own chat template is told about tools in
the system message and calls them like this (the Hermes/Qwen convention)::

    <tool_call>
    {"name": "get_weather", "arguments": {"location": "Paris"}}
    </tool_call>

Several calls are several such blocks. The grammar (``engine/grammar.py``)
makes everything from ``<tool_call>`` on well formed, so the parser below can
stream a call's arguments as they are generated, character by character,
without waiting for the call to end.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from kathan.backends.base import ToolCallDelta
from kathan.errors import InvalidRequestError
from kathan.protocol.chat import ChatCompletionRequest, FunctionDefinition, NamedToolChoice

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
RESULT_OPEN = "<tool_response>"
RESULT_CLOSE = "</tool_response>"
# Every tag of the format. None is ever a reply's content (``markup_stops``).
TAGS = (OPEN, CLOSE, RESULT_OPEN, RESULT_CLOSE, "<tools>", "</tools>")
# With tool_choice "auto" the grammar turns on when the model opens a tool tag.
# Small models sometimes open a call with the tag of the results they have seen
# (<tool_response>); from "<tool_" on, the grammar makes it a well-formed call.
TRIGGER = "<tool_"
_WS = " \t\r\n"


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True, slots=True)
class ToolUse:
    """What a request allows: its functions, whether and how they may be called.

    ``choice`` is ``none``, ``auto``, ``required`` or the name of the one
    function that must be called. ``field`` is where the functions came from
    (``tools``, or the legacy ``functions``), for error messages.
    """

    functions: tuple[FunctionDefinition, ...]
    choice: str
    parallel: bool
    field: Literal["tools", "functions"]

    @property
    def several(self) -> bool:
        """Whether one reply may hold several calls (never for a named function)."""
        return self.parallel and self.choice in ("auto", "required")

    @property
    def calls_allowed(self) -> bool:
        return self.choice != "none"

    @property
    def callable(self) -> tuple[tuple[int, FunctionDefinition], ...]:
        """The functions a call may name, with their positions in the request."""
        return tuple(
            (i, f)
            for i, f in enumerate(self.functions)
            if self.choice in ("auto", "required") or f.name == self.choice
        )

    def where(self, i: int) -> str:
        return f"tools[{i}].function" if self.field == "tools" else f"functions[{i}]"


def tool_use(request: ChatCompletionRequest) -> ToolUse | None:
    """Check the request's tool fields and resolve the legacy ones onto tools.

    Raises ``InvalidRequestError`` naming the field for what cannot be meant.
    """
    if request.tools and request.functions:
        raise InvalidRequestError(
            "Send either 'tools' or the legacy 'functions', not both.", param="functions"
        )
    if request.functions:
        if request.tool_choice is not None or request.parallel_tool_calls is not None:
            field = "tool_choice" if request.tool_choice is not None else "parallel_tool_calls"
            raise InvalidRequestError(
                f"'{field}' goes with 'tools'; with the legacy 'functions' use 'function_call'.",
                param=field,
            )
        functions = tuple(request.functions)
        legacy = request.function_call
        choice = legacy.name if legacy is not None and not isinstance(legacy, str) else (
            legacy or "auto"
        )
        use = ToolUse(functions, choice, parallel=False, field="functions")
    elif request.tools:
        if request.function_call is not None:
            raise InvalidRequestError(
                "'function_call' goes with the legacy 'functions'; with 'tools' use "
                "'tool_choice'.",
                param="function_call",
            )
        functions = tuple(t.function for t in request.tools)
        tc = request.tool_choice
        choice = tc.function.name if isinstance(tc, NamedToolChoice) else (tc or "auto")
        parallel = True if request.parallel_tool_calls is None else request.parallel_tool_calls
        use = ToolUse(functions, choice, parallel=parallel, field="tools")
    else:
        for field in ("tool_choice", "parallel_tool_calls", "function_call"):
            if getattr(request, field) is not None:
                wants = "functions" if field == "function_call" else "tools"
                raise InvalidRequestError(
                    f"'{field}' is only allowed when '{wants}' are given.", param=field
                )
        return None
    seen: set[str] = set()
    for i, f in enumerate(use.functions):
        if f.name in seen:
            raise InvalidRequestError(
                f"Two functions are named '{f.name}'; names must be unique.",
                param=f"{use.where(i)}.name",
            )
        seen.add(f.name)
        params = f.parameters
        if params is not None and params.get("type", "object") != "object":
            raise InvalidRequestError(
                f"The parameters of '{f.name}' must be a JSON Schema of type 'object'.",
                param=f"{use.where(i)}.parameters",
            )
    if use.choice not in ("none", "auto", "required") and use.choice not in seen:
        field = "tool_choice" if use.field == "tools" else "function_call"
        raise InvalidRequestError(
            f"{field} names function '{use.choice}', which is not among the {use.field}.",
            param=field,
        )
    return use


Piece = str | ToolCallDelta


def call_text(name: str, arguments: str) -> str:
    """One call in the text format, as the model would write it."""
    try:
        args: Any = json.loads(arguments) if arguments.strip() else {}
    except json.JSONDecodeError:
        args = arguments  # a caller's malformed history is shown to the model as it was
    body = json.dumps({"name": name, "arguments": args}, ensure_ascii=False)
    return f"{OPEN}\n{body}\n{CLOSE}"


def tools_system_prompt(tools: list[dict[str, Any]], *, parallel: bool) -> str:
    """The fallback instructions that tell a model about its tools."""
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    how_many = (
        "You may call one or more functions; write one block per call."
        if parallel
        else "Call at most one function per reply."
    )
    return (
        "You can call functions to help answer. They are described, as JSON Schema, "
        f"inside <tools></tools>:\n<tools>\n{listing}\n</tools>\n"
        "To call a function, reply with a JSON object holding its name and arguments "
        f"inside {OPEN}{CLOSE} tags:\n"
        f'{OPEN}\n{{"name": "<function name>", "arguments": {{<arguments>}}}}\n{CLOSE}\n'
        f"{how_many} Results come back inside {RESULT_OPEN}{RESULT_CLOSE} tags."
    )


def tool_response_text(content: str, *, name: str | None) -> str:
    head = json.dumps({"name": name}, ensure_ascii=False) + "\n" if name else ""
    return f"{RESULT_OPEN}\n{head}{content}\n{RESULT_CLOSE}"


def markup_stops(template_markup: Iterable[str], use: ToolUse | None) -> tuple[str, ...]:
    """The markup that ends a reply where the model writes it, as a stop string would.

    The format's tags and the chat template's own markers are for the prompt,
    never for a client. A model that starts writing one (a tool result of its
    own after a real one, a new turn) has ended its useful answer, so the reply
    stops there with ``finish_reason`` ``stop``. Where calls may be made, the
    call tags are left to ``ToolCallParser``, which turns them into calls.

    >>> markup_stops(["<|im_end|>"], None)
    ('<tool_call>', '</tool_call>', '<tool_response>', '</tool_response>', '<tools>', \
'</tools>', '<|im_end|>')
    """
    parsed = (OPEN, CLOSE) if use is not None and use.calls_allowed else ()
    return tuple(dict.fromkeys(t for t in (*TAGS, *template_markup) if t not in parsed))


# Parser states.
_TEXT, _HEAD, _ARGS, _TAIL, _DONE = range(5)

# The head of a call, token by token: ``{"name": "<name>", "arguments": ``.
_HEAD_STEPS: tuple[str, ...] = ("{", '"name"', ":", "<name>", ",", '"arguments"', ":")


class ToolCallParser:
    """Splits one choice's generated text into content and tool-call pieces.

    >>> p = ToolCallParser(new_id=lambda: "call_1")
    >>> p.feed('Sure.<tool_call>\\n{"name": "f", "arguments": {"a": 1}}\\n</tool_call>')
    ['Sure.', ToolCallDelta(index=0, id='call_1', name='f', arguments=''), \
ToolCallDelta(index=0, id=None, name=None, arguments='{"a": 1}')]

    Text that might be the start of ``<tool_call>`` is held back until it is
    known. Whitespace next to calls is not content: a reply that only calls
    tools has no content at all.

    A call that repeats an earlier call of the same reply exactly (same name,
    same arguments) is a model stuck in a loop: it is dropped, ``repeated``
    turns true and everything after it is ignored, so the caller can end the
    choice. To make that possible without taking back streamed pieces, a
    call's pieces are held back only while its text so far matches an
    earlier call's.

    The tags are never content. A closing tag outside a call, or a call
    that is not well formed (the grammar makes both rare), means the model
    has left the format: the reply ends there (``done``), as it does after a
    repeated call.
    """

    def __init__(self, new_id: Callable[[], str] = new_call_id) -> None:
        self._new_id = new_id
        self._buf = ""
        self._state = _TEXT
        self._ws = ""  # whitespace held back in the text state
        self.calls = 0
        # head parsing
        self._step = 0
        self._name: list[str] = []
        self._escape = False
        # argument scanning
        self._depth = 0
        self._in_string = False
        self._started = False
        # loop detection
        self._made: list[tuple[str, str]] = []
        self._name_now = ""
        self._args_now = ""
        self._held: list[ToolCallDelta] | None = None
        self.repeated = False

    def feed(self, text: str) -> list[Piece]:
        self._buf += text
        out: list[Piece] = []
        while self._buf:
            before = (self._state, len(self._buf))
            if self._state == _TEXT:
                self._text(out)
            elif self._state == _HEAD:
                self._head(out)
            elif self._state == _ARGS:
                self._args(out)
            elif self._state == _TAIL:
                self._tail(out)
            else:
                self._buf = ""  # the reply is over (``done``): ignored
            if (self._state, len(self._buf)) == before:
                break  # needs more text
        return out

    @property
    def done(self) -> bool:
        """Whether the reply is over for the parser (a repeated call, a stray closing
        tag, a malformed call): what follows is ignored, and the choice may end."""
        return self._state == _DONE

    def finish(self, *, cut: bool = False) -> list[Piece]:
        """End of the choice: whatever is held back, as far as it is the reply's.

        ``cut`` says the choice was cut short (``max_tokens``). A call cut
        there goes out as far as it was written, as OpenAI sends one: once its
        name is complete, as a call with that name and the arguments so far.
        A call cut before its name was complete is dropped: its name is no
        function's, and a client that dispatches on names must never see one
        (the reply's ``finish_reason`` is ``length`` either way). The start of
        a tag held back at a cut is dropped too; at the model's own end it was
        text.
        """
        out: list[Piece] = []
        if self._state == _TEXT:
            held = _partial_suffix(self._buf, OPEN, CLOSE) if cut else 0
            self._content(out, self._buf[: len(self._buf) - held])
            if self._ws and not self.calls and not held:
                out.append(self._ws)
        elif self._state == _HEAD and self._step > _HEAD_STEPS.index("<name>"):
            out.append(self._header())
        elif self._state == _ARGS:
            if self._buf:
                self._fragment(out, self._buf)
            self._release(out)
        self._buf = self._ws = ""
        return out

    # -- states ---------------------------------------------------------------

    def _content(self, out: list[Piece], text: str) -> None:
        # Trailing whitespace is held: it may only separate the text from a call.
        body = text.rstrip(_WS)
        if not body:
            self._ws += text
            return
        body = self._ws + body
        self._ws = text[len(text.rstrip(_WS)) :]
        out.append(body.lstrip(_WS) if self.calls else body)

    def _text(self, out: list[Piece]) -> None:
        buf = self._buf
        at = buf.find(OPEN)
        stray = buf.find(CLOSE, 0, len(buf) if at < 0 else at)
        if stray >= 0:
            # A closing tag outside any call: the model has left the reply's
            # format, and nothing after it is the reply's.
            self._content(out, buf[:stray])
            self._buf = ""
            self._state = _DONE
            return
        if at >= 0:
            self._content(out, buf[:at])
            self._ws = ""
            self._buf = buf[at + len(OPEN) :]
            self._state = _HEAD
            self._step = 0
            self._name = []
            return
        keep = _partial_suffix(buf, OPEN, CLOSE)
        self._content(out, buf[: len(buf) - keep])
        self._buf = buf[len(buf) - keep :]

    def _head(self, out: list[Piece]) -> None:
        i, buf = 0, self._buf
        while i < len(buf) and self._step < len(_HEAD_STEPS):
            want = _HEAD_STEPS[self._step]
            ch = buf[i]
            if want == "<name>":
                if not self._name:
                    if ch in _WS:
                        i += 1
                        continue
                    if ch != '"':
                        return self._malformed(out, i)
                    self._name.append("")
                    i += 1
                    continue
                if self._escape:
                    self._name.append(ch)
                    self._escape = False
                elif ch == "\\":
                    self._name.append(ch)
                    self._escape = True
                elif ch == '"':
                    self._step += 1
                else:
                    self._name.append(ch)
                i += 1
                continue
            if ch in _WS:
                i += 1
                continue
            if len(buf) - i < len(want) and want.startswith(buf[i:]):
                break  # a partial literal: wait for more
            if not buf.startswith(want, i):
                return self._malformed(out, i)
            i += len(want)
            self._step += 1
        self._buf = buf[i:]
        if self._step == len(_HEAD_STEPS):
            header = self._header()
            if any(made == header.name for made, _ in self._made):
                self._held = [header]
            else:
                out.append(header)
            self._state = _ARGS
            self._depth = 0
            self._in_string = self._escape = self._started = False
        return None

    def _header(self) -> ToolCallDelta:
        """The next call's first piece (its id and name), once the name is complete."""
        raw_name = "".join(self._name)
        try:
            name = json.loads(f'"{raw_name}"')
        except json.JSONDecodeError:
            name = raw_name
        header = ToolCallDelta(self.calls, id=self._new_id(), name=name)
        self._name_now, self._args_now = name, ""
        self.calls += 1
        return header

    def _malformed(self, out: list[Piece], at: int) -> None:
        """Not a call after all (the grammar makes this rare): the model has left the
        reply's format. The tag and what follows are not content; the reply is over."""
        self._buf = ""
        self._state = _DONE

    def _args(self, out: list[Piece]) -> None:
        buf = self._buf
        i = 0
        if not self._started:
            while i < len(buf) and buf[i] in _WS:
                i += 1
            if i == len(buf):
                self._buf = ""
                return
            self._started = True
        start = i
        while i < len(buf):
            ch = buf[i]
            i += 1
            if self._in_string:
                if self._escape:
                    self._escape = False
                elif ch == "\\":
                    self._escape = True
                elif ch == '"':
                    self._in_string = False
            elif ch == '"':
                self._in_string = True
            elif ch in "{[":
                self._depth += 1
            elif ch in "}]":
                self._depth -= 1
                if self._depth == 0:
                    break
            elif self._depth == 0 and ch in _WS + ",}":
                i -= 1  # a bare scalar ended
                break
        else:
            if start < len(buf):
                self._fragment(out, buf[start:])
            self._buf = ""
            return
        if start < i:
            self._fragment(out, buf[start:i])
        self._buf = buf[i:]
        self._state = _TAIL
        self._step = 0
        call = (self._name_now, self._args_now)
        if self._held is not None and call in self._made:
            self._held = None
            self.calls -= 1
            self.repeated = True
            self._state = _DONE
            self._buf = ""
            return
        self._made.append(call)
        self._release(out)

    def _fragment(self, out: list[Piece], text: str) -> None:
        piece = ToolCallDelta(self.calls - 1, arguments=text)
        self._args_now += text
        if self._held is None:
            out.append(piece)
            return
        self._held.append(piece)
        name, args = self._name_now, self._args_now
        if not any(n == name and a.startswith(args) for n, a in self._made):
            self._release(out)

    def _release(self, out: list[Piece]) -> None:
        if self._held:
            header, *fragments = self._held
            out.append(header)
            if fragments:
                text = "".join(f.arguments for f in fragments)
                out.append(ToolCallDelta(header.index, arguments=text))
        self._held = None

    def _tail(self, out: list[Piece]) -> None:
        """After the arguments: ``}`` and ``</tool_call>``, with any whitespace."""
        buf = self._buf
        i = 0
        for want in ("}", CLOSE)[self._step :]:
            while i < len(buf) and buf[i] in _WS:
                i += 1
            if len(buf) - i < len(want) and want.startswith(buf[i:]):
                self._buf = buf[i:]
                return
            if not buf.startswith(want, i):
                break  # not the expected closing: treat the rest as text
            i += len(want)
            self._step += 1
        self._buf = buf[i:]
        self._state = _TEXT


def _partial_suffix(text: str, *tags: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of one of ``tags``."""
    for n in range(min(len(text), max(len(t) for t in tags) - 1), 0, -1):
        tail = text[-n:]
        if any(len(tag) > n and tag.startswith(tail) for tag in tags):
            return n
    return 0

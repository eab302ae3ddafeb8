"""OpenAI's Responses API (``client.responses``, the official openai SDK) and Anthropic's
Messages API (``client.messages``, the official anthropic SDK) against a gateway Kathan
whose models are upstream deployments: strict local fakes of OpenAI's chat completions,
Gemini's ``generateContent`` and Anthropic's Messages (``tests/upstreams``). For each:
the text and tool calls are the ones the upstream sent, the usage is the upstream's,
the upstream received what was asked (instructions/system, max tokens, temperature,
tools, the tool result of a round trip), and an upstream failure reaches the SDK as the
right exception type.

One Kathan process serves the three models for the whole module; the fakes run on an
event loop of their own in a background thread, so the tests use the SDKs' plain
(blocking) clients.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from openai import OpenAI

from tests.conftest import LiveServer, start_server, stop_server
from tests.upstreams import anthropic_fake, gemini_fake, openai_fake

OPENAI_KEY = "sk-openai-upstream"
GEMINI_KEY = "gemini-upstream-key"
ANTHROPIC_KEY = "sk-ant-upstream"
GEMINI_MODEL = "gemini-2.5-flash"

WEATHER_PARAMETERS = {"type": "object", "properties": {"location": {"type": "string"}},
                      "required": ["location"]}
# The same parameters in Gemini's OpenAPI subset, as Kathan sends them there.
GEMINI_PARAMETERS = {"type": "OBJECT", "properties": {"location": {"type": "STRING"}},
                     "required": ["location"]}
WEATHER = {"type": "function", "name": "get_weather",
           "description": "Get the current weather in a location",
           "parameters": WEATHER_PARAMETERS}
ANTHROPIC_WEATHER = {"name": "get_weather",
                     "description": "Get the current weather in a location",
                     "input_schema": WEATHER_PARAMETERS}

# What each fake answers, and the usage Kathan reports for it.
OPENAI_TEXT = "Hello from the fake upstream."
GEMINI_TEXT = "AI learns patterns from examples instead of following hand-written rules."
ANTHROPIC_TEXT = "Hello! How can I help you today?"
QUESTION = "What's the weather in Paris?"
ANTHROPIC_PREAMBLE = "Okay, let's check the weather for San Francisco, CA:"


@dataclass(frozen=True)
class Usage:
    prompt: int  # every input token, cached ones included
    cached: int
    output: int


TEXT = {"gpt": OPENAI_TEXT, "gemini": GEMINI_TEXT, "claude": ANTHROPIC_TEXT}
USAGE = {
    "gpt": Usage(prompt=7, cached=0, output=len(OPENAI_TEXT.split())),
    # gemini_text.sse: promptTokenCount 5, cachedContentTokenCount 2, candidates 12 +
    # thoughts 24 (reasoning is output).
    "gemini": Usage(prompt=5, cached=2, output=36),
    # anthropic_text.sse: input_tokens 13 + cache_read_input_tokens 12, output_tokens 15.
    "claude": Usage(prompt=25, cached=12, output=15),
}
# What each fake says when it is scripted to fail (``Fakes.fail``).
UPSTREAM_ERROR = {"gpt": "upstream trouble", "gemini": "Scripted failure",
                  "claude": "Scripted failure"}
# What each fake says when its stream breaks (``Fakes.break_stream``).
UPSTREAM_STREAM_ERROR = {"gpt": "upstream overloaded", "gemini": "The model is overloaded.",
                         "claude": "Overloaded"}
# The call each fake makes, with its arguments.
CALL_ARGUMENTS = {
    "gpt": json.loads(openai_fake.Script().tool_arguments),
    "gemini": {"location": "London"},
    "claude": {"location": "San Francisco, CA", "unit": "fahrenheit"},
}


class Fakes:
    """The three upstream fakes, served on an event loop in a thread of their own."""

    def __init__(self) -> None:
        self.openai = openai_fake.Script(api_key=OPENAI_KEY)
        self.gemini = gemini_fake.Script(api_key=GEMINI_KEY)
        self.anthropic_app = anthropic_fake.make_app(api_key=ANTHROPIC_KEY)
        self.urls: dict[str, str] = {}
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._stop: asyncio.Event | None = None
        self._running: Any = None

    @property
    def anthropic(self) -> anthropic_fake.FakeState:
        return self.anthropic_app[anthropic_fake.STATE]

    def start(self) -> None:
        self._thread.start()
        ready = threading.Event()

        async def run() -> None:
            self._stop = asyncio.Event()
            async with AsyncExitStack() as stack:
                self.urls["openai"] = await stack.enter_async_context(
                    openai_fake.serve(self.openai))
                self.urls["gemini"] = await stack.enter_async_context(
                    gemini_fake.serve(self.gemini))
                self.urls["anthropic"] = await stack.enter_async_context(
                    anthropic_fake.serve(self.anthropic_app))
                ready.set()
                await self._stop.wait()

        self._running = asyncio.run_coroutine_threadsafe(run(), self._loop)
        if not ready.wait(30):
            self._running.result(0)  # raises what went wrong
            raise RuntimeError("the fakes did not start")

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._running.result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def received(self, model: str) -> dict[str, Any]:
        """The last body the upstream serving ``model`` accepted."""
        requests = {"gpt": self.openai.requests, "gemini": self.gemini.requests,
                    "claude": self.anthropic.requests}[model]
        assert requests, f"the upstream of {model} received nothing"
        return requests[-1]

    def count(self, model: str) -> int:
        return len({"gpt": self.openai.requests, "gemini": self.gemini.requests,
                    "claude": self.anthropic.requests}[model])

    def fail(self, model: str, status: int) -> None:
        """Make the upstream of ``model`` answer every request with ``status``."""
        if model == "gpt":
            self.openai.fail_next, self.openai.fail_status = 1_000_000, status
            self.openai.retry_after = 3 if status == 429 else None
        elif model == "gemini":
            self.gemini.status, self.gemini.fail_next = status, 0
            self.gemini.retry_after = 3 if status == 429 else None
        else:
            self.anthropic.script = anthropic_fake.Script(
                status=status, retry_after=3 if status == 429 else None)

    def break_stream(self, model: str) -> str:
        """Make the upstream of ``model`` report an error in its stream after its first
        piece of text; returns that piece."""
        if model == "gpt":
            self.openai.error_after_chunks = 2  # the role chunk, then one word
        elif model == "gemini":
            self.gemini.error_after = 1
        else:  # message_start, content_block_start, ping, one text delta
            self.anthropic.script = anthropic_fake.Script(error_after=4)
        return {"gpt": "Hello", "gemini": "AI learns", "claude": "Hello"}[model]

    def heal(self) -> None:
        self.openai.fail_next, self.openai.retry_after = 0, None
        self.openai.error_after_chunks, self.gemini.error_after = None, None
        self.gemini.status, self.gemini.retry_after = None, None
        self.anthropic.script = anthropic_fake.Script()


def config(urls: dict[str, str]) -> str:
    # No retries and a circuit that does not open: each scripted failure is one answer.
    return f"""\
local: null
routing: {{retries: 0, backoff_seconds: 0, breaker_failures: 1000}}
models:
  - id: gpt
    deployments:
      - {{backend: openai, base_url: "{urls['openai']}", api_key_env: OPENAI_KEY,
          model: gpt-4o}}
  - id: gemini
    deployments:
      - {{backend: gemini, base_url: "{urls['gemini']}", api_key_env: GEMINI_KEY,
          model: {GEMINI_MODEL}}}
  - id: claude
    deployments:
      - {{backend: anthropic, base_url: "{urls['anthropic']}", api_key_env: ANTHROPIC_KEY,
          model: claude-opus-4-6}}
"""


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    world = Fakes()
    world.start()
    try:
        yield world
    finally:
        world.close()


@pytest.fixture(scope="module")
def gateway(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("dialects"), config(fakes.urls), {
        "OPENAI_KEY": OPENAI_KEY, "GEMINI_KEY": GEMINI_KEY, "ANTHROPIC_KEY": ANTHROPIC_KEY})
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture
def upstreams(fakes: Fakes) -> Iterator[Fakes]:
    """The fakes, well-behaved again after each test."""
    fakes.heal()
    try:
        yield fakes
    finally:
        fakes.heal()


@pytest.fixture(scope="module")
def oa(gateway: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=gateway.v1, api_key=gateway.api_key, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def an(gateway: LiveServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.base_url, api_key=gateway.api_key,
                             max_retries=0) as c:
        yield c


# -- what each upstream received, in its own wire format ------------------------------


def asked(fakes: Fakes, model: str) -> dict[str, Any]:
    """The system prompt, max tokens and temperature the upstream of ``model`` got."""
    body = fakes.received(model)
    if model == "gpt":
        system = [m["content"] for m in body["messages"] if m["role"] == "system"]
        return {"system": "".join(system), "max_tokens": body.get("max_tokens"),
                "temperature": body.get("temperature")}
    if model == "gemini":
        parts = (body.get("systemInstruction") or {}).get("parts") or []
        generation = body.get("generationConfig") or {}
        return {"system": "".join(p["text"] for p in parts),
                "max_tokens": generation.get("maxOutputTokens"),
                "temperature": generation.get("temperature")}
    system = body.get("system") or ""
    if isinstance(system, list):
        system = "".join(block["text"] for block in system)
    return {"system": system, "max_tokens": body["max_tokens"],
            "temperature": body.get("temperature")}


def tools_sent(fakes: Fakes, model: str) -> list[tuple[str, str, dict[str, Any]]]:
    """The tools (name, description, parameters) the upstream of ``model`` was offered."""
    body = fakes.received(model)
    if model == "gpt":
        return [(t["function"]["name"], t["function"]["description"],
                 t["function"]["parameters"]) for t in body["tools"]]
    if model == "gemini":
        return [(d["name"], d["description"], d["parameters"])
                for tool in body["tools"] for d in tool["functionDeclarations"]]
    return [(t["name"], t["description"], t["input_schema"]) for t in body["tools"]]


def history_sent(fakes: Fakes, model: str) -> list[tuple[str, Any]]:
    """The conversation the upstream of ``model`` got last, in one form for the three:
    ``("user", text)``, ``("assistant", text)``, ``("call", (id, name, arguments))`` (Gemini
    calls have no id) and ``("result", (call id or name, text))``."""
    body = fakes.received(model)
    out: list[tuple[str, Any]] = []
    if model == "gpt":
        for m in body["messages"]:
            if m["role"] in ("user", "assistant") and m.get("content"):
                out.append((m["role"], m["content"]))
            for c in m.get("tool_calls") or ():
                out.append(("call", (c["id"], c["function"]["name"],
                                     json.loads(c["function"]["arguments"]))))
            if m["role"] == "tool":
                out.append(("result", (m["tool_call_id"], m["content"])))
    elif model == "gemini":
        for turn in body["contents"]:
            for part in turn["parts"]:
                if "text" in part:
                    out.append(("user" if turn["role"] == "user" else "assistant",
                                part["text"]))
                elif "functionCall" in part:
                    call = part["functionCall"]
                    out.append(("call", (None, call["name"], call["args"])))
                else:
                    answer = part["functionResponse"]
                    out.append(("result", (answer["name"], answer["response"]["content"])))
    else:
        for m in body["messages"]:
            blocks = m["content"]
            for b in [{"type": "text", "text": blocks}] if isinstance(blocks, str) else blocks:
                if b["type"] == "text":
                    out.append((m["role"], b["text"]))
                elif b["type"] == "tool_use":
                    out.append(("call", (b["id"], b["name"], b["input"])))
                else:
                    content = b.get("content")
                    out.append(("result", (b["tool_use_id"], content if isinstance(
                        content, str) else "".join(p["text"] for p in content or ()))))
    return out


def weather_as_sent(model: str) -> list[tuple[str, str, dict[str, Any]]]:
    """``WEATHER`` as the upstream of ``model`` should have been offered it."""
    return [("get_weather", WEATHER["description"],  # type: ignore[list-item]
             GEMINI_PARAMETERS if model == "gemini" else WEATHER_PARAMETERS)]


# An upstream's status -> what Kathan answers, as the openai and the anthropic SDK raise it:
# its own 400 comes back with its message; 429 stays 429 with the upstream's Retry-After;
# a 5xx (retried nowhere here) is a 503 saying no deployment could answer.
FAILURES: dict[int, tuple[int, type[openai.APIStatusError], type[anthropic.APIStatusError]]] = {
    400: (400, openai.BadRequestError, anthropic.BadRequestError),
    429: (429, openai.RateLimitError, anthropic.RateLimitError),
    500: (503, openai.InternalServerError, anthropic.ServiceUnavailableError),
    503: (503, openai.InternalServerError, anthropic.ServiceUnavailableError),
}


def check_failure(response: Any, status: int, model: str) -> None:
    """What the error answer for an upstream ``status`` says."""
    headers, text = response.headers, response.text
    if status == 400:
        assert UPSTREAM_ERROR[model] in text
    elif status == 429:
        assert headers["retry-after"] == "3"
    else:
        assert headers["retry-after"]


# -- Responses --------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt", "gemini", "claude"])
def test_a_response_and_its_stream_carry_the_upstreams_answer(
    oa: OpenAI, upstreams: Fakes, model: str
) -> None:
    ask: dict[str, Any] = {"model": model, "input": "Hello!", "instructions": "Be brief.",
                           "max_output_tokens": 50, "temperature": 0.5, "store": False}
    response = oa.responses.create(**ask)
    assert response.status == "completed" and response.model == model
    [message] = response.output
    assert message.type == "message" and message.role == "assistant"
    assert response.output_text == TEXT[model]
    usage = USAGE[model]
    assert response.usage is not None
    assert response.usage.input_tokens == usage.prompt
    assert response.usage.input_tokens_details.cached_tokens == usage.cached
    assert response.usage.output_tokens == usage.output
    assert response.usage.total_tokens == usage.prompt + usage.output
    assert asked(upstreams, model) == {"system": "Be brief.", "max_tokens": 50,
                                       "temperature": 0.5}
    with oa.responses.stream(**ask) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == TEXT[model] == final.output_text
    assert final.usage is not None and final.usage.model_dump() == response.usage.model_dump()
    assert asked(upstreams, model) == {"system": "Be brief.", "max_tokens": 50,
                                       "temperature": 0.5}


@pytest.mark.parametrize("model", ["gpt", "gemini", "claude"])
def test_a_function_call_round_trip_through_responses(
    oa: OpenAI, upstreams: Fakes, model: str
) -> None:
    first = oa.responses.create(model=model, input=QUESTION, instructions="Be brief.",
                                tools=[WEATHER], max_output_tokens=200)  # type: ignore[list-item]
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather"
    assert json.loads(call.arguments) == CALL_ARGUMENTS[model]
    if model == "gpt":
        assert call.call_id == openai_fake.TOOL_CALL_ID
    # Anthropic's recording says something before its call.
    assert first.output_text == (ANTHROPIC_PREAMBLE if model == "claude" else "")
    assert [item.type for item in first.output] == (
        ["message", "function_call"] if model == "claude" else ["function_call"])
    assert tools_sent(upstreams, model) == weather_as_sent(model)
    # The same call, streamed: its arguments in pieces.
    with oa.responses.stream(model=model, input=QUESTION,
                             tools=[WEATHER], max_output_tokens=200,  # type: ignore[list-item]
                             store=False) as stream:
        events = list(stream)
        final = stream.get_final_response()
    pieces = [e.delta for e in events if e.type == "response.function_call_arguments.delta"]
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert "".join(pieces) == done.arguments
    [again] = [item for item in final.output if item.type == "function_call"]
    assert (again.name, json.loads(again.arguments)) == (call.name, json.loads(call.arguments))
    # The result goes back, continuing the stored response (whose instructions are not
    # carried over, as at OpenAI: the new ones are the system prompt).
    result = "Sunny, 18 degrees."
    before = upstreams.count(model)
    second = oa.responses.create(
        model=model, previous_response_id=first.id, tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="none", max_output_tokens=200, instructions="Answer in French.",
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": result}])
    assert upstreams.count(model) == before + 1
    assert second.output_text == TEXT[model]
    assert second.previous_response_id == first.id
    assert asked(upstreams, model)["system"] == "Answer in French."
    answered = "get_weather" if model == "gemini" else call.call_id
    assert history_sent(upstreams, model) == [
        ("user", QUESTION),
        *([("assistant", ANTHROPIC_PREAMBLE)] if model == "claude" else []),
        ("call", (None if model == "gemini" else call.call_id, "get_weather",
                  CALL_ARGUMENTS[model])),
        ("result", (answered, result))]


@pytest.mark.parametrize("model", ["gpt", "gemini", "claude"])
@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_an_upstream_failure_reaches_the_responses_client(
    oa: OpenAI, upstreams: Fakes, model: str, status: int
) -> None:
    answered, error = FAILURES[status][0], FAILURES[status][1]
    upstreams.fail(model, status)
    ask: dict[str, Any] = {"model": model, "input": "Hello!", "store": False}
    with pytest.raises(error) as info:
        oa.responses.create(**ask)
    assert type(info.value) is error and info.value.status_code == answered
    check_failure(info.value.response, status, model)
    with pytest.raises(error) as streamed, oa.responses.stream(**ask) as stream:
        list(stream)
    assert type(streamed.value) is error and streamed.value.status_code == answered
    upstreams.heal()
    assert oa.responses.create(**ask).output_text == TEXT[model]


# -- Messages ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["gpt", "gemini"])
def test_a_message_and_its_stream_carry_the_upstreams_answer(
    an: anthropic.Anthropic, upstreams: Fakes, model: str
) -> None:
    # This SDK version sends sampling parameters as extras.
    ask: dict[str, Any] = {"model": model, "max_tokens": 50, "system": "Be brief.",
                           "extra_body": {"temperature": 0.5},
                           "messages": [{"role": "user", "content": "Hello!"}]}
    message = an.messages.create(**ask)
    assert message.type == "message" and message.model == model
    [block] = message.content
    assert block.type == "text" and block.text == TEXT[model]
    assert message.stop_reason == "end_turn"
    usage = USAGE[model]
    assert message.usage.input_tokens == usage.prompt - usage.cached
    assert message.usage.cache_read_input_tokens == usage.cached
    assert message.usage.output_tokens == usage.output
    assert asked(upstreams, model) == {"system": "Be brief.", "max_tokens": 50,
                                       "temperature": 0.5}
    with an.messages.stream(**ask) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == TEXT[model]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == usage.output
    assert final.usage.input_tokens == usage.prompt - usage.cached
    assert asked(upstreams, model) == {"system": "Be brief.", "max_tokens": 50,
                                       "temperature": 0.5}


@pytest.mark.parametrize("model", ["gpt", "gemini"])
def test_a_tool_use_round_trip_through_messages(
    an: anthropic.Anthropic, upstreams: Fakes, model: str
) -> None:
    ask: list[Any] = [{"role": "user", "content": QUESTION}]
    message = an.messages.create(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER],
                                 messages=ask)  # type: ignore[list-item]
    assert message.stop_reason == "tool_use"
    [use] = message.content
    assert use.type == "tool_use"
    assert (use.name, use.input) == ("get_weather", CALL_ARGUMENTS[model])
    assert tools_sent(upstreams, model) == weather_as_sent(model)
    with an.messages.stream(model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER],
                            messages=ask) as stream:  # type: ignore[list-item]
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    [again] = streamed.content
    assert again.type == "tool_use" and (again.name, again.input) == (use.name, use.input)
    assert streamed.usage.output_tokens == message.usage.output_tokens
    result = "Sunny, 18 degrees."
    answer = an.messages.create(
        model=model, max_tokens=200, tools=[ANTHROPIC_WEATHER],  # type: ignore[list-item]
        tool_choice={"type": "none"}, messages=[
            *ask, {"role": "assistant", "content": message.content},  # as the SDK returned it
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": result}]}])
    assert answer.stop_reason == "end_turn"
    assert "".join(b.text for b in answer.content if b.type == "text") == TEXT[model]
    answered = "get_weather" if model == "gemini" else use.id
    assert history_sent(upstreams, model) == [
        ("user", QUESTION),
        ("call", (None if model == "gemini" else use.id, "get_weather",
                  CALL_ARGUMENTS[model])),
        ("result", (answered, result))]


@pytest.mark.parametrize("model", ["gpt", "gemini"])
@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_an_upstream_failure_reaches_the_messages_client(
    an: anthropic.Anthropic, upstreams: Fakes, model: str, status: int
) -> None:
    answered, error = FAILURES[status][0], FAILURES[status][2]
    upstreams.fail(model, status)
    ask: dict[str, Any] = {"model": model, "max_tokens": 50,
                           "messages": [{"role": "user", "content": "Hello!"}]}
    with pytest.raises(error) as info:
        an.messages.create(**ask)
    assert type(info.value) is error and info.value.status_code == answered
    check_failure(info.value.response, status, model)
    assert info.value.body["type"] == "error"  # type: ignore[index]
    with pytest.raises(error) as streamed, an.messages.stream(**ask) as stream:
        list(stream)
    assert type(streamed.value) is error and streamed.value.status_code == answered
    upstreams.heal()
    assert an.messages.create(**ask).content[0].text == TEXT[model]  # type: ignore[union-attr]


@pytest.mark.parametrize("model", ["gpt", "gemini", "claude"])
def test_an_upstream_stream_that_breaks_fails_the_response(
    oa: OpenAI, upstreams: Fakes, model: str
) -> None:
    first = upstreams.break_stream(model)
    with oa.responses.stream(model=model, input="Hello!") as stream:
        events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[-2:] == ["error", "response.failed"]
    assert "response.completed" not in kinds
    error, failed = events[-2], events[-1]
    assert error.type == "error" and error.code == "upstream_stream_error"
    assert failed.type == "response.failed" and failed.response.status == "failed"
    assert failed.response.error is not None
    assert failed.response.error.code == "upstream_stream_error"
    assert UPSTREAM_STREAM_ERROR[model] in error.message
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert "".join(deltas) == first == failed.response.output_text


@pytest.mark.parametrize("model", ["gpt", "gemini"])
def test_an_upstream_stream_that_breaks_ends_the_message_stream_with_an_error(
    an: anthropic.Anthropic, upstreams: Fakes, model: str
) -> None:
    first = upstreams.break_stream(model)
    pieces: list[str] = []
    with pytest.raises(anthropic.APIStatusError) as info, an.messages.stream(
            model=model, max_tokens=50,
            messages=[{"role": "user", "content": "Hello!"}]) as stream:
        pieces.extend(stream.text_stream)
    assert "".join(pieces) == first
    # Anthropic's own mid-stream error event, which the SDK raises.
    assert info.value.body == {"type": "error", "error": {
        "type": "overloaded_error", "message": "The upstream failed mid-stream: "
        + UPSTREAM_STREAM_ERROR[model]}}

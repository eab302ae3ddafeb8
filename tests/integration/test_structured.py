"""response_format with the real model: every output parses and validates."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer

MODEL = "smollm2-135m-instruct"

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested": {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "address": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                "required": ["city"],
            },
        },
        "required": ["name", "address"],
    },
    "array": {
        "type": "object",
        "properties": {"colours": {"type": "array", "items": {"type": "string"},
                                   "minItems": 2, "maxItems": 4}},
        "required": ["colours"],
    },
    "enum": {
        "type": "object",
        "properties": {"mood": {"enum": ["happy", "sad", "calm"]},
                       "level": {"type": "string", "enum": ["low", "high"]}},
        "required": ["mood", "level"],
    },
    "bounded": {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 18, "maximum": 99},
                       "score": {"type": "integer", "exclusiveMinimum": 0, "maximum": 10},
                       "ok": {"type": "boolean"}},
        "required": ["age", "score", "ok"],
    },
}


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=live_server.v1, api_key=live_server.api_key,
                           max_retries=0) as c:
        yield c


def schema_format(name: str) -> dict[str, Any]:
    return {"type": "json_schema",
            "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}}


async def both(client: AsyncOpenAI, **kw: Any) -> tuple[str, str]:
    """The same request non-streamed and streamed (accumulated)."""
    args: dict[str, Any] = {"model": MODEL, "max_tokens": 160, "temperature": 0,
                            "messages": [{"role": "user", "content": "Describe a person as JSON."}]}
    args.update(kw)
    r = await client.chat.completions.create(**args)
    stream = await client.chat.completions.create(stream=True, **args)
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert r.choices[0].finish_reason == "stop"
    return r.choices[0].message.content or "", "".join(parts)


async def test_json_object_always_parses(client: AsyncOpenAI) -> None:
    finished = 0
    for topic in ("a person", "a city", "a car", "a dog"):
        args: dict[str, Any] = {
            "model": MODEL, "max_tokens": 160, "temperature": 0,
            "response_format": {"type": "json_object"},
            "extra_body": {"repetition_penalty": 1.2},
            "messages": [{"role": "user", "content": f"Describe {topic} as JSON."}],
        }
        r = await client.chat.completions.create(**args)
        stream = await client.chat.completions.create(stream=True, **args)
        streamed = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        text = r.choices[0].message.content or ""
        assert streamed == text
        # A reply cut by max_tokens is incomplete JSON, as with OpenAI; a finished one parses.
        if r.choices[0].finish_reason == "stop":
            finished += 1
            assert isinstance(json.loads(text), dict)
    # How many finish within max_tokens is the model's habit (and the llama.cpp build's
    # numerics); at least one must, so the parse check above is not vacuous.
    assert finished >= 1


@pytest.mark.parametrize("name", sorted(SCHEMAS))
async def test_json_schema_output_validates(client: AsyncOpenAI, name: str) -> None:
    text, streamed = await both(client, response_format=schema_format(name))
    jsonschema.validate(json.loads(text), SCHEMAS[name])
    assert streamed == text


async def test_each_sequence_in_a_batch_keeps_its_own_grammar(client: AsyncOpenAI) -> None:
    async def one(name: str, seed: int) -> tuple[str, str, str | None]:
        r = await client.chat.completions.create(
            model=MODEL, max_tokens=256, temperature=0.8, seed=seed,
            response_format=schema_format(name),
            messages=[{"role": "user", "content": f"Give me {name} data."}])
        return name, r.choices[0].message.content or "", r.choices[0].finish_reason

    results = await asyncio.gather(*(one(n, i) for i, n in enumerate(sorted(SCHEMAS) * 2)))
    for name, text, finish in results:
        if finish == "stop":
            jsonschema.validate(json.loads(text), SCHEMAS[name])
    assert sum(finish == "stop" for _, _, finish in results) >= 6


@pytest.mark.parametrize(
    ("schema", "words"),
    [
        ({"type": "number", "minimum": 0, "maximum": 1}, "only on integers"),
        ({"type": "integer", "minimum": 9, "maximum": 1}, "no integer"),
        ({"type": "nonsense"}, "cannot be compiled"),
    ],
)
async def test_bad_schemas_get_400_saying_why(
    client: AsyncOpenAI, schema: dict[str, Any], words: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(
            model=MODEL, max_tokens=10,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            messages=[{"role": "user", "content": "hi"}])
    error = info.value.response.json()["error"]
    assert error["param"] == "response_format"
    assert error["code"] == "invalid_json_schema"
    assert words in error["message"]

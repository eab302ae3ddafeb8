"""Seed 000's examples, verbatim but for ``base_url`` and ``api_key``, against a live
Kathan started from ``kathan.example.yaml`` with its documented local alias line:
no provider key is set, so the seeds' names are answered by the embedded engine."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import openai
import pytest
from openai import OpenAI

from tests.conftest import LiveServer, start_server, stop_server
from tests.unit.test_catalogue import PROVIDER_KEYS, example_with_local_aliases

# What a TTS engine would read as written: markdown, digits, emoji.
UNSPEAKABLE = re.compile(r"[*#_`\[\]<>|~]|\d|[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F]")


@pytest.fixture(scope="module")
def example_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = example_with_local_aliases().replace("\nlocal:\n", "\nlocal:\n  n_ctx: 2048\n", 1)
    # Empty key variables count as unset: every upstream deployment is left out,
    # whatever keys the machine running the tests has.
    server = start_server(tmp_path_factory.mktemp("example"), config,
                          env={var: "" for var in PROVIDER_KEYS})
    yield server
    stop_server(server)


def test_the_catalogue_lists_the_local_seed_names_and_not_the_keyless_ones(
    example_server: LiveServer
) -> None:
    headers = {"Authorization": f"Bearer {example_server.api_key}"}
    listed = httpx.get(f"{example_server.v1}/models", headers=headers).json()["data"]
    owners = {m["id"]: m["owned_by"] for m in listed}
    assert owners == {name: "kathan" for name in (
        "smollm2-135m-instruct", "default", "gpt-oss-120b", "openai/gpt-oss-120b",
        "llama-4-maverick", "meta-llama/llama-4-maverick")}
    log = example_server.log.read_text(errors="replace")
    assert "model gpt-4 is not served: OPENAI_API_KEY not set" in log
    client = OpenAI(base_url=example_server.v1, api_key=example_server.api_key)
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "Hi"}])
    client.close()
    assert "This key may use: smollm2-135m-instruct." in info.value.message
    assert "kathan.example.yaml" in info.value.message


def test_seed_000_simple_completion(example_server: LiveServer) -> None:
    from openai import OpenAI
    # Initialize the client
    client = OpenAI(
    base_url=example_server.v1,
    api_key=example_server.api_key
    )
    # Simple completion
    response = client.chat.completions.create(
    model="gpt-oss-120b",
    messages=[
    {"role": "user", "content": "Hello! How are you?"}
    ],
    temperature=0.7,
    max_tokens=1000
    )
    print(response.choices[0].message.content)
    client.close()  # the seed leaves it to the garbage collector; a test does not

    assert response.model == "smollm2-135m-instruct"  # the model that answered
    assert response.choices[0].message.content
    assert response.choices[0].finish_reason in ("stop", "length")
    assert response.usage is not None and response.usage.completion_tokens > 0


def test_seed_000_voice_agent_completion(example_server: LiveServer) -> None:
    from openai import OpenAI
    # Initialize the client
    client = OpenAI(
    base_url=example_server.v1,
    api_key=example_server.api_key
    )
    # Voice agent optimized completion
    response = client.chat.completions.create(
    model="llama-4-maverick",
    messages=[
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Hi, introduce yourself?"}
    ],
    temperature=0.7,
    max_tokens=1000,
    extra_body={
    "finetune": True, # Enable voice-optimized model
    "language": "en",
    "gender": "female",
    "accent": "american"
    }
    )
    print(response.choices[0].message.content)
    client.close()

    content = response.choices[0].message.content
    assert content and not UNSPEAKABLE.search(content), content
    assert content.rstrip()[-1] in ".?!", content

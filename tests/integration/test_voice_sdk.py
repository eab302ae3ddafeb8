"""The seeds' voice-agent examples end to end through the official openai SDK.

Two live setups:
- the embedded model (the seeds name gpt-oss-120b and llama-4-maverick; here the
  embedded SmolLM2 answers under its own name): whatever it writes, what reaches
  the client in voice mode is speakable, streamed as whole pieces;
- a Kathan routing `llama-4-maverick` to a scripted OpenAI-compatible upstream,
  which records the request it got: the persona the seeds' voices produce, and
  the exact speech made of a reply full of markdown, digits and emoji.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.conftest import LiveServer, start_server, stop_server
from tests.upstreams.openai_fake import Script, serve

MODEL = "smollm2-135m-instruct"
UPSTREAM_KEY = "sk-upstream"

# The seeds' examples: (messages, extra_body), with their own sampling settings.
SEEDS: dict[str, tuple[list[dict[str, str]], dict[str, Any]]] = {
    "en-female-american": (
        [{"role": "system", "content": "You are a helpful assistant."},
         {"role": "user", "content": "Hi, introduce yourself?"}],
        {"finetune": True, "language": "en", "gender": "female", "accent": "american"}),
    "hi-female-indian": (
        [{"role": "user", "content": "नमस्ते, आप कैसे हैं?"}],
        {"finetune": True, "language": "hi", "gender": "female", "accent": "indian"}),
    "es-female-mexican": (
        [{"role": "user", "content": "¿Puedes presentarte?"}],
        {"finetune": True, "language": "es", "gender": "female", "accent": "mexican"}),
    "en-male-british": (
        [{"role": "user", "content": "Tell me something interesting!"}],
        {"finetune": True, "language": "en", "gender": "male", "accent": "british"}),
}

# Nothing a TTS engine would read as written: markdown, digits (any script), emoji.
UNSPEAKABLE = re.compile(r"[*#_`\[\]<>|~]|\d|[\U0001F000-\U0001FAFF\u2600-\u27BF\uFE0F]")
SENTENCE_END = re.compile(r"[.?!।॥…][\"'”’»)]*$")


async def voice_stream(client: AsyncOpenAI, model: str, messages: list[dict[str, str]],
                       extra: dict[str, Any], **kw: Any) -> tuple[list[str], str | None]:
    stream = await client.chat.completions.create(
        model=model, messages=messages, stream=True, extra_body=extra, **kw)  # type: ignore[arg-type]
    pieces: list[str] = []
    finish = None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    return pieces, finish


def assert_whole_pieces(pieces: list[str], finish: str | None) -> None:
    assert pieces, "no speech came back"
    for i, piece in enumerate(pieces):
        assert not UNSPEAKABLE.search(piece), piece
        assert piece == piece.strip() if i == 0 else piece.startswith(" "), piece
        text = piece.strip()
        last = i == len(pieces) - 1
        if i == 0:
            # The early first piece: a clause or sentence, or forced after ~15 words.
            assert re.search(r"[,;:—.?!।॥…][\"'”’»)]*$", text) or len(text.split()) >= 15 or (
                last and finish == "length"), text
        elif not (last and finish == "length"):
            assert SENTENCE_END.search(text), text  # later pieces are whole sentences


# -- the embedded model ------------------------------------------------------------------


@pytest.fixture
async def client(live_server: LiveServer) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(base_url=live_server.v1, api_key=live_server.api_key,
                           max_retries=0) as c:
        yield c


@pytest.mark.parametrize("seed", list(SEEDS))
async def test_seed_examples_stream_speakable_pieces(client: AsyncOpenAI, seed: str) -> None:
    messages, extra = SEEDS[seed]
    # The seeds use max_tokens=1000; the small model is capped to keep the suite quick.
    pieces, finish = await voice_stream(client, MODEL, messages, extra, temperature=0.7,
                                        max_tokens=160, seed=7)
    assert_whole_pieces(pieces, finish)


@pytest.mark.parametrize("seed", list(SEEDS))
async def test_seed_examples_answer_speakable_text(client: AsyncOpenAI, seed: str) -> None:
    messages, extra = SEEDS[seed]
    r = await client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0.7, max_tokens=160,  # type: ignore[arg-type]
        seed=7, extra_body=extra)
    content = r.choices[0].message.content
    assert content and content == content.strip()
    assert not UNSPEAKABLE.search(content), content
    assert r.model == MODEL


async def test_seed_stop_sequences_with_finetune(client: AsyncOpenAI) -> None:
    messages = [{"role": "user", "content": "Write a short motivational quote!"}]
    extra = {"finetune": True, "language": "en"}
    r = await client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0.7, max_tokens=150,  # type: ignore[arg-type]
        stop=["!", "\n"], extra_body=extra)
    content = r.choices[0].message.content or ""
    assert "!" not in content and "\n" not in content
    assert not UNSPEAKABLE.search(content), content
    pieces, _ = await voice_stream(client, MODEL, messages, extra, temperature=0.7,
                                   max_tokens=150, stop=["!", "\n"])
    assert "!" not in "".join(pieces)
    for piece in pieces:
        assert not UNSPEAKABLE.search(piece), piece


# -- a scripted upstream behind the gateway -----------------------------------------------

REPLY = ("**Hi!** I'm Ava 😀. Your order #4521 ships on 03/15/2024 and costs $1,250.50.\n"
         "- Call +1 (555) 123-4567\n- Or see https://www.example.com/help")

SPOKEN = {
    "en-female-american": "Hi! I'm Ava. Your order number four thousand five hundred twenty-one "
    "ships on March fifteenth, twenty twenty-four and costs one thousand two hundred fifty "
    "dollars and fifty cents. Call plus one, five five five, one two three, four five six "
    "seven. Or see example dot com slash help.",
    "en-male-british": "Hi! I'm Ava. Your order number four thousand five hundred and "
    "twenty-one ships on the fifteenth of March, twenty twenty-four and costs one thousand "
    "two hundred and fifty dollars and fifty cents. Call plus one, five five five, one two "
    "three, four five six seven. Or see example dot com slash help.",
}

# What each seed's persona must say (the prompt the upstream received).
PERSONA = {
    "en-female-american": ["read aloud", "one to three", "American English", "woman's",
                           "You are a helpful assistant."],
    "hi-female-indian": ["Hindi", "Devanagari", "लाख", "रही हूँ", "सकती", "करूँगी"],
    "es-female-mexican": ["Spanish", "ustedes", "computadora", "celular", "carro", "cansada"],
    "en-male-british": ["British English", "flat", "the fifteenth of March", "man's"],
}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[LiveServer, Script]]:
    script = Script(reply=REPLY, api_key=UPSTREAM_KEY)
    async with serve(script) as url:
        config = (
            "local: null\nmodels:\n"
            "  - id: llama-4-maverick\n    deployments:\n"
            f"      - backend: openai\n        base_url: {url}\n"
            "        api_key_env: UPSTREAM_KEY\n        model: maverick-base\n"
            "  - id: gpt-oss-120b\n    voice_model: gpt-oss-120b-voice\n    deployments:\n"
            f"      - backend: openai\n        base_url: {url}\n"
            "        api_key_env: UPSTREAM_KEY\n        model: oss-base\n"
            "  - id: gpt-oss-120b-voice\n    deployments:\n"
            f"      - backend: openai\n        base_url: {url}\n"
            "        api_key_env: UPSTREAM_KEY\n        model: oss-voice-ft\n")
        server = start_server(tmp_path, config, {"UPSTREAM_KEY": UPSTREAM_KEY})
        try:
            yield server, script
        finally:
            stop_server(server)


@pytest.mark.parametrize("seed", list(SEEDS))
async def test_the_persona_and_the_speech_of_each_seed_voice(
    gateway: tuple[LiveServer, Script], seed: str
) -> None:
    server, script = gateway
    messages, extra = SEEDS[seed]
    async with AsyncOpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0) as client:
        r = await client.chat.completions.create(
            model="llama-4-maverick", messages=messages, temperature=0.7,  # type: ignore[arg-type]
            max_tokens=1000, extra_body=extra)
        pieces, finish = await voice_stream(client, "llama-4-maverick", messages, extra,
                                            temperature=0.7, max_tokens=1000)
    content = r.choices[0].message.content or ""
    assert "".join(pieces) == content  # streamed and not agree
    assert_whole_pieces(pieces, finish)
    if seed in SPOKEN:
        assert content == SPOKEN[seed]
    sent = script.requests[0]
    system = sent["messages"][0]
    assert system["role"] == "system"
    for words in PERSONA[seed]:
        assert words in system["content"], words
    assert sent["messages"][1:] == [m for m in messages if m["role"] != "system"]
    assert not {"finetune", "language", "gender", "accent"} & sent.keys()


async def test_finetune_goes_to_the_voice_variant(gateway: tuple[LiveServer, Script]) -> None:
    server, script = gateway
    async with AsyncOpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0) as client:
        r = await client.chat.completions.create(
            model="gpt-oss-120b", messages=[{"role": "user", "content": "Hi"}],
            extra_body={"finetune": True})
        assert r.model == "gpt-oss-120b-voice"
        assert script.requests[-1]["model"] == "oss-voice-ft"
        r = await client.chat.completions.create(
            model="gpt-oss-120b", messages=[{"role": "user", "content": "Hi"}])
        assert r.model == "gpt-oss-120b" and r.choices[0].message.content == REPLY
        assert script.requests[-1]["model"] == "oss-base"

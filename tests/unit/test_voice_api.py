"""Voice-agent mode through the HTTP layer, against scripted backends."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from kathan.app import create_app
from kathan.backends.base import Delta
from kathan.protocol.chat import SystemMessage
from kathan.routing.registry import ModelEntry, ModelRegistry
from kathan.settings import Settings
from kathan.voice.persona import persona
from kathan.voice.profile import Voice
from tests.fakes import FakeBackend
from tests.unit.test_api import AUTH, KEY, sse_events

# A reply with everything a TTS engine must not read as written, cut across patterns.
REPLY = ["<think>They want", " the total.</think>**Sure", "!** Your total is $1,2", "50.50 😀",
         ".\n\n- Delivery on 03/15/2024 at 3:3", "0 PM\n- Call +1 (555) 123-4", "567 or mail ",
         "help@exa", "mple.com\n\nSee https://www.example.com/orders for 4", "5% off."]
RAW = "".join(REPLY)
SPOKEN = ("Sure! Your total is one thousand two hundred fifty dollars and fifty cents. "
          "Delivery on March fifteenth, twenty twenty-four at three thirty in the afternoon. "
          "Call plus one, five five five, one two three, four five six seven or mail help at "
          "example dot com. See example dot com slash orders for forty-five percent off.")
VOICE = {"finetune": True, "language": "en", "gender": "female", "accent": "american"}
BODY: dict[str, Any] = {"model": "fake", "messages": [
    {"role": "system", "content": "You are the support agent of Acme."},
    {"role": "user", "content": "What do I owe?"}]}


def client_for(*entries: ModelEntry) -> TestClient:
    app = create_app(Settings(api_keys=[KEY], accounts=False), registry=ModelRegistry(list(entries)))
    return TestClient(app)


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(REPLY)


@pytest.fixture
def client(backend: FakeBackend) -> Iterator[TestClient]:
    with client_for(ModelEntry(id="fake", owned_by="t", created=1, backend=backend)) as c:
        yield c


def test_voice_reply_is_the_whole_cleaned_text(client: TestClient, backend: FakeBackend) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, **VOICE}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == SPOKEN
    sent = backend.requests[0]
    # The persona leads the system message and the caller's instructions are kept.
    system = sent.messages[0]
    assert isinstance(system, SystemMessage) and isinstance(system.content, str)
    assert system.content.startswith(persona(Voice("en", "american", "female", "en-US")))
    assert system.content.endswith("You are the support agent of Acme.")
    assert len(sent.messages) == 2
    # The voice fields were consumed here; the backend never sees them.
    assert (sent.finetune, sent.language, sent.gender, sent.accent) == (None, None, None, None)


def test_streamed_pieces_are_whole_speakable_sentences(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, **VOICE, "stream": True}, headers=AUTH)
    chunks = [json.loads(data) for _, data in sse_events(r.text)[:-1]]
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks
              if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert "".join(pieces) == SPOKEN
    assert pieces[0] == "Sure!"  # the first piece goes out early
    for piece in pieces:
        assert re.search(r"[.!?]$", piece), piece  # each one ends a sentence
        assert not re.search(r"[0-9*#_`<>\[\]]", piece), piece
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_without_voice_fields_the_reply_is_untouched(client: TestClient) -> None:
    plain = client.post("/v1/chat/completions", json=BODY, headers=AUTH)
    off = client.post("/v1/chat/completions", json={**BODY, "finetune": False}, headers=AUTH)
    for r in (plain, off):
        assert r.json()["choices"][0]["message"]["content"] == RAW


def test_language_without_finetune_is_voice_mode_too(
    client: TestClient, backend: FakeBackend
) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, "language": "es"}, headers=AUTH)
    content = r.json()["choices"][0]["message"]["content"]
    assert "mil doscientos cincuenta pesos con cincuenta centavos" in content
    assert "ustedes" in str(backend.requests[0].messages[0].content)


@pytest.mark.parametrize(
    ("fields", "loc", "listed"),
    [
        ({"language": "de"}, "language", "en (american, british, indian), hi (indian)"),
        ({"accent": "scottish"}, "accent", "american, british, indian, mexican, french"),
        ({"gender": "robot"}, "gender", "'male' or 'female'"),
    ],
)
def test_unknown_voice_values_are_422_listing_the_supported_ones(
    client: TestClient, fields: dict[str, str], loc: str, listed: str
) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, **fields}, headers=AUTH)
    assert r.status_code == 422
    issue = r.json()["detail"][0]
    assert issue["loc"] == ["body", loc]
    assert listed in issue["msg"]


def test_an_accent_the_language_lacks_is_a_400_naming_the_accent(client: TestClient) -> None:
    # Each value is one the schema lists; only the pair is wrong, which a schema cannot say.
    r = client.post("/v1/chat/completions",
                    json={**BODY, "language": "es", "accent": "british"}, headers=AUTH)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["param"] == "accent"
    assert "es supports: mexican" in error["message"]


def test_the_schema_lists_the_supported_languages_and_accents(client: TestClient) -> None:
    props = client.get("/openapi.json").json()["components"]["schemas"][
        "ChatCompletionRequest"]["properties"]
    assert props["language"]["anyOf"] == [{"enum": ["en", "hi", "es", "fr"]}, {"type": "null"}]
    assert props["accent"]["anyOf"] == [
        {"enum": ["american", "british", "indian", "mexican", "french"]}, {"type": "null"}]


def test_logprobs_cannot_be_honoured_in_voice_mode(client: TestClient) -> None:
    r = client.post("/v1/chat/completions", json={**BODY, **VOICE, "logprobs": True},
                    headers=AUTH)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "logprobs"


def test_finetune_routes_to_the_voice_variant_and_says_so() -> None:
    base, tuned = FakeBackend(["Base."]), FakeBackend(["Tuned **reply** 1."])
    with client_for(
        ModelEntry(id="fake", owned_by="t", created=1, backend=base, voice_model="fake-voice"),
        ModelEntry(id="fake-voice", owned_by="t", created=1, backend=tuned),
    ) as client:
        r = client.post("/v1/chat/completions", json={**BODY, "finetune": True}, headers=AUTH)
        assert r.json()["model"] == "fake-voice"
        assert r.json()["choices"][0]["message"]["content"] == "Tuned reply one."
        assert not base.requests and len(tuned.requests) == 1
        # language alone is the voice layer on the requested model, not the variant.
        r = client.post("/v1/chat/completions", json={**BODY, "language": "en"}, headers=AUTH)
        assert r.json()["model"] == "fake"


def test_stop_sequences_apply_to_the_model_text_before_shaping() -> None:
    # The backend honours `stop`; the shaper then speaks what is left, flushed at the end.
    backend = FakeBackend(["Dream big, work hard"])
    with client_for(ModelEntry(id="fake", owned_by="t", created=1, backend=backend)) as c:
        r = c.post("/v1/chat/completions", json={**BODY, "finetune": True, "language": "en",
                   "stop": ["!", "\n"]}, headers=AUTH)
    assert r.json()["choices"][0]["message"]["content"] == "Dream big, work hard."
    assert backend.requests[0].stop == ["!", "\n"]


@pytest.mark.parametrize(
    ("pieces", "language", "spoken"),
    [
        (["नमस्ते, आप कैसे", " हैं,"], "hi", "नमस्ते, आप कैसे हैं।"),
        (["Cut off by the limit, mid"], "en", "Cut off by the limit, mid."),
        (["- **1. Arrive early**: be calm\n- **2.", " Smile**"], "en",
         "Arrive early: be calm. Smile."),
    ],
)
def test_a_reply_ends_as_a_spoken_sentence(pieces: list[str], language: str, spoken: str) -> None:
    backend = FakeBackend(pieces)
    with client_for(ModelEntry(id="fake", owned_by="t", created=1, backend=backend)) as c:
        r = c.post("/v1/chat/completions", json={**BODY, "language": language}, headers=AUTH)
    assert r.json()["choices"][0]["message"]["content"] == spoken


def test_later_pieces_cut_at_a_line_break_end_as_sentences() -> None:
    backend = FakeBackend(["Sure, here it is. Watch the following:\n",
                           "- the first step\n- the last step"])
    with client_for(ModelEntry(id="fake", owned_by="t", created=1, backend=backend)) as c:
        r = c.post("/v1/chat/completions", json={**BODY, "language": "en", "stream": True},
                   headers=AUTH)
    chunks = [json.loads(data) for _, data in sse_events(r.text)[:-1]]
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks
              if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert pieces == ["Sure, here it is.", " Watch the following.",
                      " the first step. the last step."]


@pytest.mark.parametrize("stream", [False, True])
def test_reasoning_is_never_spoken(stream: bool) -> None:
    backend = FakeBackend([Delta(reasoning="The user wants a greeting."),
                           Delta(reasoning=" **Plan**: say hi.", signature="sig"),
                           "Hi there, ", "nice to meet you!"])
    with client_for(ModelEntry(id="fake", owned_by="t", created=1, backend=backend)) as c:
        r = c.post("/v1/chat/completions", json={**BODY, "language": "en", "stream": stream},
                   headers=AUTH)
    assert "reasoning_content" not in r.text
    assert "greeting" not in r.text and "Plan" not in r.text
    if not stream:
        assert r.json()["choices"][0]["message"]["content"] == "Hi there, nice to meet you!"

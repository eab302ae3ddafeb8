"""Several local models in one process (``local:`` as a list), through the official
openai SDK against a live Kathan: the embedded SmolLM2 loaded four times under four ids,
with their own contexts, slots, endpoints and pooling types, and a tiny BERT made here
(``tests/tiny_bert.py``) twice, as embedding models pooling cls (its own) and mean."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from openai import OpenAI

from tests.conftest import LiveServer, start_server, stop_server
from tests.tiny_bert import N_CTX_TRAIN, N_EMBD, tiny_bert

CONFIG = """
local:
  - id: chat-a
    aliases: [a]
    n_ctx: 1024
    max_running: 2
    embeddings: false
  - id: chat-b
    n_ctx: 512
    max_running: 1
    pooling: mean
  - id: emb-last
    chat: false
    pooling: last
    n_ctx: 512
  - id: emb-cls
    chat: false
    pooling: cls
    n_ctx: 512
  - id: bert
    gguf: {bert}
    chat: false
    n_ctx: 512
  - id: bert-mean
    gguf: {bert}
    chat: false
    pooling: mean
"""
CHAT = ["chat/completions", "responses", "messages", "completions"]
# Token ids of SmolLM2's vocabulary (49152), given as ids so nothing is added to them.
IDS = [504, 2365, 6354, 253, 1345]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("local-models")
    live = start_server(tmp, CONFIG.format(bert=tiny_bert(tmp / "tiny-bert.gguf")))
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=server.v1, api_key=server.api_key, max_retries=0) as c:
        yield c


def test_each_model_loaded_with_one_line_and_is_listed_with_its_endpoints(
    server: LiveServer, client: OpenAI
) -> None:
    log = server.log.read_text()
    for i, (model, what) in enumerate([
        ("chat-a", "chat: n_ctx 1024, 2 slots"),
        ("chat-b", "chat: n_ctx 512, 1 slot, embeddings: mean pooling"),
        ("emb-last", "embeddings: last pooling"), ("emb-cls", "embeddings: cls pooling"),
        ("bert", "embeddings: cls pooling"), ("bert-mean", "embeddings: mean pooling"),
    ]):
        [line] = [ln for ln in log.splitlines() if ln.startswith(f"Loading {model} ")]
        assert line.startswith(f"Loading {model} ({i + 1}/6): 100% in ") and f"({what})" in line
    listed = {m.id: m.model_extra["endpoints"] for m in client.models.list()}  # type: ignore[index]
    assert listed == {"chat-a": CHAT, "a": CHAT, "chat-b": [*CHAT, "embeddings"],
                      "emb-last": ["embeddings"], "emb-cls": ["embeddings"],
                      "bert": ["embeddings"], "bert-mean": ["embeddings"]}


def test_both_chat_models_answer_and_metrics_are_labelled_by_model(
    server: LiveServer, client: OpenAI
) -> None:
    for model in ("chat-a", "a", "chat-b"):
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hi."}], max_tokens=4,
            temperature=0)
        assert reply.model == ("chat-a" if model == "a" else model)
        assert reply.choices[0].message.content and reply.usage is not None
        assert reply.usage.completion_tokens == 4
    client.embeddings.create(model="emb-last", input=[IDS], encoding_format="float")
    metrics = httpx.get(f"{server.base_url}/metrics").text
    for line in ('kathan_sequence_slots{model="chat-a"} 2.0',
                 'kathan_sequence_slots{model="chat-b"} 1.0',
                 'kathan_kv_cells_total{model="chat-a"} 1024.0',
                 'kathan_kv_cells_total{model="chat-b"} 512.0',
                 'kathan_generated_tokens_total{model="chat-a"} 8.0',
                 'kathan_generated_tokens_total{model="chat-b"} 4.0',
                 f'kathan_embedded_tokens_total{{model="emb-last"}} {len(IDS)}.0'):
        assert line in metrics.splitlines(), line
    # An embedding model has no slots or queue: no engine gauges.
    assert 'kathan_sequence_slots{model="emb-last"}' not in metrics


def test_embeddings_come_from_the_model_that_serves_them(client: OpenAI) -> None:
    reply = client.embeddings.create(model="chat-b", input=["The sea is calm.", "Hi"],
                                     encoding_format="float")
    vectors = np.array([d.embedding for d in reply.data])
    assert vectors.shape == (2, 576)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="chat-a", input="Hi")
    assert refused.value.code == "unsupported_endpoint" and "'chat-a'" in refused.value.message


def test_an_embedding_model_refuses_every_chat_dialect_with_a_400_naming_it(
    client: OpenAI
) -> None:
    calls = [
        lambda: client.chat.completions.create(
            model="emb-last", messages=[{"role": "user", "content": "Hi"}]),
        lambda: client.responses.create(model="emb-last", input="Hi"),
        lambda: client.completions.create(model="emb-last", prompt="Hi"),
    ]
    for call in calls:
        with pytest.raises(openai.BadRequestError) as refused:
            call()
        assert refused.value.code == "unsupported_endpoint"
        assert "Model 'emb-last' is an embedding model" in refused.value.message


def _pooled(client: OpenAI, model: str, inputs: list[list[int]]) -> np.ndarray:
    reply = client.embeddings.create(model=model, input=inputs, encoding_format="float")
    return np.array([d.embedding for d in reply.data], dtype=np.float64)


def test_each_model_pools_as_configured(client: OpenAI) -> None:
    """SmolLM2 is causal: a token's hidden state depends on the tokens before it only.
    So the last token's state of each prefix is what ``last`` pools from it; the mean of
    a sequence's states lies in the span of its prefixes' ``last`` vectors, with
    positive weights; and ``cls`` (the first token's state) is the ``last`` of the
    first token alone."""
    prefixes = [IDS[:k] for k in range(1, len(IDS) + 1)]
    lasts = _pooled(client, "emb-last", prefixes)
    [mean] = _pooled(client, "chat-b", [IDS])
    [cls] = _pooled(client, "emb-cls", [IDS])
    weights, *_ = np.linalg.lstsq(lasts.T, mean, rcond=None)
    assert np.linalg.norm(lasts.T @ weights - mean) < 1e-3
    assert np.all(weights > 0)
    assert np.abs(cls - lasts[0]).max() < 1e-3
    # ... and the three poolings give three different vectors.
    assert max(mean @ lasts[-1], mean @ cls, cls @ lasts[-1]) < 0.99


def test_an_encoder_embeds_each_input_apart_within_its_trained_context(client: OpenAI) -> None:
    """BERT's attention is not causal and it keeps no KV cache: inputs embedded in one
    batch must not see each other, and its context is the 64 positions it was trained
    for, whatever n_ctx says."""
    texts = ["the cat sat on the mat", "hello world, how are you today?", "a dog ran"]
    together = np.array([d.embedding for d in client.embeddings.create(
        model="bert", input=texts, encoding_format="float").data])
    assert together.shape == (3, N_EMBD)
    assert np.allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.array([client.embeddings.create(model="bert", input=t, encoding_format="float")
                      .data[0].embedding for t in texts])
    assert np.abs(together - alone).max() < 1e-5
    mean = client.embeddings.create(model="bert-mean", input=texts[0], encoding_format="float")
    assert np.abs(np.array(mean.data[0].embedding) - alone[0]).max() > 1e-3
    with pytest.raises(openai.BadRequestError) as refused:
        client.embeddings.create(model="bert", input=[[104] * (N_CTX_TRAIN + 1)])
    assert f"embeds at most {N_CTX_TRAIN} tokens" in refused.value.message

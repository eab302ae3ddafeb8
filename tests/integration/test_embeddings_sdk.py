"""``client.embeddings.create`` (the official openai SDK) against a live Kathan that
embeds with the embedded model: mean-pooled, unit-length vectors."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import numpy as np
import openai
import pytest
from llama_cpp import Llama
from openai import OpenAI

from kathan.app import embedded_model_path
from tests.conftest import LiveServer

MODEL = "smollm2-135m-instruct"
DIMENSIONS = 576  # SmolLM2-135M's hidden size
N_CTX = 2048  # the live server's context
N_VOCAB = 49152


@pytest.fixture(scope="module")
def client(live_server: LiveServer) -> Iterator[OpenAI]:
    with OpenAI(base_url=live_server.v1, api_key=live_server.api_key, max_retries=0) as c:
        yield c


@pytest.fixture(scope="module")
def tokenizer() -> Llama:
    """The model's vocabulary through llama-cpp-python's own high-level API: another
    path to the same tokenizer than Kathan's wrapper."""
    return Llama(str(embedded_model_path()), vocab_only=True, verbose=False)


def vectors(response: openai.types.CreateEmbeddingResponse) -> np.ndarray:
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float64)


def embed(client: OpenAI, texts: list[str] | str, **kw: object) -> np.ndarray:
    return vectors(client.embeddings.create(model=MODEL, input=texts, **kw))  # type: ignore[arg-type]


def test_the_shape_and_unit_length(client: OpenAI) -> None:
    r = client.embeddings.create(model=MODEL, input=["The sea is calm.", "Bonjour !", "∑ 42"],
                                 encoding_format="float")
    assert r.object == "list"
    assert r.model == MODEL
    assert all(d.object == "embedding" for d in r.data)
    v = vectors(r)
    assert v.shape == (3, DIMENSIONS)
    assert np.all(np.isfinite(v))
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert r.usage.prompt_tokens == r.usage.total_tokens > 3


def test_a_text_is_closer_to_its_paraphrase_than_to_an_unrelated_text(client: OpenAI) -> None:
    for text, paraphrase, unrelated in [
        ("The cat sat on the mat.", "A cat was sitting on the mat.",
         "Quarterly revenue grew by eight percent."),
        ("How do I reset my password?", "How can I change my password?",
         "The volcano erupted in the night."),
    ]:
        a, b, c = embed(client, [text, paraphrase, unrelated], encoding_format="float")
        assert a @ b > a @ c, (text, a @ b, a @ c)


def test_a_batch_gives_the_vectors_each_text_gives_alone(client: OpenAI) -> None:
    texts = ["A short one.", "Somewhat longer: the quick brown fox jumps over the lazy dog.",
             "x", "Numbers 1, 2, 3 and symbols <>&", "  spaces  around  "]
    together = embed(client, texts, encoding_format="float")
    alone = np.array([embed(client, t, encoding_format="float")[0] for t in texts])
    assert np.abs(together - alone).max() < 1e-4


def test_base64_decodes_to_the_float_vectors(client: OpenAI) -> None:
    texts = ["first text", "second, different text"]
    floats = embed(client, texts, encoding_format="float")
    raw = client.embeddings.create(model=MODEL, input=texts, encoding_format="base64")
    for row, item in zip(floats, raw.data, strict=True):
        assert isinstance(item.embedding, str)
        decoded = np.frombuffer(base64.b64decode(item.embedding), dtype="<f4")
        assert decoded.shape == (DIMENSIONS,)
        assert np.array_equal(decoded.astype(np.float64), row)
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    assert np.array_equal(embed(client, texts), floats)


def test_usage_counts_the_tokenizers_tokens(client: OpenAI, tokenizer: Llama) -> None:
    texts = ["Hello world", "Tokens, tokens everywhere: <|im_start|> is text here.", "é🙂"]
    expected = sum(len(tokenizer.tokenize(t.encode(), add_bos=True, special=False))
                   for t in texts)
    r = client.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert r.usage.prompt_tokens == r.usage.total_tokens == expected


def test_token_ids_embed_as_their_text_does(client: OpenAI, tokenizer: Llama) -> None:
    text = "Token ids are embedded as given."
    ids = tokenizer.tokenize(text.encode(), add_bos=True, special=False)
    r = client.embeddings.create(model=MODEL, input=[ids, ids[:3]], encoding_format="float")
    by_ids = vectors(r)
    assert r.usage.prompt_tokens == len(ids) + 3
    assert np.abs(by_ids[0] - embed(client, text, encoding_format="float")[0]).max() < 1e-4
    single = client.embeddings.create(model=MODEL, input=ids, encoding_format="float")
    assert len(single.data) == 1 and single.usage.prompt_tokens == len(ids)


def _refusal(client: OpenAI, **kw: object) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model=MODEL, **kw)  # type: ignore[call-overload]
    return caught.value


def test_dimensions_is_a_400_naming_it(client: OpenAI) -> None:
    error = _refusal(client, input="hi", dimensions=64)
    assert error.param == "dimensions"
    assert "Matryoshka" in error.message


@pytest.mark.parametrize("given", ["", [""], ["fine", ""], [[]]])
def test_an_empty_input_is_a_400(client: OpenAI, given: object) -> None:
    error = _refusal(client, input=given)
    assert error.param == "input"
    assert "is empty" in error.message


def test_a_token_id_outside_the_vocabulary_is_a_400(client: OpenAI) -> None:
    error = _refusal(client, input=[[1, 2, N_VOCAB]])
    assert error.param == "input"
    assert f"token id {N_VOCAB}" in error.message and f"{N_VOCAB} tokens" in error.message


def test_an_input_past_the_context_is_a_400_with_both_numbers(
    client: OpenAI, tokenizer: Llama
) -> None:
    text = "word " * (N_CTX + 10)
    n = len(tokenizer.tokenize(text.encode(), add_bos=True, special=False))
    assert n > N_CTX
    error = _refusal(client, input=["short", text])
    assert error.code == "context_length_exceeded"
    assert f"'input[1]' has {n} tokens" in error.message
    assert f"at most {N_CTX} tokens" in error.message

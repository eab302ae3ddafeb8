"""``StreamChunks.text``: a text chunk's JSON is byte for byte what its model serializes to."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from kathan.protocol.chat import ChatCompletionChunk, StreamChunks

_text = st.text(min_size=1, max_size=40) | st.sampled_from(
    ['"', "\\", "\n", "\u2028", "नमस्ते", "😀 done", "</script>", "\x00", "\x7f"])


@settings(max_examples=300, deadline=None)
@given(text=_text, index=st.integers(0, 3),
       model=st.sampled_from(["m", "gpt-4", 'we"ird\\model', "qwen/qwen3:8b"]),
       created=st.integers(0, 2**40))
def test_encoded_text_is_the_models_json(text: str, index: int, model: str, created: int) -> None:
    chunks = StreamChunks(id="chatcmpl-1", created=created, model=model)
    encoded = chunks.text(index, text)
    chunk = chunks.text_chunk(index, text)
    assert encoded == chunk.__pydantic_serializer__.to_json(chunk)
    parsed = ChatCompletionChunk.model_validate_json(encoded)
    assert parsed.choices[0].delta.content == text
    assert parsed.choices[0].index == index
    assert json.loads(encoded)["choices"][0]["delta"] == {"content": text}


def test_one_template_serves_every_chunk_of_a_choice() -> None:
    chunks = StreamChunks(id="chatcmpl-1", created=1, model="m")
    first, second = chunks.text(0, "Hel"), chunks.text(0, "lo")
    assert first.replace(b'"Hel"', b'"lo"') == second
    assert json.loads(chunks.text(1, "x"))["choices"][0]["index"] == 1

"""Reasoning models in the ``<think>`` format on the real engine, without their weights:
copies of the embedded SmolLM2 GGUF whose ``tokenizer.chat_template`` is replaced by
Qwen3's, DeepSeek-R1-distill's and SmolLM3's (``tests/think_templates.py``), written
with the ``gguf`` package into a temporary directory. llama.cpp loads each; Kathan
reads the template from the file, detects the format, renders the prompts the real
models would get, builds grammars llama.cpp accepts, and splits what the engine
generates (SmolLM2's words, under the copied template).

The split of real Qwen3 and DeepSeek output, token by token, is
``tests/unit/test_local_reasoning.py``'s (a scripted engine at the seam).
"""

from __future__ import annotations

import ctypes
import functools
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gguf
import llama_cpp as C
import pytest

from kathan.app import embedded_model_path
from kathan.backends.local import LocalBackend
from kathan.engine.engine import EngineConfig, LocalEngine
from kathan.engine.sampling import Sampler, SamplingParams
from kathan.errors import UnsupportedParameterError
from kathan.protocol.chat import ChatCompletionRequest
from tests.think_templates import DEEPSEEK_R1_DISTILL, QWEN3, SMOLLM3

TEMPLATES = {"qwen3": QWEN3, "deepseek-r1-distill": DEEPSEEK_R1_DISTILL, "smollm3": SMOLLM3}


@functools.cache
def _layout(source: Path) -> tuple[int, int, int, int, int]:
    """Where the GGUF at ``source`` keeps its chat template field (start, end), where its
    tensor infos end, where its tensor data starts, and its alignment: read once (the
    reader parses every vocabulary entry, seconds for one model)."""
    reader = gguf.GGUFReader(source)
    field = reader.get_field(gguf.Keys.Tokenizer.CHAT_TEMPLATE)
    assert field is not None
    infos_end = max(t.field.offset + sum(p.nbytes for p in t.field.parts)
                    for t in reader.tensors)
    return (field.offset, field.offset + sum(p.nbytes for p in field.parts), infos_end,
            reader.data_offset, reader.alignment)


def with_template(source: Path, target: Path, template: str) -> None:
    """A copy of the GGUF at ``source`` whose chat template is ``template``: its bytes,
    with that one metadata field (a string) written anew and the tensor data realigned;
    the tensor infos' offsets are relative to the data, so they hold."""
    start, end, infos_end, data, alignment = _layout(source)
    raw = source.read_bytes()
    key = gguf.Keys.Tokenizer.CHAT_TEMPLATE.encode()
    value = template.encode()
    field = (struct.pack("<Q", len(key)) + key
             + struct.pack("<IQ", gguf.GGUFValueType.STRING, len(value)) + value)
    head = raw[:start] + field + raw[end:infos_end]
    head += b"\0" * (-len(head) % alignment)
    target.write_bytes(head + raw[data:])


@pytest.fixture(scope="module", params=list(TEMPLATES))
def engine(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEngine]:
    path = tmp_path_factory.mktemp("think") / f"smollm2-as-{request.param}.gguf"
    with_template(embedded_model_path(), path, TEMPLATES[request.param])
    loaded = LocalEngine(EngineConfig(gguf=path, n_ctx=1024, n_batch=256, n_threads=2,
                                      n_slots=2, embeddings=False))
    loaded.load()
    try:
        yield loaded
    finally:
        loaded.close()


def chat(**fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "What is 2+2?"}], **fields})


def prompt(backend: LocalBackend, request: ChatCompletionRequest) -> str:
    """The prompt's tokens as text, special tokens shown (a character may span tokens)."""
    generation, _, _ = backend.build(request)
    model = backend.engine.model
    buffer = ctypes.create_string_buffer(256)
    pieces = []
    for token in generation.prompt:
        size = C.llama_token_to_piece(model.vocab, token, buffer, 256, 0, True)
        pieces.append(buffer.raw[:size])
    return b"".join(pieces).decode()


def name(engine: LocalEngine) -> str:
    return engine.config.gguf.stem.removeprefix("smollm2-as-")


def test_the_format_is_read_from_the_model_file(engine: LocalEngine) -> None:
    thinking = engine.template.thinking if engine.template else None
    assert thinking is not None
    assert thinking.switch == (name(engine) != "deepseek-r1-distill")
    assert thinking.opens(None) == (name(engine) == "deepseek-r1-distill")


# What each model's prompt ends with, by reasoning_effort (None: not given).
ENDINGS = {
    "qwen3": {None: "<|im_start|>assistant\n", "high": "<|im_start|>assistant\n",
              "none": "<|im_start|>assistant\n<think>\n\n</think>\n\n"},
    "deepseek-r1-distill": {None: "<｜User｜>What is 2+2?<｜Assistant｜><think>\n",
                            "high": "<｜User｜>What is 2+2?<｜Assistant｜><think>\n"},
    "smollm3": {None: "<|im_start|>assistant\n", "high": "<|im_start|>assistant\n",
                "none": "<|im_start|>assistant\n<think>\n\n</think>\n"},
}


def test_prompts_are_the_templates_own(engine: LocalEngine) -> None:
    backend = LocalBackend(engine, retry_after=1)
    for effort, ending in ENDINGS[name(engine)].items():
        assert prompt(backend, chat(reasoning_effort=effort)).endswith(ending), effort
    if name(engine) == "deepseek-r1-distill":
        with pytest.raises(UnsupportedParameterError, match="always reasons"):
            backend.build(chat(reasoning_effort="none"))
    # An earlier answer's reasoning is not in the prompt (each template drops it).
    turns = chat(messages=[
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Two pairs make four."},
        {"role": "user", "content": "And 3+3?"}])
    assert "Two pairs" not in prompt(backend, turns)
    if name(engine) == "smollm3":
        assert "Reasoning Mode: /no_think" in prompt(backend, chat(reasoning_effort="none"))


async def test_what_the_engine_writes_is_split(engine: LocalEngine) -> None:
    backend = LocalBackend(engine, retry_after=1)
    request = chat(temperature=0, max_tokens=8)
    async with await backend.open(request) as stream:
        deltas = [d async for d in stream]
    reasoning = "".join(d.reasoning or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    [finish] = [d.finish_reason for d in deltas if d.finish_reason]
    usage = deltas[-1].usage
    assert usage is not None and usage.completion_tokens > 0
    if name(engine) == "deepseek-r1-distill":
        # The prompt opened the block and SmolLM2 never closes it: all of it is reasoning.
        assert reasoning and not content and finish == "length"
        assert usage.reasoning_tokens == usage.completion_tokens
    else:
        # SmolLM2 does not open a block of its own: all of it is the answer.
        assert content and not reasoning and usage.reasoning_tokens == 0


SCHEMA = {"type": "json_schema", "json_schema": {"name": "sum", "schema": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
    "additionalProperties": False}}}


def accepts(engine: LocalEngine, grammar: str, text: str) -> bool:
    sampler = Sampler(SamplingParams(grammar=grammar), engine.model)
    try:
        return sampler._feed_grammar(text.encode())
    finally:
        sampler.close()


def test_the_grammar_after_the_reasoning_is_llama_cpps(engine: LocalEngine) -> None:
    backend = LocalBackend(engine, retry_after=1)
    generation, _, plan = backend.build(chat(response_format=SCHEMA))
    assert plan is not None and plan.inside  # opened by the template, or by Kathan
    assert prompt(backend, chat(response_format=SCHEMA)).endswith("<think>\n")
    grammar = generation.sampling.grammar
    assert grammar is not None
    assert accepts(engine, grammar, 'Two and two: 4. <b> not </think >.</think>\n\n{"n": 4}')
    assert accepts(engine, grammar, "Still thinking, <thi")  # a block not closed yet
    assert not accepts(engine, grammar, '{"n": 4}</think> {"n": "four"}')
    assert not accepts(engine, grammar, 'Hm.</think>{"n": 4}</think>')
    # Thinking off (where the template can): the answer is the schema's from the start.
    if name(engine) != "deepseek-r1-distill":
        off, _, _ = backend.build(chat(response_format=SCHEMA, reasoning_effort="none"))
        assert off.sampling.grammar is not None
        assert accepts(engine, off.sampling.grammar, '{"n": 4}')
        assert not accepts(engine, off.sampling.grammar, "Hm.</think>")


async def test_a_formatted_answer_after_unfinished_reasoning_is_cut_reasoning(
    engine: LocalEngine,
) -> None:
    backend = LocalBackend(engine, retry_after=1)
    async with await backend.open(chat(response_format=SCHEMA, temperature=0,
                                       max_tokens=6)) as stream:
        deltas = [d async for d in stream]
    # SmolLM2 does not close the block in 6 tokens: reasoning only, cut by the limit.
    assert "".join(d.reasoning or "" for d in deltas)
    assert not any(d.content for d in deltas)
    assert [d.finish_reason for d in deltas if d.finish_reason] == ["length"]

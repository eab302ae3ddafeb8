"""A tiny BERT embedding model as a GGUF file, made here with random weights: the tests
cannot download a real one (bge, nomic), and llama.cpp loads this one through the same
path (the ``bert`` architecture, a WordPiece vocabulary, attention that is not causal,
no KV cache, a declared pooling type)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np

N_EMBD, N_FF, N_LAYER, N_HEAD, N_CTX_TRAIN = 32, 64, 2, 2, 64
SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in", "park", "sea", "is",
         "calm", "hello", "world", "how", "are", "you", "today", "quick", "brown", "fox",
         "jumps", "over", "lazy", "and", "or", "not", "yes", "no", "one", "two", "three"]
# As llama.cpp's converter writes a WordPiece vocabulary: a word that starts a word
# with U+2581 before it, a continuation ("##s") without its "##".
VOCAB = [SPECIAL.get(i, f"[unused{i}]") for i in range(104)] + [
    "\u2581" + word for word in WORDS] + ["s", "ing", "\u2581."]


def _string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("<Q", len(data)) + data


def _value(value: Any) -> tuple[int, bytes]:
    """A metadata value's GGUF type code and bytes."""
    if isinstance(value, bool):
        return 7, struct.pack("<?", value)
    if isinstance(value, int):
        return 4, struct.pack("<I", value)
    if isinstance(value, float):
        return 6, struct.pack("<f", value)
    if isinstance(value, str):
        return 8, _string(value)
    # A list of integers is int32 (token types), of strings is strings (tokens).
    if all(isinstance(item, int) for item in value):
        return 9, struct.pack("<IQ", 5, len(value)) + struct.pack(f"<{len(value)}i", *value)
    items = b"".join(_string(item) for item in value)
    return 9, struct.pack("<IQ", 8, len(value)) + items


def write_gguf(path: Path, metadata: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """A GGUF v3 file with this metadata and these float32 tensors (numpy's row-major
    shape is GGUF's dimensions reversed)."""
    alignment = 32
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, value in metadata.items():
        kind, data = _value(value)
        out += _string(key) + struct.pack("<I", kind) + data
    offset, blobs = 0, []
    for name, array in tensors.items():
        dims = array.shape[::-1]
        out += _string(name) + struct.pack("<I", len(dims)) + struct.pack(
            f"<{len(dims)}Q", *dims) + struct.pack("<IQ", 0, offset)  # type 0: F32
        blob = np.ascontiguousarray(array, dtype="<f4").tobytes()
        blob += b"\0" * (-len(blob) % alignment)
        blobs.append(blob)
        offset += len(blob)
    out += b"\0" * (-len(out) % alignment)
    path.write_bytes(bytes(out) + b"".join(blobs))


def tiny_bert(path: Path, *, pooling: int = 2, seed: int = 0) -> Path:
    """Write the model to ``path``; ``pooling``: the type it declares (2: cls)."""
    rng = np.random.default_rng(seed)

    def w(*shape: int) -> np.ndarray:
        return rng.normal(0, 0.2, shape).astype(np.float32)

    ones, zeros = np.ones(N_EMBD, np.float32), np.zeros(N_EMBD, np.float32)
    tensors = {"token_embd.weight": w(len(VOCAB), N_EMBD),
               "token_types.weight": w(2, N_EMBD),
               "position_embd.weight": w(N_CTX_TRAIN, N_EMBD),
               "token_embd_norm.weight": ones, "token_embd_norm.bias": zeros}
    for i in range(N_LAYER):
        block = f"blk.{i}."
        for part in ("attn_q", "attn_k", "attn_v", "attn_output"):
            tensors[block + part + ".weight"] = w(N_EMBD, N_EMBD)
            tensors[block + part + ".bias"] = w(N_EMBD)
        tensors |= {block + "attn_output_norm.weight": ones,
                    block + "attn_output_norm.bias": zeros,
                    block + "ffn_up.weight": w(N_FF, N_EMBD), block + "ffn_up.bias": w(N_FF),
                    block + "ffn_down.weight": w(N_EMBD, N_FF),
                    block + "ffn_down.bias": w(N_EMBD),
                    block + "layer_output_norm.weight": ones,
                    block + "layer_output_norm.bias": zeros}
    metadata: dict[str, Any] = {
        "general.architecture": "bert", "general.name": "tiny-bert",
        "bert.context_length": N_CTX_TRAIN, "bert.embedding_length": N_EMBD,
        "bert.feed_forward_length": N_FF, "bert.block_count": N_LAYER,
        "bert.attention.head_count": N_HEAD, "bert.attention.layer_norm_epsilon": 1e-12,
        "bert.attention.causal": False, "bert.pooling_type": pooling,
        "tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": VOCAB,
        "tokenizer.ggml.token_type": [3 if t.startswith("[") else 1 for t in VOCAB],
        "tokenizer.ggml.token_type_count": 2,
        "tokenizer.ggml.bos_token_id": 101, "tokenizer.ggml.seperator_token_id": 102,
        "tokenizer.ggml.unknown_token_id": 100, "tokenizer.ggml.padding_token_id": 0,
    }
    write_gguf(path, metadata, tensors)
    return path

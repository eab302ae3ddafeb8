"""A GGUF file's metadata, read without llama.cpp, and what its model needs in memory.

``kathan serve`` checks before anything loads that the local models fit in the
machine's memory (``memory_need``); ``kathan models`` shows each model's need.
Only the header and the key-value section are read, never the tensors.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

# The value types of GGUF's key-value section, by their code: struct formats of the
# scalars (8: a string, 9: an array).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# The KV cache's element size: llama.cpp's default cache type is f16.
KV_BYTES = 2


class GGUFError(ValueError):
    """The file is not a GGUF file Kathan can read."""


def read_metadata(path: Path, wanted: Callable[[str], bool] = lambda key: True
                  ) -> dict[str, Any]:
    """The metadata of the GGUF file at ``path`` whose keys ``wanted`` accepts (the others,
    the vocabulary's long arrays included, are skipped over unread)."""
    try:
        with path.open("rb") as f:
            if f.read(4) != b"GGUF":
                raise GGUFError(f"{path} is not a GGUF file")
            version, = _unpack(f, "<I")
            if version < 2:
                raise GGUFError(f"{path} is GGUF version {version}; Kathan reads 2 and later")
            _unpack(f, "<Q")  # the tensors' count
            count, = _unpack(f, "<Q")
            found: dict[str, Any] = {}
            for _ in range(count):
                key = _string(f)
                kind, = _unpack(f, "<I")
                if wanted(key):
                    found[key] = _value(f, kind)
                else:
                    _skip(f, kind)
            return found
    except struct.error as exc:
        raise GGUFError(f"{path} ends inside its metadata") from exc


def _unpack(f: BinaryIO, fmt: str) -> tuple[Any, ...]:
    return struct.unpack(fmt, f.read(struct.calcsize(fmt)))


def _string(f: BinaryIO) -> str:
    n, = _unpack(f, "<Q")
    return f.read(n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _string(f)
    if kind == _ARRAY:
        item, n = _unpack(f, "<IQ")
        return [_value(f, item) for _ in range(n)]
    if kind not in _SCALARS:
        raise GGUFError(f"unknown GGUF value type {kind}")
    return _unpack(f, _SCALARS[kind])[0]


def _skip(f: BinaryIO, kind: int) -> None:
    if kind == _STRING:
        n, = _unpack(f, "<Q")
        f.seek(n, 1)
    elif kind == _ARRAY:
        item, n = _unpack(f, "<IQ")
        if item in _SCALARS:
            f.seek(n * struct.calcsize(_SCALARS[item]), 1)
        else:
            for _ in range(n):
                _skip(f, item)
    elif kind in _SCALARS:
        f.seek(struct.calcsize(_SCALARS[kind]), 1)
    else:
        raise GGUFError(f"unknown GGUF value type {kind}")


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What a model's KV cache is made of, from its GGUF metadata."""

    architecture: str
    layers: int
    kv_per_token: int  # K and V elements one token takes, over every layer
    causal: bool  # False: an encoder (BERT and its kin), which keeps no KV cache
    trained_ctx: int  # the context it was trained for (0: not given)
    pooling: int | None  # the pooling type the GGUF declares (llama.cpp's codes)

    def kv_bytes(self, n_ctx: int) -> int:
        """The KV cache of a context of ``n_ctx`` cells (none for an encoder)."""
        return n_ctx * self.kv_per_token * KV_BYTES if self.causal else 0


def model_shape(path: Path) -> ModelShape:
    """The shape of the model in the GGUF file at ``path``.

    A layer's K and V take ``head_count_kv × key_length`` and ``head_count_kv ×
    value_length`` elements per token (each length defaults to ``embedding_length /
    head_count``, and ``head_count_kv`` to ``head_count``; it may be given per layer).
    """
    arch = read_metadata(path, lambda key: key == "general.architecture").get(
        "general.architecture")
    if not isinstance(arch, str):
        raise GGUFError(f"{path} does not name its architecture (general.architecture)")
    meta = read_metadata(path, lambda key: key.startswith(arch + "."))

    def get(name: str, default: Any = None) -> Any:
        return meta.get(f"{arch}.{name}", default)

    layers = int(get("block_count", 0))
    heads = get("attention.head_count", 0)
    heads_kv = get("attention.head_count_kv", heads)
    per_layer_heads = heads if isinstance(heads, list) else [heads] * layers
    per_layer_kv = heads_kv if isinstance(heads_kv, list) else [heads_kv] * layers
    embedding = int(get("embedding_length", 0))
    kv_per_token = 0
    for n_head, n_kv in zip(per_layer_heads, per_layer_kv, strict=False):
        head_dim = embedding // n_head if n_head else 0
        key = int(get("attention.key_length", head_dim))
        value = int(get("attention.value_length", head_dim))
        kv_per_token += int(n_kv) * (key + value)
    pooling = get("pooling_type")
    return ModelShape(architecture=arch, layers=layers, kv_per_token=kv_per_token,
                      causal=bool(get("attention.causal", True)),
                      trained_ctx=int(get("context_length", 0)),
                      pooling=None if pooling is None else int(pooling))


def memory_available() -> int | None:
    """MemAvailable from /proc/meminfo, in bytes (None where there is none)."""
    try:
        lines = Path("/proc/meminfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(":")
        if name == "MemAvailable":
            return int(value.split()[0]) * 1024
    return None

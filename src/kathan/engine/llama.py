"""A thin, typed wrapper over the llama.cpp C API as exposed by llama-cpp-python.

This module owns the model and context pointers: it keeps the C objects alive
for as long as their Python owners, and frees them in ``close()``. The only
other module that touches ``llama_cpp`` pointers and ctypes structures is
``sampling.py``, which owns the per-sequence sampler chains (and their grammar
samplers) the same way; ``grammar.py`` only borrows llama-cpp-python's
pure-Python JSON-schema-to-GBNF converter.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import llama_cpp as C
import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)


def _drop_llama_log(level: int, text: bytes | None, user_data: ctypes.c_void_p) -> None:
    # llama.cpp logs every tensor at load time; Kathan reports progress itself.
    return None


# A constant C function pointer: llama.cpp holds it for the life of the process.
_LOG_CALLBACK = C.llama_log_callback(_drop_llama_log)


class BatchItem(Protocol):
    """One sequence's share of a batch (the scheduler's ``Step`` has this shape)."""

    @property
    def slot(self) -> int: ...
    @property
    def start(self) -> int: ...
    @property
    def tokens(self) -> tuple[int, ...]: ...
    @property
    def sample(self) -> bool: ...


class LlamaLoadError(Exception):
    """The GGUF file could not be loaded or a context could not be created."""


class DecodeError(Exception):
    """``llama_decode`` failed; ``code`` is its return value."""

    def __init__(self, code: int) -> None:
        super().__init__(f"llama_decode returned {code}")
        self.code = code


def init_backend() -> None:
    """Initialise llama.cpp once per process and silence its logging."""
    C.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p())
    C.llama_backend_init()


@dataclass(frozen=True, slots=True)
class ModelInfo:
    n_vocab: int
    n_ctx_train: int
    bos_token: int
    eos_token: int
    add_bos: bool
    chat_template: str | None
    name: str | None


class LlamaModel:
    """A loaded GGUF model and its vocabulary.

    Token pieces are decoded once at load time into a table, so turning a
    sampled token into bytes costs a list lookup on the hot path.
    """

    def __init__(self, path: Path, *, progress: Callable[[float], None] | None = None) -> None:
        params = C.llama_model_default_params()
        params.n_gpu_layers = 0
        if progress is not None:
            report = progress

            def _on_progress(fraction: float, user_data: ctypes.c_void_p) -> bool:
                report(fraction)
                return True

            # Kept on the instance so the pointer outlives the load call.
            self._progress_cb = C.llama_progress_callback(_on_progress)
            params.progress_callback = self._progress_cb
        model = C.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise LlamaLoadError(f"could not load GGUF model from {path}")
        self.ptr = model
        vocab = C.llama_model_get_vocab(model)
        if not vocab:
            C.llama_model_free(model)
            raise LlamaLoadError(f"{path} has no vocabulary")
        self.vocab = vocab
        n_vocab = C.llama_vocab_n_tokens(vocab)
        template = C.llama_model_chat_template(model, None)
        self.info = ModelInfo(
            n_vocab=n_vocab,
            n_ctx_train=C.llama_model_n_ctx_train(model),
            bos_token=C.llama_vocab_bos(vocab),
            eos_token=C.llama_vocab_eos(vocab),
            add_bos=bool(C.llama_vocab_get_add_bos(vocab)),
            chat_template=template.decode("utf-8") if template else None,
            name=self.meta("general.name"),
        )
        self.pieces: list[bytes] = [self._piece(t) for t in range(n_vocab)]
        self.eog: frozenset[int] = frozenset(
            t for t in range(n_vocab) if C.llama_vocab_is_eog(vocab, t)
        )

    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as a string, or None when the key is absent."""
        size = 256
        while True:
            buf = ctypes.create_string_buffer(size)
            n = C.llama_model_meta_val_str(self.ptr, key.encode(), buf, size)
            if n < 0:
                return None
            if n < size:
                return buf.raw[:n].decode("utf-8", errors="replace")
            size = n + 1

    def token_text(self, token: int) -> str:
        """The token rendered with special tokens shown (for BOS/EOS strings)."""
        buf = ctypes.create_string_buffer(256)
        n = C.llama_token_to_piece(self.vocab, token, buf, 256, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = C.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = C.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        return buf.raw[:n]

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (C.llama_token * capacity)()
        n = C.llama_tokenize(self.vocab, data, len(data), buf, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            buf = (C.llama_token * capacity)()
            n = C.llama_tokenize(
                self.vocab, data, len(data), buf, capacity, add_special, parse_special
            )
        return list(buf[:n])

    def close(self) -> None:
        if self.ptr:
            C.llama_model_free(self.ptr)
            self.ptr = None


# The smallest batch for which llama.cpp's CPU flash attention takes its tiled path
# (GGML_FA_TILE_Q in the vendored ggml-cpu/common.h).
DETERMINISTIC_BATCH = 64


class LlamaContext:
    """One llama.cpp context (KV cache) over a model, with a reusable batch."""

    def __init__(
        self, model: LlamaModel, *, n_ctx: int, n_batch: int, n_threads: int, n_seq_max: int = 1,
        deterministic: bool = False,
    ) -> None:
        # ``deterministic``: every token computed along the same kernels whatever else is
        # in its batch (``decode_steps``), so that greedy output does not depend on load
        # or on the prefix cache. llama.cpp's CPU flash attention takes a tiled path for
        # a batch of 64 or more tokens and splits one lone token's keys among the threads
        # (from 512 cells), and its matrix products take llamafile's kernels from two
        # output rows: each rounds differently from the one-row path. So the batch stays
        # under 64 tokens and never holds one token, or one output, alone.
        if deterministic and n_batch >= DETERMINISTIC_BATCH:
            raise ValueError(f"a deterministic context needs n_batch < {DETERMINISTIC_BATCH}")
        self.deterministic = deterministic
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        # Room for the extra row of a deterministic step.
        params.n_batch = n_batch + (1 if deterministic else 0)
        params.n_ubatch = n_batch + (1 if deterministic else 0)
        params.n_seq_max = n_seq_max
        # One pool of cells for all sequences: any of them may use the whole context.
        params.kv_unified = True
        # Flash attention on: llama.cpp's other CPU path gave logits off by ~0.5 for a
        # sequence whose prefix cells are shared through seq_cp after a trim.
        params.flash_attn_type = 1
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        ctx = C.llama_init_from_model(model.ptr, params)
        if not ctx:
            raise LlamaLoadError("could not create a llama.cpp context")
        self.ptr = ctx
        self.model = model
        self.n_ctx = C.llama_n_ctx(ctx)
        self.n_batch = n_batch
        self.memory = C.llama_get_memory(ctx)
        self._batch = C.llama_batch_init(n_batch + 1, 0, n_seq_max)
        self._row = ctypes.c_float * model.info.n_vocab

    def decode(self, tokens: list[int], start_pos: int, seq_id: int = 0) -> None:
        """Decode ``tokens`` at positions ``start_pos...``; logits only for the last one."""
        batch = self._batch
        n = len(tokens)
        if n > self.n_batch:
            raise ValueError(f"{n} tokens exceed the batch size {self.n_batch}")
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start_pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq_id
            batch.logits[i] = 0
        batch.logits[n - 1] = 1
        batch.n_tokens = n
        rc = C.llama_decode(self.ptr, batch)
        if rc != 0:
            raise DecodeError(rc)

    def decode_steps(self, steps: Sequence[BatchItem]) -> list[int]:
        """Decode several sequences' tokens in one ``llama_decode``.

        Returns, per item, the batch index whose logits can be sampled (its
        last token) or -1 when the item asked for no logits.
        """
        batch = self._batch
        i = 0
        outputs: list[int] = []
        for item in steps:
            slot = item.slot
            pos = item.start
            for token in item.tokens:
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = slot
                batch.logits[i] = 0
                pos += 1
                i += 1
            if item.sample:
                batch.logits[i - 1] = 1
                outputs.append(i - 1)
            else:
                outputs.append(-1)
        if i > self.n_batch:
            raise ValueError(f"{i} tokens exceed the batch size {self.n_batch}")
        pad = self._pad(steps, i, outputs) if self.deterministic else None
        batch.n_tokens = i + (1 if pad is not None else 0)
        rc = C.llama_decode(self.ptr, batch)
        if pad is not None:
            C.llama_memory_seq_rm(self.memory, pad[0], pad[1], -1)
        if rc != 0:
            raise DecodeError(rc)
        return outputs

    def _pad(self, steps: Sequence[BatchItem], i: int,
             outputs: list[int]) -> tuple[int, int] | None:
        """A deterministic step's extra row, when the batch has one token or one output:
        a token after the last of a sampled sequence (else of the last one), with logits,
        which no other row sees and which is dropped after the decode. Returns its
        (sequence, position), or None when no row is needed."""
        if i >= 2 and sum(o >= 0 for o in outputs) != 1:
            return None
        chosen = next((item for item in steps if item.sample), steps[-1])
        position = chosen.start + len(chosen.tokens)
        batch = self._batch
        batch.token[i] = 0
        batch.pos[i] = position
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = chosen.slot
        batch.logits[i] = 1
        return chosen.slot, position

    def copy(self, src: int, dst: int) -> None:
        """Share all of sequence ``src``'s KV cells with sequence ``dst``."""
        C.llama_memory_seq_cp(self.memory, src, dst, -1, -1)

    def logits(self, index: int) -> npt.NDArray[np.float32]:
        """A view of batch output ``index``'s logits, valid until the next decode."""
        ptr = C.llama_get_logits_ith(self.ptr, index)
        address = ctypes.cast(ptr, ctypes.c_void_p).value
        if address is None:
            raise ValueError(f"no logits for batch output {index}")
        # A view through one cached ctypes row type (np.ctypeslib.as_array builds one a call).
        row: npt.NDArray[np.float32] = np.frombuffer(
            memoryview(self._row.from_address(address)), dtype=np.float32)
        return row

    def remove(self, seq_id: int, start: int = 0, end: int = -1) -> None:
        """Drop a sequence's KV cells in positions [start, end)."""
        C.llama_memory_seq_rm(self.memory, seq_id, start, end)

    def save(self, seq_id: int) -> ctypes.Array[ctypes.c_uint8]:
        """A copy of sequence ``seq_id``'s KV cells (positions and data) in host memory."""
        size = C.llama_state_seq_get_size(self.ptr, seq_id)
        state: ctypes.Array[ctypes.c_uint8] = (ctypes.c_uint8 * size)()
        if C.llama_state_seq_get_data(self.ptr, state, size, seq_id) != size:
            raise DecodeError(-1)
        return state

    def restore(self, seq_id: int, state: ctypes.Array[ctypes.c_uint8]) -> None:
        """Put a ``save``d copy back as sequence ``seq_id``'s cells (any free cells)."""
        if C.llama_state_seq_set_data(self.ptr, state, len(state), seq_id) == 0:
            raise DecodeError(-1)

    def close(self) -> None:
        if self.ptr:
            C.llama_batch_free(self._batch)
            C.llama_free(self.ptr)
            self.ptr = None


# The pooling types /v1/embeddings can use (one vector per input), by their config names.
POOLING_TYPES = {"mean": C.LLAMA_POOLING_TYPE_MEAN, "cls": C.LLAMA_POOLING_TYPE_CLS,
                 "last": C.LLAMA_POOLING_TYPE_LAST}


def pooling_type(name: str | None, model: LlamaModel) -> int:
    """llama.cpp's pooling type for ``name`` (mean, cls, last); None: the one the GGUF
    declares (``<arch>.pooling_type``) when it gives one vector per input, else mean."""
    if name is not None:
        return POOLING_TYPES[name]
    arch = model.meta("general.architecture")
    declared = model.meta(f"{arch}.pooling_type") if arch else None
    if declared is not None and declared.isdigit() \
            and int(declared) in POOLING_TYPES.values():
        return int(declared)
    return POOLING_TYPES["mean"]


class PoolingContext:
    """A llama.cpp context over a loaded model that computes embeddings: each sequence's
    hidden states pooled by llama.cpp itself (``embeddings`` on, ``pooling``: one of
    ``POOLING_TYPES``). Beside a generation context it shares the model's weights and
    nothing else, so it may run on another thread beside it.

    Its batch (and micro-batch) holds ``n_ctx`` tokens: llama.cpp pools the tokens of
    a sequence per micro-batch, so a sequence must never be split across two.
    """

    def __init__(self, model: LlamaModel, *, n_ctx: int, n_threads: int, n_seq_max: int,
                 pooling: int = C.LLAMA_POOLING_TYPE_MEAN) -> None:
        params = C.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = n_ctx
        params.n_ubatch = n_ctx
        params.n_seq_max = n_seq_max
        params.kv_unified = True  # any one sequence may use the whole context
        params.embeddings = True
        params.pooling_type = pooling
        params.flash_attn_type = 1  # as the generation context (LlamaContext)
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        params.no_perf = True
        ctx = C.llama_init_from_model(model.ptr, params)
        if not ctx:
            raise LlamaLoadError("could not create a llama.cpp context for embeddings")
        self.ptr = ctx
        # llama.cpp may round the context up; a decode still holds n_ctx tokens at most.
        self.n_ctx = min(int(C.llama_n_ctx(ctx)), n_ctx)
        self.n_seq_max = n_seq_max
        self.dimensions = int(C.llama_model_n_embd(model.ptr))
        self.memory = C.llama_get_memory(ctx)
        self._batch = C.llama_batch_init(self.n_ctx, 0, 1)

    def embed(self, sequences: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """The pooled (not normalized) embedding of each sequence, one row each,
        computed in one ``llama_decode``; the memory is cleared first, so nothing of
        an earlier call is attended to."""
        total = sum(len(s) for s in sequences)
        if total > self.n_ctx or len(sequences) > self.n_seq_max:
            raise ValueError(f"{len(sequences)} sequences of {total} tokens exceed the "
                             f"context ({self.n_seq_max} sequences, {self.n_ctx} tokens)")
        if self.memory:  # an encoder (BERT) keeps none
            C.llama_memory_clear(self.memory, True)
        batch = self._batch
        i = 0
        for seq_id, tokens in enumerate(sequences):
            for pos, token in enumerate(tokens):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq_id
                batch.logits[i] = 1  # every token's state goes into its sequence's mean
                i += 1
        batch.n_tokens = i
        rc = C.llama_decode(self.ptr, batch)
        if rc != 0:
            raise DecodeError(rc)
        out = np.empty((len(sequences), self.dimensions), dtype=np.float32)
        for seq_id in range(len(sequences)):
            pooled = C.llama_get_embeddings_seq(self.ptr, seq_id)
            if not pooled:
                raise DecodeError(-1)
            out[seq_id] = np.ctypeslib.as_array(pooled, shape=(self.dimensions,))
        return out

    def close(self) -> None:
        if self.ptr:
            C.llama_batch_free(self._batch)
            C.llama_free(self.ptr)
            self.ptr = None

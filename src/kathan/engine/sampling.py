"""Sampling parameters and the per-sequence sampler.

Each sequence gets its own ``llama_sampler`` chain, ordered as llama.cpp's own
server orders it: logit bias, penalties, top-k, top-p, min-p, temperature, then
the final pick (greedy at temperature 0, otherwise a seeded random draw).

The plain chain, the one an OpenAI client gets by default (logit bias, then the
greedy pick or a draw from the whole distribution at a temperature: no penalties,
truncation or grammar), is computed over the logits with numpy instead
(``PlainSampler``): the same distribution, in about 60 us per token where
llama.cpp's scalar loops over the 49k-token vocabulary take about 420 us
(``bench/serving.py``'s profile). The draw uses numpy's PCG64, so a seeded
request's text differs from llama.cpp's for the same seed; it is as
reproducible.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field, replace

import llama_cpp as C
import numpy as np
import numpy.typing as npt

from kathan.engine.llama import LlamaContext, LlamaModel

RANDOM_SEED = C.LLAMA_DEFAULT_SEED


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """How one sequence picks its next token. Defaults leave the distribution untouched."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    penalty_last_n: int = 1024
    grammar: str | None = None
    # With a trigger the grammar is lazy: the text is free until the trigger
    # appears in it, and the grammar describes what follows the trigger.
    grammar_trigger: str | None = None

    def with_seed(self, seed: int) -> SamplingParams:
        return replace(self, seed=seed)


_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class PlainSampler:
    """Logit bias, then argmax (temperature 0) or a draw from softmax(logits / T).

    The draw: probabilities ``exp((l - max) / T)`` are summed in blocks of 256, one
    uniform number in (0, 1] picks the block by the blocks' running sum (float64)
    and then the token inside it, as llama.cpp's ``dist`` sampler picks the first
    token whose running sum reaches the same target.
    """

    BLOCK = 256

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        self.temperature = params.temperature
        self._bias_ids = np.array([t for t in params.logit_bias if 0 <= t < n_vocab],
                                  dtype=np.intp)
        self._bias = np.array([params.logit_bias[int(t)] for t in self._bias_ids],
                              dtype=np.float32)
        seed = None if params.seed is None else params.seed & 0xFFFFFFFFFFFFFFFF
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self._n_vocab = n_vocab
        padded = -(-n_vocab // self.BLOCK) * self.BLOCK
        # The tail past the vocabulary stays 0: no probability.
        self._p = np.zeros(padded, dtype=np.float32)
        self._blocks = self._p.reshape(-1, self.BLOCK)
        self._biased = np.empty(n_vocab, dtype=np.float32) if len(self._bias) else None

    def pick(self, logits: npt.NDArray[np.float32]) -> int:
        if self._biased is not None:
            np.copyto(self._biased, logits)
            self._biased[self._bias_ids] += self._bias
            logits = self._biased
        if self.temperature <= 0.0:
            return int(np.argmax(logits))
        # ufuncs called directly: numpy's method wrappers cost more than the math here.
        p = self._p[: self._n_vocab]
        np.subtract(logits, np.maximum.reduce(logits), out=p)
        np.multiply(p, np.float32(1.0 / self.temperature), out=p)
        np.exp(p, out=p)
        block = self.BLOCK
        running = np.add.accumulate(np.add.reduce(self._blocks, axis=1), dtype=np.float64)
        target = (1.0 - self._rng.random()) * running[-1]
        b = min(int(np.searchsorted(running, target)), len(running) - 1)
        inside = np.add.accumulate(self._p[b * block : (b + 1) * block], dtype=np.float64)
        i = int(np.searchsorted(inside, target - (running[b - 1] if b else 0.0)))
        return min(b * block + min(i, block - 1), self._n_vocab - 1)


def is_plain(params: SamplingParams) -> bool:
    """Whether ``PlainSampler`` computes this chain: no penalties, truncation or grammar."""
    return (params.grammar is None and params.top_k <= 0 and params.top_p >= 1.0
            and params.min_p <= 0.0 and params.repetition_penalty == 1.0
            and params.frequency_penalty == 0.0 and params.presence_penalty == 0.0)


class Sampler:
    """A llama.cpp sampler chain for one sequence. Not thread-safe; owned by the runner.

    With a grammar, sampling follows llama.cpp's own common sampler: pick a
    token with the plain chain, check that one token against the grammar, and
    only when the grammar rejects it, mask the whole vocabulary and pick again.
    Most tokens pass, so a grammar costs little per token.

    A lazy grammar (``grammar_trigger``) waits until the generated text
    contains the trigger. The token that completes the trigger may carry text
    past it; that text must satisfy the grammar, or the token is rejected
    and another picked.
    """

    def __init__(self, params: SamplingParams, model: LlamaModel) -> None:
        n_vocab = model.info.n_vocab
        self.grammar = None
        self._model = model
        self.plain = PlainSampler(params, n_vocab) if is_plain(params) else None
        if self.plain is not None:
            self.ptr = None
            return
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        self.ptr = chain
        self._trigger = params.grammar_trigger.encode() if params.grammar_trigger else None
        self._tail = b""
        add = C.llama_sampler_chain_add
        if params.grammar is not None:
            grammar = C.llama_sampler_init_grammar(model.vocab, params.grammar.encode(), b"root")
            if not grammar:
                C.llama_sampler_free(chain)
                raise ValueError("the grammar does not parse")
            self.grammar = grammar
            self._cells = np.zeros(n_vocab, dtype=_TOKEN_DATA)
            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._one = np.zeros(1, dtype=_TOKEN_DATA)
        if params.logit_bias:
            biases = (C.llama_logit_bias * len(params.logit_bias))()
            for i, (token, bias) in enumerate(params.logit_bias.items()):
                biases[i] = C.llama_logit_bias(token, bias)
            add(chain, C.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
        if (
            params.repetition_penalty != 1.0
            or params.frequency_penalty != 0.0
            or params.presence_penalty != 0.0
        ):
            add(
                chain,
                C.llama_sampler_init_penalties(
                    n_vocab,
                    params.penalty_last_n,
                    params.repetition_penalty,
                    params.frequency_penalty,
                    params.presence_penalty,
                ),
            )
        if params.temperature <= 0.0:
            add(chain, C.llama_sampler_init_greedy())
            return
        if params.top_k > 0:
            add(chain, C.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(chain, C.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(chain, C.llama_sampler_init_min_p(params.min_p, 1))
        add(chain, C.llama_sampler_init_temp(params.temperature))
        seed = RANDOM_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        if seed == RANDOM_SEED and params.seed is not None:
            seed = 0xFFFFFFFE  # the sentinel means "random"; keep an explicit seed fixed
        add(chain, C.llama_sampler_init_dist(seed))

    def sample(self, ctx: LlamaContext, index: int = -1) -> int:
        """Pick (and accept) the next token from output ``index`` of the last decode."""
        if self.plain is not None:
            return self.plain.pick(ctx.logits(index))
        if self.grammar is None:
            return int(C.llama_sampler_sample(self.ptr, ctx.ptr, index))
        logits = ctx.logits(index)
        if self._trigger is not None:
            return self._sample_awaiting_trigger(logits)
        token = self._pick(logits, with_grammar=False)
        self._one[0] = (token, logits[token], 0.0)
        self._apply(self.grammar, self._one)
        if not np.isfinite(self._one[0]["logit"]):
            token = self._pick(logits, with_grammar=True)
        C.llama_sampler_accept(self.grammar, token)
        C.llama_sampler_accept(self.ptr, token)
        return token

    def _sample_awaiting_trigger(self, logits: npt.NDArray[np.float32]) -> int:
        trigger = self._trigger
        assert trigger is not None
        pieces = self._model.pieces
        masked: npt.NDArray[np.float32] | None = None
        while True:
            token = self._pick(logits if masked is None else masked, with_grammar=False)
            text = self._tail + pieces[token]
            at = text.find(trigger)
            if at < 0:
                self._tail = text[len(text) - len(trigger) + 1 :] if len(trigger) > 1 else b""
                break
            if self._feed_grammar(text[at + len(trigger) :]):
                self._trigger = None
                break
            if masked is None:
                masked = logits.copy()
            masked[token] = -np.inf
        C.llama_sampler_accept(self.ptr, token)
        return token

    def _feed_grammar(self, text: bytes) -> bool:
        """Advance the grammar over ``text``; on rejection leave it as it was."""
        if not text:
            return True
        try:
            decoded = text.decode("utf-8")
        except UnicodeDecodeError:
            return False
        assert self.grammar is not None
        saved = C.llama_sampler_clone(self.grammar)
        for token in self._model.tokenize(decoded, add_special=False, parse_special=False):
            self._one[0] = (token, 0.0, 0.0)
            self._apply(self.grammar, self._one)
            if not np.isfinite(self._one[0]["logit"]):
                C.llama_sampler_free(self.grammar)
                self.grammar = saved
                return False
            C.llama_sampler_accept(self.grammar, token)
        C.llama_sampler_free(saved)
        return True

    def _pick(self, logits: npt.NDArray[np.float32], *, with_grammar: bool) -> int:
        cells = self._cells
        cells["id"] = self._ids
        cells["logit"] = logits
        cells["p"] = 0.0
        if with_grammar:
            assert self.grammar is not None
            self._apply(self.grammar, cells)
        assert self.ptr is not None  # a grammar is never plain
        selected = self._apply(self.ptr, cells)
        return int(cells[selected]["id"])

    @staticmethod
    def _apply(sampler: C.llama_sampler_p, cells: npt.NDArray[np.void]) -> int:
        array = C.llama_token_data_array(
            data=cells.ctypes.data_as(C.llama_token_data_p), size=len(cells), selected=-1,
            sorted=False,
        )
        C.llama_sampler_apply(sampler, ctypes.byref(array))
        return int(array.selected)

    def close(self) -> None:
        if self.ptr:
            C.llama_sampler_free(self.ptr)
            self.ptr = None
        if self.grammar:
            C.llama_sampler_free(self.grammar)
            self.grammar = None


def grammar_parses(model: LlamaModel, grammar: str) -> bool:
    """Whether llama.cpp accepts ``grammar`` (checked before a request is queued)."""
    sampler = C.llama_sampler_init_grammar(model.vocab, grammar.encode(), b"root")
    if not sampler:
        return False
    C.llama_sampler_free(sampler)
    return True

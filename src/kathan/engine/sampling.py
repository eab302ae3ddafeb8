"""Sampling parameters and the per-sequence sampler.

Each sequence's chain is ordered as llama.cpp's own server orders it: logit
bias, penalties, top-k, top-p, min-p, temperature, then the final pick (greedy
at temperature 0, otherwise a seeded random draw). Each step means what
llama.cpp's sampler of that name means, but the chain is computed over the
logits with numpy (``ArraySampler``): llama.cpp's samplers walk the 49k-token
vocabulary in scalar loops (filling an array, ``expf``, running sums, sorting),
about 420 us per token for the plain chain here (``bench/serving.py``'s
profile), where numpy's take about 60 us. The draw uses numpy's PCG64, so a
seeded request's text differs from llama.cpp's for the same seed; it is as
reproducible. Only a grammar runs in llama.cpp (``Sampler``).
"""

from __future__ import annotations

import ctypes
import math
from collections import deque
from dataclasses import dataclass, field, replace

import llama_cpp as C
import numpy as np
import numpy.typing as npt

from kathan.engine.llama import LlamaContext, LlamaModel


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


class ArraySampler:
    """The chain over a row of logits, in NumPy: logit bias, penalties, then argmax
    (temperature 0), or top-k, top-p, min-p and a draw from softmax(logits / T).

    Each step means what llama.cpp's sampler of the same name means:

    - penalties count the tokens this sampler accepted, the last ``penalty_last_n`` of
      them: a seen token's logit is divided by ``repetition_penalty`` (multiplied, when
      it is not positive), then lowered by ``count * frequency_penalty +
      presence_penalty``;
    - top-k keeps the ``top_k`` highest logits;
    - top-p and min-p read the probabilities at temperature 1 over what is left: top-p
      keeps the most likely tokens until their sum reaches ``top_p``, min-p the tokens
      at least ``min_p`` times as likely as the most likely one;
    - the draw: one uniform number in (0, 1] picks the first token whose running sum
      of ``exp((l - max) / T)`` reaches that share of the total.

    None of it walks the vocabulary in Python or sorts it: over the whole vocabulary
    the draw sums blocks of 256, and top-k and top-p look only at the candidates above
    a threshold that provably holds all they keep (widened until it does), which for a
    language model's logits is a few hundred tokens. ``pick`` leaves ``logits`` as it
    found them (log probabilities read the same row afterwards).
    """

    BLOCK = 256
    # top-k's first candidates: logits within this much of the highest.
    TOP_K_SPAN = 10.0
    # top-p's first candidates: at least this share of the most likely token's probability.
    TOP_P_FLOOR = 1e-4

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        self.temperature = params.temperature
        self._top_k = params.top_k if 0 < params.top_k < n_vocab else 0
        self._top_p = min(1.0, params.top_p)
        self._min_p = max(0.0, params.min_p)
        self._repeat = params.repetition_penalty
        self._frequency = params.frequency_penalty
        self._presence = params.presence_penalty
        self._last_n = params.penalty_last_n if (
            self._repeat != 1.0 or self._frequency != 0.0 or self._presence != 0.0) else 0
        self._window: deque[int] = deque()
        self._counts: dict[int, int] = {}
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
        self._work = (np.empty(n_vocab, dtype=np.float32)
                      if len(self._bias) or self._last_n else None)

    @property
    def truncates(self) -> bool:
        return bool(self._top_k or self._top_p < 1.0 or self._min_p)

    def pick(self, logits: npt.NDArray[np.float32]) -> int:
        """The next token from ``logits`` (not yet accepted: see ``accept``)."""
        if self._work is not None:
            logits = self._adjusted(logits, self._work)
        if self.temperature <= 0.0:
            return int(np.argmax(logits))
        top = np.maximum.reduce(logits)
        if self.truncates:
            return self._draw_truncated(logits, top)
        # ufuncs called directly: numpy's method wrappers cost more than the math here.
        p = self._p[: self._n_vocab]
        np.subtract(logits, top, out=p)
        np.multiply(p, np.float32(1.0 / self.temperature), out=p)
        np.exp(p, out=p)
        block = self.BLOCK
        running = np.add.accumulate(np.add.reduce(self._blocks, axis=1), dtype=np.float64)
        target = (1.0 - self._rng.random()) * running[-1]
        b = min(int(np.searchsorted(running, target)), len(running) - 1)
        inside = np.add.accumulate(self._p[b * block : (b + 1) * block], dtype=np.float64)
        i = int(np.searchsorted(inside, target - (running[b - 1] if b else 0.0)))
        return min(b * block + min(i, block - 1), self._n_vocab - 1)

    def accept(self, token: int) -> None:
        """Count ``token`` as generated, for the penalties."""
        if not self._last_n:
            return
        window, counts = self._window, self._counts
        if len(window) == self._last_n:
            old = window.popleft()
            if counts[old] == 1:
                del counts[old]
            else:
                counts[old] -= 1
        window.append(token)
        counts[token] = counts.get(token, 0) + 1

    def _adjusted(self, logits: npt.NDArray[np.float32],
                  work: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        np.copyto(work, logits)
        if len(self._bias):
            work[self._bias_ids] += self._bias
        if self._counts:
            ids = np.fromiter(self._counts, dtype=np.intp, count=len(self._counts))
            seen = work[ids]
            if self._repeat != 1.0:
                seen = np.where(seen <= 0.0, seen * np.float32(self._repeat),
                                seen / np.float32(self._repeat))
            if self._frequency != 0.0 or self._presence != 0.0:
                counts = np.fromiter(self._counts.values(), dtype=np.float32,
                                     count=len(self._counts))
                seen -= counts * np.float32(self._frequency) + np.float32(self._presence)
            work[ids] = seen
        return work

    def _draw_truncated(self, logits: npt.NDArray[np.float32], top: np.float32) -> int:
        kept: npt.NDArray[np.intp] | None = None  # None: the whole vocabulary
        if self._top_k:
            kept = _highest(logits, self._top_k, top - np.float32(self.TOP_K_SPAN))
        if self._top_p >= 1.0 and kept is None:
            # min-p alone is a floor on the logits: no probabilities needed.
            floor = top + np.float32(math.log(self._min_p))
            kept = np.flatnonzero(logits >= floor)
        elif self._top_p < 1.0 or self._min_p:
            # Probabilities at temperature 1, relative to the most likely token's.
            if kept is None:
                share = self._p[: self._n_vocab]
                np.subtract(logits, top, out=share)
                np.exp(share, out=share)
            else:
                share = np.exp(logits[kept] - top)
            if self._top_p < 1.0:
                chosen = self._nucleus(share)
                share = share[chosen]
                kept = chosen if kept is None else kept[chosen]
            if self._min_p:
                chosen = np.flatnonzero(share >= np.float32(self._min_p))
                kept = chosen if kept is None else kept[chosen]
        assert kept is not None
        weights = np.exp((logits[kept] - top) * np.float32(1.0 / self.temperature))
        running = np.add.accumulate(weights, dtype=np.float64)
        target = (1.0 - self._rng.random()) * running[-1]
        return int(kept[min(int(np.searchsorted(running, target)), len(kept) - 1)])

    def _nucleus(self, share: npt.NDArray[np.float32]) -> npt.NDArray[np.intp]:
        """Indexes into ``share`` of the most likely tokens whose probabilities reach
        ``top_p`` of the total, most likely first (at least one)."""
        goal = self._top_p * float(np.add.reduce(share, dtype=np.float64))
        candidates: npt.NDArray[np.intp] | None = None  # None: a short list, sorted whole
        values = share
        floor = self.TOP_P_FLOOR
        while len(share) > self.BLOCK:
            # Every token outside the candidates is less likely than every one inside, so
            # once the candidates' sum reaches the goal, the tokens kept are among them.
            candidates = np.flatnonzero(share >= np.float32(floor))
            values = share[candidates]
            if not floor or float(np.add.reduce(values, dtype=np.float64)) >= goal:
                break
            floor = floor * 1e-4 if floor > 1e-30 else 0.0
        order = np.argsort(values, kind="stable")[::-1]
        running = np.add.accumulate(values[order], dtype=np.float64)
        chosen = order[: max(1, min(int(np.searchsorted(running, goal)) + 1, len(order)))]
        return chosen if candidates is None else candidates[chosen]


def _highest(logits: npt.NDArray[np.float32], k: int,
             first_floor: np.float32) -> npt.NDArray[np.intp]:
    """The indexes of the ``k`` highest logits, in no particular order (ties at the edge
    broken by position)."""
    candidates = np.flatnonzero(logits >= first_floor)
    if len(candidates) < k:  # too few near the top: all of them compete
        candidates = np.arange(len(logits))
    if len(candidates) > k:
        picked = np.argpartition(logits[candidates], len(candidates) - k)
        candidates = candidates[picked[len(candidates) - k :]]
    return candidates


class Sampler:
    """One sequence's sampler: ``ArraySampler``'s chain, and a grammar when the request
    has one. Not thread-safe; owned by the runner.

    With a grammar, sampling follows llama.cpp's own common sampler: pick a token
    with the chain, check that one token against the grammar (llama.cpp's grammar
    sampler), and only when the grammar rejects it, mask the whole vocabulary and
    pick again. Most tokens pass, so a grammar costs little per token.

    A lazy grammar (``grammar_trigger``) waits until the generated text
    contains the trigger. The token that completes the trigger may carry text
    past it; that text must satisfy the grammar, or the token is rejected
    and another picked.
    """

    def __init__(self, params: SamplingParams, model: LlamaModel) -> None:
        n_vocab = model.info.n_vocab
        self._model = model
        self.chain = ArraySampler(params, n_vocab)
        self.grammar = None
        self._trigger = params.grammar_trigger.encode() if params.grammar_trigger else None
        self._tail = b""
        if params.grammar is not None:
            grammar = C.llama_sampler_init_grammar(model.vocab, params.grammar.encode(), b"root")
            if not grammar:
                raise ValueError("the grammar does not parse")
            self.grammar = grammar
            self._cells = np.zeros(n_vocab, dtype=_TOKEN_DATA)
            self._ids = np.arange(n_vocab, dtype=np.int32)
            self._one = np.zeros(1, dtype=_TOKEN_DATA)
            self._masked = np.empty(n_vocab, dtype=np.float32)

    def sample(self, ctx: LlamaContext, index: int = -1) -> int:
        """Pick (and accept) the next token from output ``index`` of the last decode."""
        logits = ctx.logits(index)
        if self.grammar is None:
            token = self.chain.pick(logits)
        elif self._trigger is not None:
            token = self._sample_awaiting_trigger(logits)
        else:
            token = self.chain.pick(logits)
            if not self._allows(token, float(logits[token])):
                token = self.chain.pick(self._mask(logits))
            C.llama_sampler_accept(self.grammar, token)
        self.chain.accept(token)
        return token

    def _sample_awaiting_trigger(self, logits: npt.NDArray[np.float32]) -> int:
        trigger = self._trigger
        assert trigger is not None
        pieces = self._model.pieces
        masked: npt.NDArray[np.float32] | None = None
        while True:
            token = self.chain.pick(logits if masked is None else masked)
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
        return token

    def _allows(self, token: int, logit: float) -> bool:
        """Whether the grammar, as it stands, accepts ``token`` next."""
        assert self.grammar is not None
        self._one[0] = (token, logit, 0.0)
        self._apply(self.grammar, self._one)
        return bool(np.isfinite(self._one[0]["logit"]))

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
            if not self._allows(token, 0.0):
                C.llama_sampler_free(self.grammar)
                self.grammar = saved
                return False
            C.llama_sampler_accept(self.grammar, token)
        C.llama_sampler_free(saved)
        return True

    def _mask(self, logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``logits`` with every token the grammar refuses next at -inf."""
        assert self.grammar is not None
        cells = self._cells
        cells["id"] = self._ids
        cells["logit"] = logits
        cells["p"] = 0.0
        self._apply(self.grammar, cells)
        masked = self._masked
        masked[cells["id"]] = cells["logit"]
        return masked

    @staticmethod
    def _apply(sampler: C.llama_sampler_p, cells: npt.NDArray[np.void]) -> None:
        array = C.llama_token_data_array(
            data=cells.ctypes.data_as(C.llama_token_data_p), size=len(cells), selected=-1,
            sorted=False,
        )
        C.llama_sampler_apply(sampler, ctypes.byref(array))

    def close(self) -> None:
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

"""The numpy sampler (logit bias, penalties, top-k, top-p, min-p, temperature, the draw)
against the distribution each chain must draw from, computed here the plain way: sort
the vocabulary, cut it as llama.cpp's samplers of the same names do, then softmax."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from kathan.engine.sampling import ArraySampler, SamplingParams

VOCAB = 300  # not a multiple of the 256-token block: the padded tail is drawn over too
DRAWS = 12_000

Floats = npt.NDArray[np.float64]


def _logits() -> npt.NDArray[np.float32]:
    return np.random.default_rng(3).normal(0.0, 1.5, VOCAB).astype(np.float32)


def _softmax(logits: Floats) -> Floats:
    e = np.exp(logits - logits.max())
    return e / e.sum()


def _adjusted(logits: npt.NDArray[np.float32], params: SamplingParams,
              history: list[int]) -> Floats:
    """Bias, then penalties over the last ``penalty_last_n`` tokens of ``history``."""
    out = logits.astype(np.float64)
    for token, bias in params.logit_bias.items():
        out[token] += bias
    for token, count in Counter(history[-params.penalty_last_n:]).items():
        if out[token] <= 0:
            out[token] *= params.repetition_penalty
        else:
            out[token] /= params.repetition_penalty
        out[token] -= count * params.frequency_penalty + params.presence_penalty
    return out


def _expected(logits: npt.NDArray[np.float32], params: SamplingParams,
              history: list[int] = []) -> Floats:  # noqa: B006 - never changed
    adjusted = _adjusted(logits, params, history)
    kept = np.argsort(-adjusted, kind="stable")
    if params.top_k > 0:
        kept = kept[: params.top_k]
    if params.top_p < 1.0:
        running = np.cumsum(_softmax(adjusted[kept]))
        kept = kept[: int(np.searchsorted(running, params.top_p)) + 1]
    if params.min_p > 0.0:
        p = _softmax(adjusted[kept])
        kept = kept[p >= params.min_p * p.max()]
    expected = np.zeros(VOCAB)
    expected[kept] = _softmax(adjusted[kept] / params.temperature)
    return expected


def _chi_square(counts: npt.NDArray[np.int64], expected_p: Floats) -> tuple[float, int]:
    """Pearson's statistic and its degrees of freedom, bins expecting fewer than 5 draws
    pooled into one; a draw where nothing was expected counts as far off."""
    n = counts.sum()
    expected = expected_p * n
    if counts[expected_p == 0].sum():
        return float("inf"), 1
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    wanted = np.append(expected[big], expected[~big].sum())
    keep = wanted > 0
    return float((((observed - wanted) ** 2)[keep] / wanted[keep]).sum()), int(keep.sum()) - 1


def _fits(counts: npt.NDArray[np.int64], expected_p: Floats) -> bool:
    """Within five standard deviations of the statistic's mean (draws are seeded)."""
    statistic, df = _chi_square(counts, expected_p)
    return statistic < df + 5 * (2 * max(df, 1)) ** 0.5 + 5


def _draw(params: SamplingParams, logits: npt.NDArray[np.float32],
          draws: int = DRAWS) -> npt.NDArray[np.int64]:
    sampler = ArraySampler(params, VOCAB)
    counts = np.bincount([sampler.pick(logits) for _ in range(draws)], minlength=VOCAB)
    assert len(counts) == VOCAB  # never past the vocabulary
    return counts


def test_draws_follow_the_biased_tempered_softmax() -> None:
    logits = _logits()
    bias = {3: 4.0, 10: -100.0, VOCAB - 1: 2.0}
    params = SamplingParams(temperature=0.7, seed=5, logit_bias=bias)
    counts = _draw(params, logits, 60_000)
    # About 230 degrees of freedom: the statistic's mean is ~230, its sd ~21.
    statistic, df = _chi_square(counts, _expected(logits, params))
    assert statistic < 340 and 200 < df < 260, (statistic, df)
    # The same draws are far from what ignoring the temperature or the bias would give.
    for wrong in (SamplingParams(temperature=1.0, logit_bias=bias),
                  SamplingParams(temperature=0.7)):
        assert _chi_square(counts, _expected(logits, wrong))[0] > 1000
    assert counts[10] == 0  # a bias of -100 leaves no probability


TRUNCATIONS: list[dict[str, Any]] = [
    {"top_k": 7, "temperature": 1.3}, {"top_k": 60, "temperature": 0.5},
    {"top_p": 0.5, "temperature": 0.5}, {"top_p": 0.95, "temperature": 1.3},
    {"min_p": 0.05, "temperature": 1.3}, {"min_p": 0.3, "temperature": 0.5},
    {"top_k": 40, "top_p": 0.9, "min_p": 0.05, "temperature": 0.8},
    {"top_k": 20, "top_p": 0.8, "logit_bias": {5: 6.0, 7: -100.0}, "temperature": 1.0},
]


@pytest.mark.parametrize("cut", TRUNCATIONS, ids=[str(c) for c in TRUNCATIONS])
def test_truncated_draws_follow_the_cut_distribution(cut: dict[str, Any]) -> None:
    logits = _logits()
    params = SamplingParams(seed=11, **cut)
    temperature = params.temperature
    counts = _draw(params, logits)
    expected = _expected(logits, params)
    assert _fits(counts, expected)
    assert counts[expected == 0].sum() == 0  # nothing cut is ever drawn
    # The checks can fail: without its cut, the chain would draw a cut token about 20
    # times or more, or its draws would not fit.
    untruncated = _expected(logits, SamplingParams(temperature=temperature,
                                                   logit_bias=cut.get("logit_bias", {})))
    assert untruncated[expected == 0].sum() * DRAWS > 20 or not _fits(counts, untruncated)


def test_a_cut_deep_in_a_long_tail_is_exact() -> None:
    # One dominant token and a tail far below it: top-p at 0.9999 keeps part of the
    # tail (under top-p's first threshold), top-k 50 reaches past top-k's first span.
    # A high temperature makes the kept tail's share visible in the draws.
    logits = np.concatenate([[0.0], -12.0 - 0.01 * np.arange(VOCAB - 1)]).astype(np.float32)
    for cut in ({"top_p": 0.9999}, {"top_k": 50}):
        params = SamplingParams(temperature=8.0, seed=2, **cut)  # type: ignore[arg-type]
        expected = _expected(logits, params)
        assert 10 < np.count_nonzero(expected) < VOCAB - 10
        counts = _draw(params, logits)
        assert _fits(counts, expected), cut
        assert counts[expected == 0].sum() == 0


@pytest.mark.parametrize("penalties", [
    {"frequency_penalty": 0.8, "presence_penalty": 0.5},
    {"frequency_penalty": -0.5, "presence_penalty": 0.5, "repetition_penalty": 1.6},
])
def test_penalties_count_the_accepted_tokens(penalties: dict[str, float]) -> None:
    logits = _logits()
    order = np.argsort(-logits)
    negative = int(np.flatnonzero(logits < 0)[0])  # repetition works the other way there
    history = [int(order[0])] * 3 + [int(order[1]), int(order[2]), negative]
    params = SamplingParams(temperature=0.9, seed=4, **penalties)  # type: ignore[arg-type]
    sampler = ArraySampler(params, VOCAB)
    for token in history:
        sampler.accept(token)
    counts = np.bincount([sampler.pick(logits) for _ in range(DRAWS)], minlength=VOCAB)
    assert _fits(counts, _expected(logits, params, history))
    assert not _fits(counts, _expected(logits, params))  # the penalties count


def test_penalties_forget_tokens_past_the_window() -> None:
    logits = np.zeros(VOCAB, dtype=np.float32)
    logits[:3] = (5.0, 4.0, 3.0)
    params = SamplingParams(temperature=0.0, presence_penalty=3.0, penalty_last_n=2)
    sampler = ArraySampler(params, VOCAB)
    for expected, token in [(0, 0), (1, 1), (2, 2)]:  # each in turn falls to 2, 1, 0
        assert sampler.pick(logits) == expected
        sampler.accept(token)
    # The window holds 1 and 2: 0 is forgotten, back at 5.
    assert sampler.pick(logits) == 0
    for token in (7, 8, 0):  # the window holds 8 and 0: 1 and 2 are forgotten too
        sampler.accept(token)
    assert sampler.pick(logits) == 1


def test_a_seed_repeats_its_draws_and_different_seeds_differ() -> None:
    logits = _logits()

    def draws(seed: int, **cut: Any) -> list[int]:
        sampler = ArraySampler(SamplingParams(temperature=1.0, seed=seed, **cut), VOCAB)
        return [sampler.pick(logits) for _ in range(50)]

    for cut in ({}, {"top_p": 0.9}, {"top_k": 40, "min_p": 0.01}):
        assert draws(7, **cut) == draws(7, **cut)
        assert draws(7, **cut) != draws(8, **cut)


def test_greedy_takes_the_adjusted_argmax_and_leaves_the_logits_alone() -> None:
    logits = _logits()
    best, second = (int(t) for t in np.argsort(logits)[::-1][:2])
    before = logits.copy()
    for params in (SamplingParams(temperature=0.0, logit_bias={best: -100.0}),
                   SamplingParams(temperature=0.0, top_k=1, frequency_penalty=100.0)):
        sampler = ArraySampler(params, VOCAB)
        sampler.accept(best)
        assert sampler.pick(logits) == second
    for params in (SamplingParams(temperature=0.0),
                   SamplingParams(temperature=0.5, top_k=1, seed=1),
                   SamplingParams(temperature=0.5, top_p=1e-6, seed=1),
                   SamplingParams(temperature=0.5, min_p=1.0, seed=1)):
        assert ArraySampler(params, VOCAB).pick(logits) == best
    assert np.array_equal(logits, before)  # logprobs read the same buffer afterwards

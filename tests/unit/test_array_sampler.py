"""The numpy sampler of the plain chain (logit bias, temperature, the draw) against the
distribution it must draw from: softmax((logits + bias) / T)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from kathan.engine.sampling import PlainSampler, SamplingParams, is_plain

VOCAB = 300  # not a multiple of the 256-token block: the padded tail is drawn over too


def _logits() -> npt.NDArray[np.float32]:
    return np.random.default_rng(3).normal(0.0, 1.5, VOCAB).astype(np.float32)


def _softmax(logits: npt.NDArray[np.float64], temperature: float) -> npt.NDArray[np.float64]:
    z = logits / temperature
    e = np.exp(z - z.max())
    return e / e.sum()


def _chi_square(counts: npt.NDArray[np.int64], expected_p: npt.NDArray[np.float64]) -> float:
    """Pearson's statistic, bins expecting fewer than 5 draws pooled into one."""
    n = counts.sum()
    expected = expected_p * n
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    wanted = np.append(expected[big], expected[~big].sum())
    keep = wanted > 0
    return float((((observed - wanted) ** 2)[keep] / wanted[keep]).sum())


def test_draws_follow_the_biased_tempered_softmax() -> None:
    logits = _logits()
    bias = {3: 4.0, 10: -100.0, VOCAB - 1: 2.0}
    sampler = PlainSampler(SamplingParams(temperature=0.7, seed=5, logit_bias=bias), VOCAB)
    draws = 60_000
    counts = np.bincount([sampler.pick(logits) for _ in range(draws)], minlength=VOCAB)
    biased = logits.astype(np.float64)
    for token, value in bias.items():
        biased[token] += value
    # About 230 degrees of freedom: the statistic's mean is ~230, its sd ~21.
    assert _chi_square(counts, _softmax(biased, 0.7)) < 340
    # The same draws are far from what ignoring the temperature or the bias would give.
    assert _chi_square(counts, _softmax(biased, 1.0)) > 1000
    assert _chi_square(counts, _softmax(logits.astype(np.float64), 0.7)) > 1000
    assert counts[10] == 0  # a bias of -100 leaves no probability
    assert counts[VOCAB:].sum() == 0 and len(counts) == VOCAB  # never past the vocabulary


def test_a_seed_repeats_its_draws_and_different_seeds_differ() -> None:
    logits = _logits()

    def draws(seed: int) -> list[int]:
        sampler = PlainSampler(SamplingParams(temperature=1.0, seed=seed), VOCAB)
        return [sampler.pick(logits) for _ in range(50)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)


def test_greedy_takes_the_biased_argmax_and_leaves_the_logits_alone() -> None:
    logits = _logits()
    best = int(np.argmax(logits))
    before = logits.copy()
    sampler = PlainSampler(SamplingParams(temperature=0.0, logit_bias={best: -100.0}), VOCAB)
    second = int(np.argsort(logits)[-2])
    assert sampler.pick(logits) == second
    assert np.array_equal(logits, before)  # logprobs read the same buffer afterwards
    assert PlainSampler(SamplingParams(temperature=0.0), VOCAB).pick(logits) == best


def test_only_the_plain_chain_is_drawn_with_numpy() -> None:
    assert is_plain(SamplingParams(temperature=0.8, logit_bias={2: -100.0}, seed=1))
    for other in (SamplingParams(top_p=0.9), SamplingParams(top_k=40),
                  SamplingParams(min_p=0.05), SamplingParams(frequency_penalty=0.5),
                  SamplingParams(presence_penalty=0.1), SamplingParams(repetition_penalty=1.1),
                  SamplingParams(grammar="root ::= \"a\"")):
        assert not is_plain(other)

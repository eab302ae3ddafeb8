"""Sampling parameters and the per-sequence llama.cpp sampler chain.

Sampling happens in C: each sequence gets its own ``llama_sampler`` chain,
ordered as llama.cpp's own server orders it: logit bias, penalties, top-k,
top-p, min-p, temperature, then the final pick (greedy at temperature 0,
otherwise a seeded random draw).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import llama_cpp as C

from kathan.engine.llama import LlamaContext

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

    def with_seed(self, seed: int) -> SamplingParams:
        return replace(self, seed=seed)


class Sampler:
    """A llama.cpp sampler chain for one sequence. Not thread-safe; owned by the runner."""

    def __init__(self, params: SamplingParams, n_vocab: int) -> None:
        chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
        self.ptr = chain
        add = C.llama_sampler_chain_add
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
        return int(C.llama_sampler_sample(self.ptr, ctx.ptr, index))

    def close(self) -> None:
        if self.ptr:
            C.llama_sampler_free(self.ptr)
            self.ptr = None

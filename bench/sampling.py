"""Sampling one token, side by side: llama.cpp's sampler chain (what llama-server runs
per token) and Kathan's ``ArraySampler``, over the same row of logits.

The row is the embedded model's, after a short chat prompt (49,152 tokens). For each
chain the bench times picking a token (and accepting it, for the penalties) many
times, alternating the two, and prints microseconds per token and the ratio.
llama.cpp's chain is built as llama-server builds it from the same parameters:
logit bias, penalties, top-k, top-p, min-p, temperature, then greedy or ``dist``.

    python -m bench.sampling [--picks 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import llama_cpp as C

from kathan.app import embedded_model_path
from kathan.engine.llama import LlamaContext, LlamaModel, init_backend
from kathan.engine.sampling import ArraySampler, SamplingParams

CHAINS: list[tuple[str, dict[str, Any]]] = [
    ("temperature 0.8", {"temperature": 0.8}),
    ("greedy", {"temperature": 0.0}),
    ("top_p 0.9", {"temperature": 0.8, "top_p": 0.9}),
    ("top_k 40", {"temperature": 0.8, "top_k": 40}),
    ("min_p 0.05", {"temperature": 0.8, "min_p": 0.05}),
    ("llama-server defaults", {"temperature": 0.8, "top_k": 40, "top_p": 0.95,
                               "min_p": 0.05}),
    ("penalties", {"temperature": 0.8, "frequency_penalty": 0.5,
                   "presence_penalty": 0.5}),
    ("logit_bias + top_p 0.95", {"temperature": 0.8, "top_p": 0.95,
                                 "logit_bias": {2: -100.0, 100: 5.0}}),
]


def llama_chain(params: SamplingParams, n_vocab: int) -> Any:
    chain = C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
    add = C.llama_sampler_chain_add
    if params.logit_bias:
        biases = (C.llama_logit_bias * len(params.logit_bias))()
        for i, (token, bias) in enumerate(params.logit_bias.items()):
            biases[i] = C.llama_logit_bias(token, bias)
        add(chain, C.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
    if params.frequency_penalty or params.presence_penalty or params.repetition_penalty != 1:
        add(chain, C.llama_sampler_init_penalties(
            n_vocab, params.penalty_last_n, params.repetition_penalty, params.frequency_penalty,
            params.presence_penalty))
    if params.temperature <= 0:
        add(chain, C.llama_sampler_init_greedy())
        return chain
    if params.top_k > 0:
        add(chain, C.llama_sampler_init_top_k(params.top_k))
    if params.top_p < 1:
        add(chain, C.llama_sampler_init_top_p(params.top_p, 1))
    if params.min_p > 0:
        add(chain, C.llama_sampler_init_min_p(params.min_p, 1))
    add(chain, C.llama_sampler_init_temp(params.temperature))
    add(chain, C.llama_sampler_init_dist(1234))
    return chain


def per_pick_us(pick: Callable[[], object], picks: int) -> float:
    start = time.perf_counter()
    for _ in range(picks):
        pick()
    return (time.perf_counter() - start) / picks * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--picks", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    init_backend()
    model = LlamaModel(embedded_model_path())
    ctx = LlamaContext(model, n_ctx=512, n_batch=512, n_threads=2)
    prompt = model.tokenize("<|im_start|>user\nTell me a story about a lighthouse."
                            "<|im_end|>\n<|im_start|>assistant\n", add_special=False)
    ctx.decode(prompt, 0)
    logits = ctx.logits(-1)
    n_vocab = model.info.n_vocab
    print(f"one token from {n_vocab} logits; microseconds per token, median of "
          f"{args.rounds} rounds of {args.picks} picks")
    print(f"{'chain':<26} {'llama.cpp':>10} {'Kathan':>10} {'ratio':>7}")
    for name, fields in CHAINS:
        params = SamplingParams(seed=1, **fields)
        chain = llama_chain(params, n_vocab)
        ours = ArraySampler(params, n_vocab)

        def theirs_pick(chain: Any = chain) -> int:
            return int(C.llama_sampler_sample(chain, ctx.ptr, -1))

        def ours_pick(ours: ArraySampler = ours) -> None:
            ours.accept(ours.pick(logits))

        theirs_us, ours_us = [], []
        for _ in range(args.rounds):
            theirs_us.append(per_pick_us(theirs_pick, args.picks))
            ours_us.append(per_pick_us(ours_pick, args.picks))
        C.llama_sampler_free(chain)
        t, o = statistics.median(theirs_us), statistics.median(ours_us)
        print(f"{name:<26} {t:>10.1f} {o:>10.1f} {t / o:>6.2f}x")
    ctx.close()
    model.close()


if __name__ == "__main__":
    main()

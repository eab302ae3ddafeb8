"""The ceiling: llama.cpp's own single-sequence decode speed on this machine, no HTTP.

Decodes 128 tokens after a short prompt straight through the C API, as
Kathan's runner does, and prints tokens/s. Any server built on the same
llama.cpp cannot stream faster than this.

    python -m bench.raw_decode [--threads 2] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from kathan.app import embedded_model_path
from kathan.engine.llama import LlamaContext, LlamaModel, init_backend
from kathan.engine.sampling import Sampler, SamplingParams


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    init_backend()
    model = LlamaModel(embedded_model_path())
    ctx = LlamaContext(model, n_ctx=2048, n_batch=512, n_threads=args.threads)
    prompt = model.tokenize("<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
                            add_special=False)
    rates, prefills = [], []
    for rep in range(args.reps + 1):
        ctx.remove(0)
        t0 = time.perf_counter()
        ctx.decode(prompt, 0)
        t1 = time.perf_counter()
        sampler = Sampler(SamplingParams(temperature=0.7, seed=rep,
                                         logit_bias={model.info.eos_token: -100}),
                          model)
        pos = len(prompt)
        t2 = time.perf_counter()
        for _ in range(args.tokens):
            token = sampler.sample(ctx)
            ctx.decode([token], pos)
            pos += 1
        t3 = time.perf_counter()
        sampler.close()
        if rep:
            rates.append(args.tokens / (t3 - t2))
            prefills.append((t1 - t0) * 1000)
    print(f"raw llama.cpp decode, {args.threads} threads: "
          f"{statistics.median(rates):.1f} tok/s p50 (min {min(rates):.1f}, max {max(rates):.1f}); "
          f"prefill of {len(prompt)} tokens {statistics.median(prefills):.1f} ms p50")
    ctx.close()
    model.close()


if __name__ == "__main__":
    main()

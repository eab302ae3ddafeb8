"""The batching ceiling: llama.cpp's own decode rate for 1, 4 and 16 sequences, no HTTP.

Each sequence holds a 160-token context; every step decodes one token for
each of them in a single ``llama_decode``, as Kathan's runner does. The rate
(sequences / step time) bounds what any server on the same llama.cpp build
and machine can reach at that concurrency.

    python -m bench.raw_batch [--threads 2] [--steps 24]
"""

from __future__ import annotations

import argparse
import statistics
import time

from kathan.app import embedded_model_path
from kathan.engine.llama import LlamaContext, LlamaModel, init_backend
from kathan.engine.scheduler import Step


def measure(model: LlamaModel, n_seq: int, threads: int, steps: int, context: int) -> float:
    ctx = LlamaContext(model, n_ctx=8192, n_batch=512, n_threads=threads, n_seq_max=max(n_seq, 1))
    text = "The quick brown fox jumps over the lazy dog. " * 60
    tokens = model.tokenize(text, add_special=False)[:context]
    for seq in range(n_seq):
        ctx.decode_steps([Step((seq, 0), seq, 0, tuple(tokens), True)])
    times = []
    for i in range(steps):
        batch = [Step((seq, 0), seq, context + i, (tokens[i],), True) for seq in range(n_seq)]
        start = time.perf_counter()
        ctx.decode_steps(batch)
        times.append(time.perf_counter() - start)
    ctx.close()
    return n_seq / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--context", type=int, default=160)
    args = parser.parse_args()
    init_backend()
    model = LlamaModel(embedded_model_path())
    rates = {n: measure(model, n, args.threads, args.steps, args.context) for n in (1, 4, 16)}
    for n, rate in rates.items():
        print(f"raw llama.cpp batched decode, {n:>2} sequences, {args.threads} threads: "
              f"{rate:7.1f} tok/s  ({rate / rates[1]:.2f}x one sequence)")
    model.close()


if __name__ == "__main__":
    main()

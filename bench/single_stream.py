"""Single-stream decode speed and TTFT through HTTP: Kathan vs llama-cpp-python's server.

Both serve the embedded SmolLM2-135M-Instruct Q4_1 file with the same context
size and thread count, in the same run. Each request streams 128 tokens with
EOS suppressed through logit_bias, so every run decodes the same length. The
prompt is short ("Hello #<run>!") and differs in every run, so neither server
can reuse more than the chat template's shared system-prompt prefix (both
servers reuse a matching prefix).

    python bench/single_stream.py [--runs 20] [--threads 2]
"""

from __future__ import annotations

import argparse

import httpx

from bench.common import (
    Server,
    StreamTiming,
    eos_token,
    median,
    pct,
    start_kathan,
    start_llama_cpp_server,
    timed_stream,
)


def measure(server: Server, runs: int, max_tokens: int, eos: int) -> list[StreamTiming]:
    results = []
    with httpx.Client() as client:
        for i in range(runs + 2):
            body = {
                "messages": [{"role": "user", "content": f"Hello #{i}!"}],
                "max_tokens": max_tokens,
                "temperature": 0.7,
                "seed": i,
                "logit_bias": {str(eos): -100},
            }
            timing = timed_stream(client, server, body)
            if i >= 2:  # two warm-up requests
                results.append(timing)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--peer-defaults", action="store_true",
                        help="also run llama-cpp-python's server with its default thread count")
    args = parser.parse_args()
    eos = eos_token()
    rows = []
    starters = [
        lambda: start_kathan(args.n_ctx, args.threads),
        lambda: start_llama_cpp_server(args.n_ctx, args.threads),
    ]
    if args.peer_defaults:
        starters.append(lambda: start_llama_cpp_server(args.n_ctx, None))
    for start in starters:
        server = start()
        try:
            results = measure(server, args.runs, args.max_tokens, eos)
        finally:
            server.stop()
        ok = [r for r in results if r.error is None]
        rows.append((
            server.name,
            median([r.decode_tps for r in ok]),
            median([r.ttft * 1000 for r in ok]),
            pct([r.ttft * 1000 for r in ok], 99),
            median([float(r.tokens) for r in ok]),
            len(results) - len(ok),
        ))
    print(f"single stream, {args.runs} runs, {args.max_tokens} tokens, {args.threads} threads")
    print(f"{'server':<32}{'decode tok/s p50':>18}{'TTFT p50 ms':>14}{'TTFT p99 ms':>14}"
          f"{'tokens':>8}{'errors':>8}")
    for name, tps, ttft, ttft99, tokens, errors in rows:
        print(f"{name:<32}{tps:>18.1f}{ttft:>14.1f}{ttft99:>14.1f}{tokens:>8.0f}{errors:>8}")
    for name, tps, *_ in rows[1:]:
        print(f"decode ratio kathan / {name}: {rows[0][1] / tps:.2f}x")


if __name__ == "__main__":
    main()

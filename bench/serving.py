"""Closed-loop serving benchmark: Kathan vs llama-cpp-python's OpenAI server.

Both serve the embedded SmolLM2-135M-Instruct Q4_1 file with the same context
size and threads, one after the other in the same run. At each concurrency
level, that many clients each send streaming requests back to back; every
request asks for 128 tokens with EOS suppressed through logit_bias, so all
requests produce the same length. A refused request (503) counts as refused,
not as an error, and its client waits for Retry-After before the next one.

    python -m bench.serving [--levels 1,4,16,32] [--rounds 2]

Prints aggregate output tokens/s, TTFT p50/p99, TPOT p50, errors and refusals.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass, field

import httpx

from bench.common import (
    KEY,
    Server,
    StreamTiming,
    eos_token,
    median,
    pct,
    sse_kind,
    start_kathan,
    start_llama_cpp_server,
)


@dataclass
class Level:
    concurrency: int
    wall: float = 0.0
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    errors: int = 0
    refused: int = 0
    refusal_latency: list[float] = field(default_factory=list)


async def one_request(http: httpx.AsyncClient, server: Server, body: dict[str, object],
                      level: Level) -> float:
    """Send one streamed request; return seconds to wait before the next one."""
    timing = StreamTiming()
    try:
        async with http.stream("POST", f"{server.url}/v1/chat/completions",
                               json={**body, "model": server.model, "stream": True},
                               headers={"Authorization": f"Bearer {KEY}"}) as r:
            if r.status_code == 503:
                await r.aread()
                level.refused += 1
                level.refusal_latency.append(time.perf_counter() - timing.start)
                return float(r.headers.get("retry-after", "1"))
            if r.status_code != 200:
                await r.aread()
                level.errors += 1
                return 0.0
            async for line in r.aiter_lines():
                kind = sse_kind(line)
                if kind == "error":
                    level.errors += 1
                    return 0.0
                if kind == "content":
                    timing.content()
    except httpx.HTTPError:
        level.errors += 1
        return 0.0
    if timing.tokens == 0:
        level.errors += 1
        return 0.0
    level.tokens += timing.tokens
    level.ttft.append(timing.ttft)
    if timing.tokens > 1:
        level.tpot.append(timing.decode_seconds / (timing.tokens - 1))
    return 0.0


async def run_level(server: Server, concurrency: int, rounds: int, max_tokens: int,
                    eos: int) -> Level:
    level = Level(concurrency)
    counter = iter(range(10**9))

    async def client(http: httpx.AsyncClient) -> None:
        for _ in range(rounds):
            i = next(counter)
            body = {
                "messages": [{"role": "user", "content": f"Request {i}: tell me about the sea."}],
                "max_tokens": max_tokens, "temperature": 0.8, "seed": i,
                "logit_bias": {str(eos): -100},
            }
            wait = await one_request(http, server, body, level)
            if wait:
                await asyncio.sleep(wait)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await one_request(http, server, {"messages": [{"role": "user", "content": "warm up"}],
                                         "max_tokens": 8}, Level(1))
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        level.wall = time.perf_counter() - start
    return level


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--levels", default="1,4,16,32")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per level")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--max-running", type=int, default=16)
    parser.add_argument("--max-queued", type=int, default=4)
    parser.add_argument("--queue-timeout", type=float, default=5.0)
    parser.add_argument("--skip-peer", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    eos = eos_token()
    limits = (f"  max_running: {args.max_running}\n  max_queued: {args.max_queued}\n"
              f"  queue_timeout: {args.queue_timeout}\n")
    starters = [lambda: start_kathan(args.n_ctx, args.threads, limits)]
    if not args.skip_peer:
        starters.append(lambda: start_llama_cpp_server(args.n_ctx, args.threads))
    table: dict[str, list[Level]] = {}
    for start in starters:
        server = start()
        try:
            table[server.name] = [
                asyncio.run(run_level(server, c, args.rounds, args.max_tokens, eos))
                for c in levels
            ]
        finally:
            server.stop()
    print(f"closed loop, streaming, {args.max_tokens} tokens per request (EOS suppressed), "
          f"{args.rounds} requests per client, {args.threads} threads; Kathan limits: "
          f"max_running={args.max_running}, max_queued={args.max_queued}, "
          f"queue_timeout={args.queue_timeout:g}s")
    header = (f"{'server':<18}{'conc':>5}{'reqs':>6}{'out tok/s':>11}{'TTFT p50':>10}"
              f"{'TTFT p99':>10}{'TPOT p50':>10}{'errors':>8}{'refused':>9}{'refuse p50':>11}")
    print(header)
    for name, rows in table.items():
        for lv in rows:
            refuse = f"{median(lv.refusal_latency) * 1000:.0f}ms" if lv.refusal_latency else "-"
            print(f"{name:<18}{lv.concurrency:>5}{len(lv.ttft):>6}{lv.tokens / lv.wall:>11.1f}"
                  f"{median(lv.ttft) * 1000:>8.0f}ms{pct(lv.ttft, 99) * 1000:>8.0f}ms"
                  f"{median(lv.tpot) * 1000:>8.1f}ms{lv.errors:>8}{lv.refused:>9}{refuse:>11}")
    if len(table) == 2:
        kathan, peer = table["kathan"], table["llama-cpp-python"]
        for k, p in zip(kathan, peer, strict=True):
            print(f"concurrency {k.concurrency}: kathan / llama-cpp-python output = "
                  f"{(k.tokens / k.wall) / (p.tokens / p.wall):.2f}x")
    kathan = table["kathan"]
    base = next((lv for lv in kathan if lv.concurrency == 1), None)
    if base is not None:
        for lv in kathan:
            print(f"kathan concurrency {lv.concurrency} / concurrency 1 = "
                  f"{(lv.tokens / lv.wall) / (base.tokens / base.wall):.2f}x")


if __name__ == "__main__":
    main()

"""Closed-loop serving benchmark: Kathan vs llama.cpp's own ``llama-server``.

The peer is built from the llama.cpp source that the pinned llama-cpp-python vendors
(``bench/llamacpp.py``; the first run builds it into a cache directory). Both servers
run at once, each idle while the other is measured, and serve the embedded SmolLM2
GGUF with the same context, threads (``-t``/``-tb``), slots (``-np`` = Kathan's
``max_running``), a unified KV cache and flash attention.

At each concurrency level, that many clients each send streaming chat requests back to
back; every request asks for 128 tokens with EOS suppressed through logit_bias, so all
requests produce the same length. Both servers get the same bodies, with the sampling
spelled out (top_k 0, top_p 1, min_p 0: the whole distribution, OpenAI's meaning of a
bare temperature; llama-server's own defaults would cut it to 40 tokens). Levels run at
temperature 0.8 and 0. Each level runs ``--repeat`` times per server, alternating which
server goes first (this machine's speed drifts by 10-20% over minutes; pairs of
neighbouring runs share the drift), each run at least ``--min-requests`` requests;
tokens/s is all of a level's tokens over all of its runs' time.

The last table is llama.cpp's ``llama-batched-bench`` for the same shapes (the prompt's
token count, 128 generated tokens, min(concurrency, slots) sequences at once): its
decode throughput (S_TG), with no HTTP, tokenizing or sampling, is the ceiling for any
server of this GGUF on this machine.

    python -m bench.serving [--levels 1,4,16,32] [--temperatures 0.8,0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.common import (
    KEY,
    Server,
    StreamTiming,
    eos_token,
    free_port,
    median,
    model_path,
    pct,
    sse_kind,
    start_kathan,
    wait_ready,
)
from bench.llamacpp import tools_dir

PROMPT = "Request {i}: tell me about the sea."


@dataclass
class Level:
    concurrency: int
    wall: float = 0.0
    tokens: int = 0
    prompt_tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    tpot: list[float] = field(default_factory=list)
    errors: int = 0
    refused: int = 0
    first_error: str = ""

    def error(self, reason: str) -> None:
        self.errors += 1
        self.first_error = self.first_error or reason

    def add(self, other: Level) -> None:
        """Fold another run of the same level into this one."""
        self.wall += other.wall
        self.tokens += other.tokens
        self.prompt_tokens = other.prompt_tokens or self.prompt_tokens
        self.ttft += other.ttft
        self.tpot += other.tpot
        self.errors += other.errors
        self.refused += other.refused
        self.first_error = self.first_error or other.first_error

    @property
    def throughput(self) -> float:
        return self.tokens / self.wall if self.wall else 0.0


def start_llama_server(bin_dir: Path, n_ctx: int, threads: int, slots: int) -> Server:
    port = free_port()
    process = subprocess.Popen(
        [str(bin_dir / "llama-server"), "-m", str(model_path()), "-c", str(n_ctx),
         "-np", str(slots), "-kvu", "-t", str(threads), "-tb", str(threads), "-fa", "on",
         "--host", "127.0.0.1", "--port", str(port), "--api-key", KEY,
         "-a", "smollm2", "--no-webui"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, "/v1/models")
    return Server("llama-server", url, process, "smollm2")


async def one_request(http: httpx.AsyncClient, server: Server, body: dict[str, object],
                      level: Level) -> float:
    """Send one streamed request; return seconds to wait before the next one."""
    timing = StreamTiming()
    usage: dict[str, int] = {}
    try:
        async with http.stream("POST", f"{server.url}/v1/chat/completions",
                               json={**body, "model": server.model, "stream": True,
                                     "stream_options": {"include_usage": True}},
                               headers={"Authorization": f"Bearer {KEY}"}) as r:
            if r.status_code in (429, 503):
                await r.aread()
                level.refused += 1
                return float(r.headers.get("retry-after", "1"))
            if r.status_code != 200:
                level.error(f"HTTP {r.status_code}: {(await r.aread())[:200]!r}")
                return 0.0
            async for line in r.aiter_lines():
                kind = sse_kind(line)
                if kind == "error":
                    level.error(line[:200])
                    return 0.0
                if kind == "content":
                    timing.content()
                elif kind == "other" and '"usage"' in line:
                    usage = json.loads(line[6:]).get("usage") or usage
    except httpx.HTTPError as exc:
        level.error(repr(exc))
        return 0.0
    if timing.tokens == 0:
        level.error("no content")
        return 0.0
    # Count generated tokens as the server reports them (a chunk may carry several).
    level.tokens += int(usage.get("completion_tokens", timing.tokens))
    level.prompt_tokens = int(usage.get("prompt_tokens", 0))
    level.ttft.append(timing.ttft)
    if timing.tokens > 1:
        level.tpot.append(timing.decode_seconds / (timing.tokens - 1))
    return 0.0


async def run_level(server: Server, concurrency: int, requests: int, max_tokens: int,
                    temperature: float, eos: int) -> Level:
    level = Level(concurrency)
    rounds = max(1, math.ceil(requests / concurrency))
    counter = iter(range(10**9))

    async def client(http: httpx.AsyncClient) -> None:
        for _ in range(rounds):
            i = next(counter)
            body = {
                "messages": [{"role": "user", "content": PROMPT.format(i=i)}],
                "max_tokens": max_tokens, "temperature": temperature, "seed": i,
                "top_p": 1.0, "top_k": 0, "min_p": 0.0,
                "logit_bias": {str(eos): -100},
            }
            wait = await one_request(http, server, body, level)
            if wait:
                await asyncio.sleep(wait)

    # A new connection per request, for both: llama-server may close a kept-alive
    # connection just as the client reuses it ("Server disconnected").
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        await one_request(http, server, {"messages": [{"role": "user", "content": "warm up"}],
                                         "max_tokens": 8}, Level(1))
        start = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
        level.wall = time.perf_counter() - start
    return level


def batched_bench(bin_dir: Path, n_ctx: int, threads: int, prompt: int, max_tokens: int,
                  batches: list[int]) -> dict[int, float]:
    """llama-batched-bench's decode tokens/s for each number of sequences."""
    out = subprocess.run(
        [str(bin_dir / "llama-batched-bench"), "-m", str(model_path()), "-c", str(n_ctx),
         "-kvu", "-fa", "on", "-t", str(threads), "-tb", str(threads),
         "-npp", str(prompt), "-ntg", str(max_tokens),
         "-npl", ",".join(str(b) for b in batches), "--output-format", "jsonl"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return {int(row["pl"]): float(row["speed_tg"]) for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--levels", default="1,4,16,32")
    parser.add_argument("--temperatures", default="0.8,0")
    parser.add_argument("--min-requests", type=int, default=8,
                        help="requests per level at least (each client sends as many)")
    parser.add_argument("--repeat", type=int, default=2,
                        help="runs of each level per server, alternating which goes first")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument("--max-running", type=int, default=16)
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    temperatures = [float(x) for x in args.temperatures.split(",")]
    eos = eos_token()
    bin_dir = tools_dir()
    # Room in the queue for every client: this measures throughput, not refusals.
    config = (f"  max_running: {args.max_running}\n  max_queued: {max(levels)}\n"
              "  queue_timeout: 600\n")
    kathan = start_kathan(args.n_ctx, args.threads, config)
    peer = start_llama_server(bin_dir, args.n_ctx, args.threads, args.max_running)
    results: list[tuple[float, int, dict[str, Level]]] = []
    try:
        order = [kathan, peer]
        for temperature in temperatures:
            for c in levels:
                row = {server.name: Level(c) for server in order}
                for _ in range(args.repeat):
                    for server in order:
                        row[server.name].add(asyncio.run(run_level(
                            server, c, args.min_requests, args.max_tokens, temperature, eos)))
                    order.reverse()
                results.append((temperature, c, row))
    finally:
        kathan.stop()
        peer.stop()
    prompt = next((lv.prompt_tokens for _, _, row in results for lv in row.values()
                   if lv.prompt_tokens), 32)
    shapes = sorted({min(c, args.max_running) for c in levels})
    ceiling = batched_bench(bin_dir, args.n_ctx, args.threads, prompt, args.max_tokens, shapes)

    print(f"closed loop, streaming, {args.max_tokens} tokens per request (EOS suppressed), "
          f"{prompt}-token prompts, {args.threads} threads, {args.max_running} slots, "
          f"n_ctx {args.n_ctx}; llama-server from {bin_dir}")
    print(f"{'temp':>5}{'conc':>5}{'reqs':>6}  {'kathan tok/s':>12}{'llama-server':>13}"
          f"{'ratio':>7}  {'ceiling':>8}  {'TTFT p50 k/l':>15}{'TTFT p99 k/l':>15}"
          f"{'TPOT p50 k/l':>15}{'err, refused k/l':>17}")
    for temperature, c, row in results:
        k, p = row["kathan"], row["llama-server"]
        ratio = k.throughput / p.throughput if p.throughput else float("nan")
        top = ceiling.get(min(c, args.max_running), float("nan"))

        def ms(a: float, b: float) -> str:
            return f"{a * 1000:.0f}/{b * 1000:.0f}ms"

        print(f"{temperature:>5g}{c:>5}{len(k.ttft):>6}  {k.throughput:>12.1f}"
              f"{p.throughput:>13.1f}{ratio:>6.2f}x  {top:>8.1f}  "
              f"{ms(median(k.ttft), median(p.ttft)):>15}"
              f"{ms(pct(k.ttft, 99), pct(p.ttft, 99)):>15}"
              f"{median(k.tpot) * 1000:>7.1f}/{median(p.tpot) * 1000:.1f}ms"
              f"{f'{k.errors}/{p.errors} {k.refused}/{p.refused}':>12}")
        for lv, name in ((k, "kathan"), (p, "llama-server")):
            if lv.first_error:
                print(f"      {name}'s first error: {lv.first_error}")
    print("ceiling: llama-batched-bench S_TG (decode only) for min(conc, slots) sequences")


if __name__ == "__main__":
    main()

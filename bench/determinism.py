"""What ``deterministic: true`` costs: Kathan with it and without, side by side in one run.

Both serve the embedded SmolLM2-135M-Instruct Q4_1 file with the same context and
threads; the deterministic one keeps every batch under llama.cpp's tiled-attention
threshold (n_batch 32) and never decodes one token or one output alone
(engine/llama.py). Each level sends ``concurrency`` streams of ``tokens`` tokens at
once, EOS suppressed, greedy, a different short prompt each; the best of ``--runs``
rounds is kept, in tokens per second over the round. A long prompt's time to first
token (cold, ~1,400 tokens) is measured too.

    python -m bench.determinism [--runs 3] [--threads 2] [--tokens 128]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from openai import AsyncOpenAI

from bench.common import KEY, Server, eos_token, start_kathan

TOPICS = ["cats", "dogs", "rain", "music", "chess", "bread", "trains", "stars", "rivers",
          "glass", "maps", "bees", "snow", "clocks", "paper", "wind"]


async def _stream(client: AsyncOpenAI, model: str, prompt: str, tokens: int, eos: int) -> int:
    reply = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], temperature=0,
        max_tokens=tokens, logit_bias={str(eos): -100})
    assert reply.usage is not None
    return reply.usage.completion_tokens


async def _measure(server: Server, levels: list[int], runs: int, tokens: int,
                   eos: int) -> dict[str, float]:
    out: dict[str, float] = {}
    async with AsyncOpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0) as c:
        await _stream(c, server.model, "Warm up.", 8, eos)
        for level in levels:
            best = 0.0
            for run in range(runs):
                start = time.perf_counter()
                done = await asyncio.gather(*(
                    _stream(c, server.model, f"Write a story about {TOPICS[i % 16]} #{run}.",
                            tokens, eos) for i in range(level)))
                best = max(best, sum(done) / (time.perf_counter() - start))
            out[f"c={level} tok/s"] = best
        system = " ".join(f"Rule {i}.{k}: answer kindly about topic {i}." for i in range(60)
                          for k in range(2))
        start = time.perf_counter()
        await c.chat.completions.create(
            model=server.model, max_tokens=1, temperature=0,
            messages=[{"role": "system", "content": system}, {"role": "user", "content": "Hi"}])
        out["long prompt TTFT s"] = time.perf_counter() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--levels", default="1,4,16")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    eos = eos_token()
    results = {}
    for name, extra in (("default", ""), ("deterministic", "  deterministic: true\n")):
        server = start_kathan(4096, args.threads, extra)
        try:
            results[name] = asyncio.run(_measure(server, levels, args.runs, args.tokens, eos))
        finally:
            server.stop()
    print(f"{'measure':<22}{'default':>12}{'deterministic':>16}{'ratio':>8}")
    for key in results["default"]:
        a, b = results["default"][key], results["deterministic"][key]
        print(f"{key:<22}{a:>12.2f}{b:>16.2f}{b / a:>8.2f}")


if __name__ == "__main__":
    main()

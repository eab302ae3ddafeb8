"""Voice mode: time to the first speakable piece against TTFT, and the shaper's cost.

For each prompt and voice, the same request is streamed twice from a Kathan
serving the embedded model, greedy (temperature 0) so both see the same tokens:

- plain: the persona-composed messages sent as a normal request; its TTFT is
  when the model's first token reaches the client;
- voice: the seed-style request (``finetune`` and the voice fields), whose
  first content is the first speakable piece.

The added time is the pair's difference (target at p50: at most 150 ms). Both
prompts are sent once before timing, so both find their prefix cached.
Then the raw deltas of the plain runs are replayed through the speech shaper
in-process: its cost per piece (target: under 1 ms).

    python -m bench.voice [--rounds 3] [--max-tokens 120]
"""

from __future__ import annotations

import argparse
import json
import time

import httpx

from bench.common import KEY, pct, start_kathan
from kathan.protocol.chat import ChatCompletionRequest
from kathan.voice.persona import with_persona
from kathan.voice.profile import voice_of
from kathan.voice.shaper import SpeechShaper

MODEL = "smollm2-135m-instruct"
PROMPTS = [
    "Hi, introduce yourself?",
    "Tell me something interesting!",
    "What should I pack for a three day trip to London in March?",
    "My order #4521 costs $1,250.50. When will it arrive?",
    "Explain how a refund works, step by step.",
    "नमस्ते, आप कैसे हैं?",
    "¿Puedes presentarte?",
    "Quelle heure est-il à Paris?",
]
VOICES = [
    {"finetune": True, "language": "en", "gender": "female", "accent": "american"},
    {"finetune": True, "language": "en", "gender": "male", "accent": "british"},
    {"finetune": True, "language": "hi", "gender": "female", "accent": "indian"},
    {"finetune": True, "language": "es", "gender": "female", "accent": "mexican"},
]


def stream(client: httpx.Client, url: str, body: dict[str, object]) -> tuple[float, list[str]]:
    """Seconds to the first content, and every content delta."""
    start = time.perf_counter()
    first = 0.0
    deltas: list[str] = []
    with client.stream("POST", f"{url}/v1/chat/completions", json=body,
                       headers={"Authorization": f"Bearer {KEY}"}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices") or ():
                text = choice["delta"].get("content")
                if text:
                    first = first or time.perf_counter() - start
                    deltas.append(text)
    return first, deltas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=120)
    args = parser.parse_args()
    server = start_kathan(4096, 2)
    ttft: list[float] = []
    first_piece: list[float] = []
    added: list[float] = []
    replays: list[tuple[str, list[str]]] = []
    try:
        with httpx.Client(timeout=120) as client:
            for voice_fields in VOICES:
                voice = voice_of(**voice_fields)  # type: ignore[arg-type]
                assert voice is not None
                for prompt in PROMPTS:
                    messages = [{"role": "user", "content": prompt}]
                    request = ChatCompletionRequest.model_validate(
                        {"model": MODEL, "messages": messages})
                    composed = [m.model_dump(exclude_none=True)
                                for m in with_persona(request.messages, voice)]
                    common = {"model": MODEL, "stream": True, "temperature": 0,
                              "max_tokens": args.max_tokens}
                    plain = {**common, "messages": composed}
                    spoken = {**common, "messages": messages, **voice_fields}
                    stream(client, server.url, plain)  # warm both prefixes
                    stream(client, server.url, spoken)
                    for _ in range(args.rounds):
                        t_plain, raw = stream(client, server.url, plain)
                        t_voice, _ = stream(client, server.url, spoken)
                        ttft.append(t_plain * 1000)
                        first_piece.append(t_voice * 1000)
                        added.append((t_voice - t_plain) * 1000)
                    replays.append((voice.locale, raw))
    finally:
        server.stop()

    pieces = 0
    seconds = 0.0
    per_piece: list[float] = []
    for _ in range(20):
        for locale, raw in replays:
            shaper = SpeechShaper(locale)
            start = time.perf_counter()
            out: list[str] = []
            for delta in raw:
                out += shaper.feed(delta)
            out += shaper.flush()
            spent = time.perf_counter() - start
            if out:
                pieces += len(out)
                seconds += spent
                per_piece.append(spent / len(out) * 1000)

    n = len(added)
    print(f"{n} request pairs ({len(VOICES)} voices x {len(PROMPTS)} prompts x {args.rounds}), "
          f"greedy, max_tokens {args.max_tokens}, embedded model, 2 threads")
    print(f"{'':34} {'p50':>8} {'p90':>8}")
    print(f"{'TTFT, plain (ms)':34} {pct(ttft, 50):8.1f} {pct(ttft, 90):8.1f}")
    print(f"{'first speakable piece, voice (ms)':34} {pct(first_piece, 50):8.1f} "
          f"{pct(first_piece, 90):8.1f}")
    print(f"{'added by voice mode (ms)':34} {pct(added, 50):8.1f} {pct(added, 90):8.1f}"
          "   (target p50 <= 150)")
    print(f"shaper: {pieces} pieces from {len(replays)} replies x 20, "
          f"{seconds / pieces * 1000:.3f} ms per piece on average, p99 of replies "
          f"{pct(per_piece, 99):.3f} ms per piece   (target < 1 ms)")


if __name__ == "__main__":
    main()

"""Decode speed with and without a JSON-schema grammar, single stream, through HTTP.

The schema asks for an array of at least 60 short strings, so every request
runs to max_tokens inside the grammar. The plain run suppresses EOS through
logit_bias instead. The tool-call run forces a call (tool_choice "required")
to a function whose parameters are the same schema; its argument fragments
are timed like content. Its prompt is longer (the tools are described in the
system message), which slows decoding by itself, so it is compared with a
plain run given the same system message. All report tokens/s after the
first streamed piece.

    python -m bench.grammar_decode [--runs 10]
"""

from __future__ import annotations

import argparse

import httpx

from bench.common import eos_token, median, start_kathan, timed_stream
from kathan.backends.toolcalls import tools_system_prompt

SCHEMA = {
    "type": "object",
    "properties": {"words": {"type": "array", "items": {"type": "string"}, "minItems": 60}},
    "required": ["words"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    eos = eos_token()
    server = start_kathan(2048, args.threads)
    rates: dict[str, list[float]] = {
        "no grammar": [], "json_schema grammar": [],
        "no grammar, tools prompt": [], "tool-call grammar": []}
    tool = {"type": "function", "function": {"name": "list_words", "parameters": SCHEMA}}
    tools_prompt = tools_system_prompt([tool], parallel=False)
    try:
        with httpx.Client() as client:
            for i in range(args.runs + 1):
                base = {"messages": [{"role": "user", "content": f"List {i} words as JSON."}],
                        "max_tokens": args.max_tokens, "temperature": 0.7, "seed": i}
                bodies = {
                    "no grammar": {**base, "logit_bias": {str(eos): -100}},
                    "json_schema grammar": {**base, "response_format": {
                        "type": "json_schema",
                        "json_schema": {"name": "words", "schema": SCHEMA}}},
                    "no grammar, tools prompt": {
                        **base, "logit_bias": {str(eos): -100},
                        "messages": [{"role": "system", "content": tools_prompt},
                                     *base["messages"]]},  # type: ignore[list-item]
                    "tool-call grammar": {**base, "tools": [tool], "tool_choice": "required",
                                          "parallel_tool_calls": False},
                }
                for name, body in bodies.items():
                    timing = timed_stream(client, server, body)
                    if i and timing.error is None:
                        rates[name].append(timing.decode_tps)
    finally:
        server.stop()
    print(f"kathan single stream, {args.max_tokens} tokens, {args.runs} runs")
    for name, values in rates.items():
        print(f"{name:<26} decode {median(values):6.1f} tok/s p50")
    plain, constrained, plain_tools, calls = (median(v) for v in rates.values())
    print(f"json_schema / no grammar:                    {constrained / plain:.2f}x")
    print(f"tool call / no grammar with the tools prompt: {calls / plain_tools:.2f}x")


if __name__ == "__main__":
    main()

"""A long soak: many streaming connections through Kathan to a fast mock upstream, with
the latency tail and Kathan's memory reported window by window.

Kathan runs as in ``bench.gateway`` (auth, limits and the ledger on, a stored key,
one deployment pointing at ``bench.mock_upstream``). wrk keeps ``--connections``
connections busy with streaming chat requests for ``--duration`` seconds, in
windows of ``--window`` seconds (one wrk run each, back to back). For each
window it prints requests/s, p50/p99/max latency, errors, and Kathan's resident
memory (RSS) at the window's end, so a tail that grows, or memory that keeps
growing after the first minute, shows in the table.

``--baseline REV`` soaks Kathan as of a git revision first (its ``src/``
exported into a temporary folder), then the working tree, with the same mock,
in one run.

    python -m bench.soak [--connections 200] [--duration 180] [--window 30]
                         [--baseline REV]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.gateway import BODY, export_revision, start_kathan, start_mock

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


@dataclass
class Window:
    second: int  # when it ended, from the start of the soak
    rps: float
    p50: float  # ms
    p99: float
    max: float
    errors: int
    rss_mb: float


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def wrk_window(base: str, key: str, connections: int, seconds: int, script: Path) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "30s",
         "-s", str(script), f"{base}/chat/completions"],
        capture_output=True, text=True, check=True).stdout
    latency = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    p50 = re.search(r"50%\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if not (latency and p50 and p99 and rps):
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sockets:
        errors += sum(int(g) for g in sockets.groups())
    return {"p50": _ms(p50.group(1)), "p99": _ms(p99.group(1)), "max": _ms(latency.group(1)),
            "rps": float(rps.group(1)), "errors": errors}


def soak(mock: str, src: Path | None, connections: int, duration: int,
         window: int) -> list[Window]:
    base, key, process = start_kathan(mock, src)
    script = Path(tempfile.mkdtemp()) / "stream.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps({**BODY, 'stream': True}))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    windows: list[Window] = []
    try:
        began = time.monotonic()
        for _ in range(max(1, duration // window)):
            w = wrk_window(base, key, connections, window, script)
            windows.append(Window(second=round(time.monotonic() - began), rps=w["rps"],
                                  p50=w["p50"], p99=w["p99"], max=w["max"],
                                  errors=int(w["errors"]), rss_mb=rss_mb(process.pid)))
            print(f"  {windows[-1]}", flush=True)
    finally:
        process.terminate()
        process.wait(timeout=60)
    return windows


def table(name: str, windows: list[Window]) -> None:
    print(f"\n{name}")
    print(f"{'t (s)':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
          f"{'p99/p50':>8} {'errors':>7} {'RSS MB':>8}")
    for w in windows:
        print(f"{w.second:>6} {w.rps:>8.0f} {w.p50:>8.1f} {w.p99:>8.1f} {w.max:>8.1f} "
              f"{w.p99 / w.p50:>8.1f} {w.errors:>7} {w.rss_mb:>8.1f}")
    later = [w.rss_mb for w in windows if w.second > 60]
    if len(later) >= 2:
        print(f"RSS from the second minute on: {min(later):.1f} to {max(later):.1f} MB "
              f"(growth {later[-1] - later[0]:+.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=200)
    parser.add_argument("--duration", type=int, default=180)
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--baseline", metavar="REV",
                        help="soak Kathan as of this git revision first, in the same run")
    args = parser.parse_args()
    mock, mock_process = start_mock()
    try:
        results: list[tuple[str, list[Window]]] = []
        if args.baseline:
            print(f"Kathan at {args.baseline}:", flush=True)
            results.append((f"Kathan at {args.baseline}", soak(
                mock, export_revision(args.baseline), args.connections, args.duration,
                args.window)))
        print("Kathan (working tree):", flush=True)
        results.append(("Kathan (working tree)",
                         soak(mock, None, args.connections, args.duration, args.window)))
    finally:
        mock_process.terminate()
    print(f"\n{args.connections} streaming connections, {args.window} s windows "
          f"(wrk -t2, mock upstream)")
    for name, windows in results:
        table(name, windows)


if __name__ == "__main__":
    main()

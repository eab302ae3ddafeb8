"""Gateway overhead: Kathan and LiteLLM's proxy in front of the same fast mock upstream.

Kathan runs with auth, limits and the ledger on (a stored key with RPM, TPM,
concurrency and a daily quota set). LiteLLM's proxy is installed in its own
virtual environment (``--litellm-venv``, created on first use with
``pip install 'litellm[proxy]'``), never as a Kathan dependency. Measured:

- sequential latency, JSON and streaming, through each gateway, each request
  paired with one straight to the mock (alternating which goes first);
  "added" is the gateway's p50/p99 minus the mock's over the same pairs;
- requests/s at 32 concurrent connections with wrk (a POST Lua script), JSON:
  the median of ``--rounds`` runs per target, the targets taking turns.

``--baseline REV`` adds Kathan as of a git revision (its ``src/`` exported
from this repository into a temporary folder, run with the same interpreter
and dependencies), measured in the same run as the working tree's, so a
change is compared before and after on one machine in one sitting.
``--no-litellm`` leaves LiteLLM out.

    python -m bench.gateway [--requests 300] [--duration 10] [--rounds 3]
                            [--litellm-venv /tmp/litellm-venv] [--baseline REV] [--no-litellm]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.common import KEY, free_port, pct

BODY = {"model": "mock", "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say something."}]}


def _wait(url: str, process: subprocess.Popen[bytes], headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, headers=headers, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready")


def start_mock() -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "bench.mock_upstream", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/v1"
    _wait(f"{base}/models", process, {})
    return base, process


def export_revision(rev: str) -> Path:
    """The ``src/`` folder of revision ``rev`` of this repository, in a temporary folder."""
    root = Path(__file__).resolve().parents[1]
    out = Path(tempfile.mkdtemp(prefix="kathan-baseline-"))
    archive = subprocess.run(["git", "-C", str(root), "archive", rev, "src"],
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "src"


def start_kathan(mock: str, src: Path | None = None) -> tuple[str, str, subprocess.Popen[bytes]]:
    """Kathan in front of ``mock``: the installed one, or the code in ``src``."""
    home = Path(tempfile.mkdtemp())
    port = free_port()
    config = home / "kathan.yaml"
    config.write_text(
        "local: null\nmodels:\n  - id: mock\n    deployments:\n      - backend: openai\n"
        f"        base_url: {mock}\n        api_key_env: MOCK_KEY\n        model: mock\n"
        "        max_in_flight: 1024\n")
    env = {**os.environ, "KATHAN_API_KEYS": KEY, "KATHAN_LOG_LEVEL": "warning",
           "KATHAN_DATA_DIR": str(home / "data"), "MOCK_KEY": "sk-mock"}
    if src is not None:  # ahead of the installed (editable) package on sys.path
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "kathan", "serve", "--port", str(port), "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    _wait(f"{url}/ready", process, {})
    auth = {"Authorization": f"Bearer {KEY}"}
    account = httpx.post(f"{url}/admin/accounts", headers=auth, json={"name": "bench"}).json()
    key = httpx.post(f"{url}/admin/keys", headers=auth, json={
        "account_id": account["id"], "name": "bench", "limits": {
            "rpm": 10_000_000, "tpm": 2_000_000_000, "max_concurrent": 1024,
            "quota_tokens": 2_000_000_000, "quota_period": "day"}}).json()["key"]
    return f"{url}/v1", key, process


def ensure_litellm(venv: Path) -> Path | None:
    litellm = venv / "bin" / "litellm"
    if litellm.exists():
        return litellm
    print(f"installing LiteLLM's proxy into {venv} (not a Kathan dependency) ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
                       check=True, timeout=1200)
    except (subprocess.SubprocessError, OSError) as exc:
        print(f"LiteLLM could not be installed: {exc}")
        return None
    return litellm if litellm.exists() else None


LITELLM_KEY = "sk-litellm-bench-0123456789abcdef0123456789abcdef"


def start_litellm(binary: Path, mock: str) -> tuple[str, subprocess.Popen[bytes]]:
    """LiteLLM's proxy with a master key (its auth on; it has no database here)."""
    home = Path(tempfile.mkdtemp())
    port = free_port()
    config = home / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: mock\n    litellm_params:\n      model: openai/mock\n"
        f"      api_base: {mock}\n      api_key: sk-mock\n")
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": LITELLM_KEY}
    process = subprocess.Popen(
        [str(binary), "--config", str(config), "--port", str(port), "--host", "127.0.0.1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home)
    base = f"http://127.0.0.1:{port}/v1"
    _wait(f"{base}/models", process, {"Authorization": f"Bearer {LITELLM_KEY}"})
    return base, process


def _timed(client: httpx.Client, base: str, key: str, stream: bool) -> float:
    headers = {"Authorization": f"Bearer {key}"}
    start = time.perf_counter()
    if stream:
        with client.stream("POST", f"{base}/chat/completions", headers=headers,
                           json={**BODY, "stream": True}) as r:
            for _ in r.iter_bytes():
                pass
    else:
        r = client.post(f"{base}/chat/completions", headers=headers, json=BODY)
    if r.status_code != 200:
        raise RuntimeError(f"{base}: HTTP {r.status_code}")
    return (time.perf_counter() - start) * 1000


def sequential(
    direct: tuple[str, str], gateway: tuple[str, str], n: int, stream: bool
) -> tuple[list[float], list[float]]:
    """``n`` requests straight to the mock and ``n`` through the gateway, one at a time,
    interleaved (alternating which goes first), so that both see the same machine: a
    slow spell of a shared host lands on both, not on one of them."""
    straight, through = [], []
    with httpx.Client(timeout=30) as a, httpx.Client(timeout=30) as b:
        for i in range(n + 20):
            if i % 2:
                t_through = _timed(b, *gateway, stream)
                t_straight = _timed(a, *direct, stream)
            else:
                t_straight = _timed(a, *direct, stream)
                t_through = _timed(b, *gateway, stream)
            if i >= 20:
                straight.append(t_straight)
                through.append(t_through)
    return straight, through


def throughput(base: str, key: str, duration: int) -> float:
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps(BODY))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n')
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{duration}s", "-s", str(script), f"{base}/chat/completions"],
        capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise RuntimeError(f"{base}: wrk saw errors:\n{out}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return float(match.group(1)) if match else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3, help="wrk runs per target, alternating")
    parser.add_argument("--litellm-venv", type=Path, default=Path("/tmp/litellm-venv"))
    parser.add_argument("--baseline", metavar="REV",
                        help="also measure Kathan as of this git revision, in the same run")
    parser.add_argument("--no-litellm", action="store_true", help="leave LiteLLM out")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed (Debian: apt-get install wrk)")
    mock, mock_process = start_mock()
    processes = [mock_process]
    targets: list[tuple[str, str, str]] = [("mock (direct)", mock, "sk-mock")]
    try:
        kathan, key, process = start_kathan(mock)
        processes.append(process)
        targets.append(("kathan", kathan, key))
        if args.baseline:
            old, old_key, process = start_kathan(mock, export_revision(args.baseline))
            processes.append(process)
            targets.append((f"kathan@{args.baseline[:9]}", old, old_key))
        binary = None if args.no_litellm else ensure_litellm(args.litellm_venv)
        if binary is not None:
            litellm, process = start_litellm(binary, mock)
            processes.append(process)
            targets.append(("litellm proxy", litellm, LITELLM_KEY))
        rows = []
        direct = (mock, "sk-mock")
        for name, base, token in targets[1:]:
            plain = sequential(direct, (base, token), args.requests, stream=False)
            streamed = sequential(direct, (base, token), args.requests, stream=True)
            rows.append((name, plain, streamed))
        # wrk runs alternate between the targets, so each sees the machine's spells alike.
        rates: dict[str, list[float]] = {name: [] for name, _, _ in targets}
        for _ in range(args.rounds):
            for name, base, token in targets:
                rates[name].append(throughput(base, token, args.duration))
        mock_rps = statistics.median(rates["mock (direct)"])
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"sequential: {args.requests} requests each, interleaved with as many straight to "
          f"the mock; wrk -t2 -c32 -d{args.duration}s (JSON)")
    print(f"{'target':<18} {'JSON p50':>9} {'p99':>7} {'added p50':>10} {'p99':>7}  "
          f"{'stream p50':>10} {'p99':>7} {'added p50':>10} {'p99':>7}  {'req/s @32':>10}")
    for name, (j_direct, j_gate), (s_direct, s_gate) in rows:
        rps = statistics.median(rates[name])
        print(f"{name:<18} {pct(j_gate, 50):9.2f} {pct(j_gate, 99):7.2f} "
              f"{pct(j_gate, 50) - pct(j_direct, 50):10.2f} "
              f"{pct(j_gate, 99) - pct(j_direct, 99):7.2f}  "
              f"{pct(s_gate, 50):10.2f} {pct(s_gate, 99):7.2f} "
              f"{pct(s_gate, 50) - pct(s_direct, 50):10.2f} "
              f"{pct(s_gate, 99) - pct(s_direct, 99):7.2f}  {rps:10.1f}")
        print(f"{'  (mock, paired)':<18} {pct(j_direct, 50):9.2f} {pct(j_direct, 99):7.2f} "
              f"{'':>10} {'':>7}  {pct(s_direct, 50):10.2f} {pct(s_direct, 99):7.2f}")
    print(f"{'mock (direct)':<18} {'':>9} {'':>7} {'':>10} {'':>7}  {'':>10} {'':>7} "
          f"{'':>10} {'':>7}  {mock_rps:10.1f}")
    if "litellm proxy" in rates:
        ratio = statistics.median(rates["kathan"]) / statistics.median(rates["litellm proxy"])
        print(f"kathan / litellm requests/s: {ratio:.1f}x (medians of {args.rounds} alternating "
              f"wrk runs; kathan {', '.join(f'{r:.0f}' for r in rates['kathan'])}; litellm "
              f"{', '.join(f'{r:.1f}' for r in rates['litellm proxy'])})")
    if args.baseline:
        old = f"kathan@{args.baseline[:9]}"
        ratio = statistics.median(rates["kathan"]) / statistics.median(rates[old])
        print(f"kathan / {old} requests/s: {ratio:.2f}x (kathan "
              f"{', '.join(f'{r:.0f}' for r in rates['kathan'])}; {old} "
              f"{', '.join(f'{r:.0f}' for r in rates[old])})")
    print("(latencies in ms)")


if __name__ == "__main__":
    main()

"""Shared helpers for the benchmarks: start servers, time one streamed request."""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

KEY = "sk-bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def model_path() -> Path:
    from kathan.app import embedded_model_path

    return embedded_model_path()


def eos_token() -> int:
    from kathan.engine.llama import LlamaModel, init_backend

    init_backend()
    model = LlamaModel(model_path())
    token = model.info.eos_token
    model.close()
    return token


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]
    model: str

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()


def wait_ready(url: str, process: subprocess.Popen[bytes], probe: str) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            r = httpx.get(url + probe, headers={"Authorization": f"Bearer {KEY}"}, timeout=2)
            if r.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not become ready")


def start_kathan(
    n_ctx: int, threads: int, extra_config: str = "", env: dict[str, str] | None = None
) -> Server:
    port = free_port()
    home = Path(tempfile.mkdtemp())
    config = home / "kathan.yaml"
    config.write_text(f"local:\n  n_ctx: {n_ctx}\n  n_threads: {threads}\n{extra_config}")
    env = {**os.environ, "KATHAN_API_KEYS": KEY, "KATHAN_LOG_LEVEL": "warning",
           "KATHAN_DATA_DIR": str(home / "data"), **(env or {})}
    process = subprocess.Popen(
        [sys.executable, "-m", "kathan", "serve", "--port", str(port), "--config", str(config)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, "/ready")
    return Server("kathan", url, process, "smollm2-135m-instruct")


def start_llama_cpp_server(n_ctx: int, threads: int | None) -> Server:
    """llama-cpp-python's own server; ``threads=None`` keeps its defaults (half the cores)."""
    port = free_port()
    thread_args = [] if threads is None else [
        "--n_threads", str(threads), "--n_threads_batch", str(threads)]
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(model_path()),
         "--n_ctx", str(n_ctx), *thread_args,
         "--port", str(port), "--host", "127.0.0.1", "--api_key", KEY,
         "--model_alias", "smollm2",
         # By default a new request interrupts the stream in progress; serve them all.
         "--interrupt_requests", "False"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process, "/v1/models")
    name = "llama-cpp-python" if threads is not None else "llama-cpp-python (its defaults)"
    return Server(name, url, process, "smollm2")


@dataclass
class StreamTiming:
    """Clock of one streamed request: TTFT is send to first content, decode after that."""

    start: float = field(default_factory=time.perf_counter)
    first: float = 0.0
    last: float = 0.0
    tokens: int = 0
    error: str | None = None

    def content(self) -> None:
        """Record a chunk that carried content."""
        self.last = time.perf_counter()
        self.tokens += 1
        if self.tokens == 1:
            self.first = self.last

    def failed(self, error: str) -> StreamTiming:
        self.error = error
        return self

    @property
    def ttft(self) -> float:
        return self.first - self.start

    @property
    def decode_seconds(self) -> float:
        return self.last - self.first

    @property
    def decode_tps(self) -> float:
        return (self.tokens - 1) / self.decode_seconds if self.decode_seconds > 0 else 0.0


def timed_stream(client: httpx.Client, server: Server, body: dict[str, object]) -> StreamTiming:
    """One streamed request, timed."""
    timing = StreamTiming()
    try:
        with client.stream("POST", f"{server.url}/v1/chat/completions",
                           json={**body, "model": server.model, "stream": True},
                           headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as r:
            if r.status_code != 200:
                r.read()
                return timing.failed(f"HTTP {r.status_code}")
            for line in r.iter_lines():
                kind = sse_kind(line)
                if kind == "error":
                    return timing.failed("stream error")
                if kind == "content":
                    timing.content()
    except httpx.HTTPError as exc:
        return timing.failed(type(exc).__name__)
    return timing


def sse_kind(line: str) -> str | None:
    """Classify one SSE line: "content", "error", "other" chunk, or None (not a chunk)."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    chunk = json.loads(line[6:])
    if "error" in chunk:
        return "error"
    choices = chunk.get("choices") or []
    delta = choices[0].get("delta", {}) if choices else {}
    if delta.get("content") or any(
        (call.get("function") or {}).get("arguments") for call in delta.get("tool_calls") or []
    ):
        return "content"  # tool-call arguments are generated text too
    return "other"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")

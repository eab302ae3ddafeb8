from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

API_KEY = "sk-test-integration"


@dataclass
class Secrets:
    """Every key the run's tests created, and every server log the run wrote: at the end
    of the run, no key may appear in any log (``_no_key_in_any_log``)."""

    keys: list[str]
    logs: list[Path]


SECRETS = Secrets(keys=[], logs=[])


def remember_key(key: str) -> str:
    """Note a key a test created (it must never be logged); returns it."""
    SECRETS.keys.append(key)
    return key


@pytest.fixture(scope="session", autouse=True)
def _no_key_in_any_log() -> Iterator[None]:
    yield
    leaked = []
    for log in SECRETS.logs:
        if not log.exists():
            continue
        text = log.read_text(errors="replace")
        # The whole key, or its secret part after the public prefix.
        leaked += [f"{log}: {key[:14]}..." for key in SECRETS.keys
                   if key in text or key[18:] in text]
    assert not leaked, f"keys found in server logs: {leaked}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    api_key: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def v1(self) -> str:
        return f"{self.base_url}/v1"


def start_server(tmp: Path, config: str = "", env: dict[str, str] | None = None) -> LiveServer:
    """Run `kathan serve` as a real process and wait until /ready says 200."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    config_file = tmp / "kathan.yaml"
    config_file.write_text(config or "{}\n")
    log = tmp / "server.log"
    environment = {
        **os.environ,
        "KATHAN_API_KEYS": API_KEY,
        "KATHAN_DATA_DIR": str(tmp / "data"),  # the store's SQLite file lives here
        **(env or {}),
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kathan", "serve", "--port", str(port),
             "--config", str(config_file)],
            stdout=out, stderr=subprocess.STDOUT, env=environment,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", API_KEY, process, log)
    SECRETS.logs.append(log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kathan exited early:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.base_url}/ready", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"kathan did not become ready:\n{log.read_text()}")


def stop_server(server: LiveServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("live")
    server = start_server(tmp, "local:\n  n_ctx: 2048\n")
    yield server
    stop_server(server)

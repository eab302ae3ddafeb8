"""SIGTERM on a real server under load: what each request in flight gets, what the
ledger says, and what comes after.

The long requests cannot end by themselves before the grace is over: the model's
end-of-turn tokens are banned with ``logit_bias``, so they run to ``max_tokens``.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import LiveServer, start_server
from tests.integration.test_accounts_live import make_key

MODEL = "smollm2-135m-instruct"
GRACE = 8
CONFIG = (f"shutdown_grace_seconds: {GRACE}\n"
          "local:\n  n_ctx: 2048\n  max_running: 8\n")
# SmolLM2's <|endoftext|> (0) and <|im_end|> (2): banned, the reply runs to max_tokens.
ENDLESS = {"logit_bias": {"0": -100, "2": -100}}


def body(max_tokens: int, stream: bool, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "stream": stream, **extra,
            "messages": [{"role": "user", "content": "Tell me a long story."}]}


@dataclass
class Outcome:
    """What one client saw."""

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    events: list[tuple[str | None, str]] = field(default_factory=list)  # (event, data)
    json: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def contents(self) -> int:
        n = 0
        for event, data in self.events:
            if event is None and data != "[DONE]":
                delta = json.loads(data)["choices"]
                n += bool(delta and delta[0]["delta"].get("content"))
        return n


def run(server: LiveServer, key: str, request: dict[str, Any], outcome: Outcome) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    try:
        with httpx.Client(timeout=120) as client:
            if not request["stream"]:
                r = client.post(f"{server.v1}/chat/completions", json=request, headers=headers)
                outcome.status, outcome.headers, outcome.json = r.status_code, dict(r.headers), r.json()
                return
            with client.stream("POST", f"{server.v1}/chat/completions", json=request,
                               headers=headers) as r:
                outcome.status, outcome.headers = r.status_code, dict(r.headers)
                event: str | None = None
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        outcome.events.append((event, line[6:]))
                        event = None
    except BaseException as exc:  # noqa: BLE001 - the test reports it
        outcome.error = exc
    finally:
        outcome.done.set()


def start(server: LiveServer, key: str, request: dict[str, Any]) -> Outcome:
    outcome = Outcome()
    threading.Thread(target=run, args=(server, key, request, outcome), daemon=True).start()
    return outcome


def rows(tmp_path: Path, key_id: str) -> list[sqlite3.Row]:
    db = sqlite3.connect(tmp_path / "data" / "kathan.db")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM usage WHERE key_id = ?", (key_id,)).fetchall()
    finally:
        db.close()


def wait_for(predicate: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_sigterm_drains_then_cuts_cleanly(tmp_path: Path) -> None:
    server = start_server(tmp_path, CONFIG)
    key = make_key(server)
    long_streams = [start(server, key["key"], body(1800, True, **ENDLESS)) for _ in range(2)]
    long_json = start(server, key["key"], body(1800, False, **ENDLESS))
    short_stream = start(server, key["key"], body(40, True, **ENDLESS))
    short_json = start(server, key["key"], body(40, False, **ENDLESS))
    wait_for(lambda: all(o.contents >= 3 for o in long_streams + [short_stream]), 60)

    began = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    # At once: the replica says it is leaving, and takes nothing new, socket still open.
    wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 503, 2)
    refused = httpx.post(f"{server.v1}/chat/completions", json=body(4, False),
                         headers={"Authorization": f"Bearer {key['key']}"})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert int(refused.headers["retry-after"]) >= 1
    assert httpx.get(f"{server.base_url}/health").status_code == 200

    server.process.wait(timeout=GRACE + 20)
    stopped = time.monotonic() - began
    assert GRACE <= stopped < GRACE + 10
    for o in [*long_streams, long_json, short_stream, short_json]:
        assert o.done.wait(5) and o.error is None, o.error

    # Within the grace: answered in full.
    assert short_json.status == 200
    assert short_json.json["choices"][0]["finish_reason"] == "length"
    assert short_stream.events[-1] == (None, "[DONE]")
    assert not any(event == "error" for event, _ in short_stream.events)
    # Past it: a stream ends with an error event and [DONE], a JSON request gets a 503.
    for o in long_streams:
        assert o.status == 200
        event, data = o.events[-2]
        assert event == "error" and json.loads(data)["error"]["code"] == "shutting_down"
        assert o.events[-1] == (None, "[DONE]")
    assert long_json.status == 503
    assert long_json.json["error"]["code"] == "shutting_down"
    assert int(long_json.headers["retry-after"]) >= 1

    log = server.log.read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
    assert "shutting down: cutting 3 requests" in log, log

    recorded = rows(tmp_path, key["id"])
    assert len(recorded) == 5  # the refused request was not admitted: no row
    cut = [r for r in recorded if r["error_code"] == "shutting_down"]
    assert len(cut) == 3
    for r in cut:
        assert (r["status"], r["http_status"]) == ("failed", 503)
        assert r["prompt_tokens"] > 0 and r["completion_tokens"] > 0
    streamed_cut = sorted(r["completion_tokens"] for r in cut if r["streamed"])
    # Charged at least what each client received (a token may be in no chunk yet).
    assert all(t >= min(o.contents for o in long_streams) for t in streamed_cut)
    done = [r for r in recorded if r["status"] == "succeeded"]
    assert sorted(r["completion_tokens"] for r in done) == [40, 40]


def test_a_second_signal_stops_at_once(tmp_path: Path) -> None:
    server = start_server(tmp_path, "shutdown_grace_seconds: 120\n"
                          "local:\n  n_ctx: 2048\n  max_running: 2\n")
    key = make_key(server)
    stream = start(server, key["key"], body(1800, True, **ENDLESS))
    wait_for(lambda: stream.contents >= 3, 60)
    server.process.send_signal(signal.SIGTERM)
    wait_for(lambda: httpx.get(f"{server.base_url}/ready").status_code == 503, 2)
    assert server.process.poll() is None  # draining: the stream runs on
    server.process.send_signal(signal.SIGINT)
    try:
        server.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise
    assert stream.done.wait(5)

"""The local engine's ``Retry-After`` on a real server: derived from the rate requests
finish, and honoured: a client refused under a steady load that waits what it was
told is admitted."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import API_KEY, LiveServer, start_server, stop_server

# One decode thread: another process's llama.cpp threads on the same cores would slow
# both many times over.
CONFIG = "local:\n  n_ctx: 1024\n  n_threads: 1\n  max_running: 1\n  max_queued: 1\n"
# A queue place given up after half a second; before any request finished the engine
# would say retry_after_seconds (30 here), so a shorter wait is the derived one.
TIMEOUT_CONFIG = ("retry_after_seconds: 30\n"
                  "local:\n  n_ctx: 1024\n  n_threads: 1\n  max_running: 1\n"
                  "  max_queued: 1\n  queue_timeout: 0.5\n")


def ask(server: LiveServer, max_tokens: int) -> httpx.Response:
    return httpx.post(
        f"{server.v1}/chat/completions", timeout=60,
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"model": "smollm2-135m-instruct", "max_tokens": max_tokens,
              "logit_bias": {"0": -100, "2": -100},  # no early end: max_tokens each time
              "messages": [{"role": "user", "content": "Count to ten."}]})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path, CONFIG)
    yield live
    stop_server(live)


@pytest.fixture
def impatient_server(tmp_path: Path) -> Iterator[LiveServer]:
    live = start_server(tmp_path, TIMEOUT_CONFIG)
    yield live
    stop_server(live)


def test_a_refused_client_that_waits_its_retry_after_is_admitted(server: LiveServer) -> None:
    for _ in range(3):  # the engine has seen requests finish: it knows its rate
        assert ask(server, 8).status_code == 200
    stop = threading.Event()
    steady: list[int] = []

    def load() -> None:  # one client, a request at a time with a pause between
        while not stop.is_set():
            steady.append(ask(server, 8).status_code)
            time.sleep(0.2)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        refused = None
        with ThreadPoolExecutor(2) as pool:
            for _ in range(50):  # two at once, beside the load: over 1 slot + 1 queued
                answers = list(pool.map(lambda _: ask(server, 24), range(2)))
                refused = next((r for r in answers if r.status_code == 503), None)
                if refused is not None:
                    break
        assert refused is not None, "the engine never refused a request"
        error = refused.json()["error"]
        assert error["code"] == "engine_overloaded"
        wait = int(refused.headers["retry-after"])
        assert 1 <= wait <= 60 and f"Retry in {wait} s" in error["message"]
        time.sleep(wait)
        assert ask(server, 24).status_code == 200  # waited as told: admitted
    finally:
        stop.set()
        worker.join()
    assert 200 in steady  # the load went on (it may have met a full queue too)


def test_a_request_that_waited_out_queue_timeout_is_told_when_to_come_back(
        impatient_server: LiveServer) -> None:
    for _ in range(2):  # the engine has seen requests finish
        assert ask(impatient_server, 8).status_code == 200
    with ThreadPoolExecutor(2) as pool:  # one slot: the second waits behind the first
        answers = list(pool.map(lambda _: ask(impatient_server, 150), range(2)))
    assert sorted(r.status_code for r in answers) == [200, 503]
    timed_out = next(r for r in answers if r.status_code == 503)
    error = timed_out.json()["error"]
    assert error["code"] == "engine_overloaded"
    assert "waited 0.5s in the queue" in error["message"]
    wait = int(timed_out.headers["retry-after"])
    assert 1 <= wait < 30 and f"Retry in {wait} s" in error["message"]

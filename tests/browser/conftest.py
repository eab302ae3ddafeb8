"""The console in a real browser: Debian's Chromium driven by Playwright for Python.

No browser is downloaded: Playwright launches the system's ``chromium`` (or the one
named by ``KATHAN_TEST_CHROMIUM``). Without one, these tests skip with the reason,
unless ``CI`` is set (``.ci/run`` installs the package), where they fail.

One live Kathan serves them all: the embedded model, plus ``html-upstream``, an
OpenAI-compatible upstream (the scriptable fake at the provider seam) whose reply is
markup, for the test that model output is rendered as text.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEY, LiveServer, start_server, stop_server
from tests.upstreams.openai_fake import Script, serve

HTML_REPLY = ('Markup: <script>window.pwned = 1</script> <img src=x '
              'onerror="window.pwned=2"> <b>bold</b> &amp; done.')
UPSTREAM_KEY = "sk-upstream-browser"
PASSWORD = "correct horse battery"
LOGIN_FAILURES = 3


def chromium_path() -> str:
    found = os.environ.get("KATHAN_TEST_CHROMIUM") or shutil.which("chromium") \
        or shutil.which("chromium-browser")
    if found is None:
        message = "no Chromium found (install Debian's `chromium` package)"
        if os.environ.get("CI"):
            pytest.fail(f"{message}, and CI is set: the browser tests must run in CI")
        pytest.skip(f"{message}; set KATHAN_TEST_CHROMIUM to use another")
    return found


class _Upstream:
    """The fake upstream on its own event loop, in a thread, for the whole module."""

    def __init__(self) -> None:
        self.script = Script(reply=HTML_REPLY, api_key=UPSTREAM_KEY, chunk_delay=0.02)
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete,
                                        args=(self._run(),), daemon=True)

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self.script) as url:
            self.url = url
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> _Upstream:
        self._thread.start()
        assert self._ready.wait(10), "the fake upstream did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


@dataclass
class Console:
    server: LiveServer
    tmp: Path

    @property
    def url(self) -> str:
        return self.server.base_url + "/"

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.base_url, timeout=60,
                            headers={"Authorization": f"Bearer {API_KEY}"})

    def account(self, email: str, *, admin: bool = False) -> dict[str, Any]:
        """An account made by an admin (the way a closed server gets its users)."""
        with self.admin() as c:
            r = c.post("/admin/accounts", json={"name": email.split("@")[0], "email": email,
                                                "password": PASSWORD, "is_admin": admin})
            assert r.status_code == 201, r.text
            account: dict[str, Any] = r.json()
            return account


@pytest.fixture(scope="package")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    chromium_path()  # skip before starting anything when there is no browser
    tmp = tmp_path_factory.mktemp("console")
    with _Upstream() as upstream:
        config = (
            "registration: open\n"
            "registrations_per_minute: 1000\n"
            f"login_failures: {LOGIN_FAILURES}\n"
            "login_failure_delay_seconds: 0.1\n"
            "ledger_flush_seconds: 0.05\n"
            "local:\n  n_ctx: 2048\n  max_running: 4\n"
            "models:\n"
            "  - id: html-upstream\n    deployments:\n"
            f"      - backend: openai\n        base_url: {upstream.url}\n"
            "        api_key_env: UPSTREAM_KEY\n        model: markup-model\n"
        )
        server = start_server(tmp, config, {"UPSTREAM_KEY": UPSTREAM_KEY})
        try:
            yield Console(server, tmp)
        finally:
            stop_server(server)


# Package-scoped: Playwright's sync API keeps an event loop running in this thread
# while it is open, which the asyncio tests of the other packages cannot share.
@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=path, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Any, console: Console) -> Iterator[Any]:
    context = browser.new_context(
        base_url=console.server.base_url, viewport={"width": 1280, "height": 800},
        permissions=["clipboard-read", "clipboard-write"])
    context.set_default_timeout(15_000)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    # A console message about the Content-Security-Policy means the page broke its own rule.
    pg.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text
          else None)
    try:
        yield pg
    finally:
        context.close()
    assert errors == [], f"the page reported errors: {errors}"

"""Every page of the console, at a phone's width and a wide screen's, light and dark:
nothing wider than the screen, a label on every control, the keyboard reaches the
navigation. Each page is photographed as it is checked; with
``KATHAN_CONSOLE_SCREENSHOTS=docs/console`` the pictures go where the README shows
them (``make screenshots``)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import PASSWORD, Console
from tests.browser.test_console import MODEL, log_in, tid
from tests.conftest import remember_key

PAGES = ("login", "signup", "keys", "usage", "playground", "models", "admin")
SIZES = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 375, "height": 812}}

# Every form control has a name a screen reader can say: a <label>, aria-label or
# aria-labelledby. Returns the ones that have none.
UNLABELLED = """() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter(el => el.offsetParent !== null && el.type !== 'hidden')
  .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                && !el.getAttribute('aria-labelledby')
                && !(el.tagName === 'BUTTON' && el.textContent.trim()))
  .map(el => el.outerHTML.slice(0, 120))"""


@pytest.fixture(scope="module")
def admin_with_history(console: Console) -> str:
    """An admin account with two keys and some usage, so that pages have data to show."""
    address = f"admin-{uuid.uuid4().hex[:8]}@example.com"
    account = console.account(address, admin=True)
    with console.admin() as c:
        keys = [remember_key(c.post("/admin/keys", json={
            "account_id": account["id"], "name": name}).json()["key"])
            for name in ("production", "staging")]
        c.patch(f"/admin/accounts/{account['id']}", json={
            "limits": {"rpm": 60, "quota_tokens": 200000, "quota_period": "month"}})
    for key in keys:
        for _ in range(2):
            r = httpx.post(f"{console.server.v1}/chat/completions", timeout=60,
                           headers={"Authorization": f"Bearer {key}"},
                           json={"model": MODEL, "max_tokens": 8,
                                 "messages": [{"role": "user", "content": "Hello"}]})
            assert r.status_code == 200, r.text
    return address


def _shots() -> Path | None:
    where = os.environ.get("KATHAN_CONSOLE_SCREENSHOTS")
    return Path(where) if where else None


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize("size", list(SIZES))
def test_every_page_fits_and_labels_its_controls(
    browser: Any, console: Console, admin_with_history: str, size: str, scheme: str,
    tmp_path: Path,
) -> None:
    context = browser.new_context(base_url=console.server.base_url, viewport=SIZES[size],
                                  color_scheme=scheme, device_scale_factor=1)
    context.set_default_timeout(15_000)
    page = context.new_page()
    folder = _shots() or tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    try:
        for name in PAGES:
            if name == "keys":
                log_in(page, admin_with_history)
            if name in ("login", "signup"):
                page.goto(f"/#/{name}")
            else:
                page.goto(f"/#/{name}")
            root = page.locator(f'[data-page="{name}"]')
            expect(root).to_be_visible()
            expect(page.locator(".loading:visible"), name).to_have_count(0, timeout=15_000)
            if name == "playground":
                page.fill(tid("pg-input"), "Say hello in five words.")
                page.fill(tid("pg-max-tokens"), "16")
                page.click(tid("pg-send"))
                expect(page.locator(tid("pg-reply")).last).to_have_attribute(
                    "data-state", "done", timeout=30_000)
            background = page.evaluate(
                "getComputedStyle(document.body).backgroundColor")
            dark = sum(int(v) for v in background[background.index("(") + 1:-1]
                       .split(",")[:3]) < 3 * 128
            assert dark == (scheme == "dark"), (name, background)
            wide = page.evaluate("document.documentElement.scrollWidth")
            assert wide <= SIZES[size]["width"], f"{name} is {wide} px wide at {size}"
            assert page.evaluate(UNLABELLED) == [], name
            page.screenshot(path=str(folder / f"{name}-{size}-{scheme}.png"),
                            full_page=size == "desktop")
        # The keyboard reaches the navigation from the top of the page.
        page.goto("/#/keys")
        expect(page.locator('[data-page="keys"]')).to_be_visible()
        focused = []
        for _ in range(12):
            page.keyboard.press("Tab")
            focused.append(page.evaluate(
                "document.activeElement && document.activeElement.dataset.testid"))
        if size == "desktop":
            assert {"nav-keys", "nav-usage", "nav-playground"} <= set(focused), focused
        else:
            assert any(f for f in focused), focused
    finally:
        context.close()
    assert PASSWORD  # the admin logs in with the shared test password

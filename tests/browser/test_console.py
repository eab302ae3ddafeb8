"""The console, end to end, in Debian's Chromium: what a person does, and what the
browser must refuse. Each test uses the real server (embedded model), the real
store, and the official openai SDK where a key is used."""

from __future__ import annotations

import http.server
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI
from playwright.sync_api import expect

from tests.browser.conftest import LOGIN_FAILURES, PASSWORD, Console
from tests.conftest import free_port, remember_key

MODEL = "smollm2-135m-instruct"


def email() -> str:
    return f"user-{uuid.uuid4().hex[:10]}@example.com"


def tid(name: str) -> str:
    return f'[data-testid="{name}"]'


def eventually(check: Callable[[], Any], timeout: float = 10.0, reload: Any = None) -> Any:
    """``check()`` once it is truthy (reloading ``reload``, a page, between tries)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            assert value, "condition not met in time"
            return value
        time.sleep(0.25)
        if reload is not None:
            reload.reload()


def sign_up(page: Any, address: str) -> None:
    page.goto("/#/signup")
    page.fill(tid("signup-email"), address)
    page.fill(tid("signup-password"), PASSWORD)
    page.click(tid("signup-submit"))
    page.wait_for_selector('[data-page="keys"]')  # signed up and logged in


def log_in(page: Any, address: str, password: str = PASSWORD) -> None:
    page.goto("/#/login")
    page.fill(tid("login-email"), address)
    page.fill(tid("login-password"), password)
    page.click(tid("login-submit"))


def create_key(page: Any, name: str) -> str:
    page.click(tid("nav-keys"))
    page.click(tid("key-create"))
    page.fill(tid("key-name"), name)
    page.click(tid("key-create-submit"))
    secret = page.locator(tid("key-secret"))
    secret.wait_for()
    token: str = remember_key(secret.text_content() or "")
    assert token.startswith("sk-kathan-")
    return token


def test_sign_up_create_a_key_use_it_with_the_sdk_and_see_it_in_usage(
    page: Any, console: Console
) -> None:
    address = email()
    sign_up(page, address)
    assert address in (page.text_content("header") or "")
    key = create_key(page, "laptop")
    # Copy: the clipboard holds the key; the page stores it nowhere.
    page.click(tid("key-copy"))
    assert page.evaluate("navigator.clipboard.readText()") == key
    stored = page.evaluate("JSON.stringify([localStorage, sessionStorage, document.cookie])")
    assert key not in stored and "ks-" not in stored  # the session cookie is HttpOnly
    page.click(tid("key-done"))
    assert page.locator(tid("key-secret")).count() == 0  # shown once, gone when closed
    row = page.locator(tid("key-row"))
    expect(row).to_have_count(1)
    expect(row).to_contain_text(key[:18])

    with OpenAI(base_url=console.server.v1, api_key=key, max_retries=0) as client:
        reply = client.chat.completions.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "Hi"}])
    assert reply.usage is not None

    page.click(tid("nav-usage"))
    total = page.locator(tid("usage-total-requests"))
    eventually(lambda: (total.text_content() or "").strip() == "1", reload=page)
    table = page.locator(tid("usage-table")).text_content() or ""
    assert MODEL in table and str(reply.usage.total_tokens) in table
    assert page.locator(f'{tid("usage-chart")} rect').count() >= 1
    # The table says what the API says.
    api = page.request.get("/v1/usage").json()["data"]
    assert sum(b["requests"] for b in api) == 1
    assert sum(b["total_tokens"] for b in api) == reply.usage.total_tokens
    # The CSV export holds the same numbers.
    with page.expect_download() as download:
        page.click(tid("usage-export"))
    lines = Path(download.value.path()).read_text().strip().splitlines()
    header = lines[0].split(",")
    [row] = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    assert row["model"] == MODEL and row["requests"] == "1"
    assert row["endpoint"] == "chat/completions" and "chat/completions" in table
    assert row["total_tokens"] == str(reply.usage.total_tokens)
    # A fresh log-in finds the account and its key again.
    page.click(tid("logout"))
    page.wait_for_selector(tid("login-email"))
    log_in(page, address)
    page.wait_for_selector('[data-page="keys"]')
    expect(page.locator(tid("key-row"))).to_have_count(1)


def test_an_ended_session_sends_the_page_back_to_log_in(page: Any, console: Console) -> None:
    address = email()
    sign_up(page, address)
    # The session ends on the server (it expired, or was logged out elsewhere).
    csrf = page.request.get("/v1/auth/session").json()["csrf_token"]
    assert page.request.delete("/v1/auth/session", headers={"X-CSRF-Token": csrf}).status == 204
    page.click(tid("nav-usage"))
    page.wait_for_selector(tid("login-email"))
    expect(page.locator("body")).to_contain_text("Your session has expired")
    log_in(page, address)
    page.wait_for_selector('[data-page="keys"]')


def test_revoking_a_key_makes_the_sdk_get_401(page: Any, console: Console) -> None:
    sign_up(page, email())
    key = create_key(page, "doomed")
    page.click(tid("key-done"))
    with OpenAI(base_url=console.server.v1, api_key=key, max_retries=0) as client:
        assert client.models.list().data
        page.click(tid("key-revoke"))
        page.click(tid("confirm-ok"))
        expect(page.locator(tid("key-row"))).to_contain_text("revoked", ignore_case=True)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()


def _playground(page: Any, model: str = MODEL) -> None:
    page.click(tid("nav-playground"))
    page.wait_for_selector(f'{tid("pg-model")} option[value="{model}"]', state="attached")
    page.select_option(tid("pg-model"), model)


def test_playground_streams_and_stop_ends_the_request(page: Any, console: Console) -> None:
    sign_up(page, email())
    _playground(page)
    page.fill(tid("pg-max-tokens"), "1500")
    page.fill(tid("pg-input"), "Write a very long story about a dragon and a knight.")
    # Every version of the reply's text the page shows, as it changes.
    page.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => {
          const r = document.querySelector('[data-testid="pg-reply"]');
          if (r && r.textContent && window.seen.at(-1) !== r.textContent)
            window.seen.push(r.textContent);
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")
    page.click(tid("pg-send"))
    reply = page.locator(tid("pg-reply")).last
    eventually(lambda: reply.get_attribute("data-state") == "streaming")
    eventually(lambda: page.evaluate("window.seen.length") >= 5)
    page.click(tid("pg-stop"))
    eventually(lambda: reply.get_attribute("data-state") == "stopped")
    seen = page.evaluate("window.seen")
    # Pieces arrived one after another: each version extends the one before.
    assert len(seen) >= 5 and all(b.startswith(a) for a, b in zip(seen, seen[1:]))
    kept = reply.text_content() or ""
    assert len(kept) >= len(seen[4])
    time.sleep(1)
    assert reply.text_content() == kept  # nothing more arrives after the stop
    # The server saw the client leave: the request is recorded as cancelled, under the
    # playground's own usage, charged what it streamed.
    def cancelled() -> list[dict[str, Any]]:
        rows = page.request.get("/v1/usage?key_id=console").json()["data"]
        return [r for r in rows if r["cancelled"] == 1]
    [row] = eventually(cancelled)
    assert row["requests"] == 1 and 5 <= row["completion_tokens"] < 1500


def test_playground_time_to_first_token_and_rate_and_view_code(
    page: Any, console: Console
) -> None:
    sign_up(page, email())
    key = create_key(page, "code")
    page.click(tid("key-done"))
    _playground(page)
    page.fill(tid("pg-system"), "You are terse.")
    page.fill(tid("pg-max-tokens"), "12")
    page.fill(tid("pg-temperature"), "0")
    page.fill(tid("pg-seed"), "7")
    page.fill(tid("pg-input"), "Say hello.")
    page.click(tid("pg-send"))
    reply = page.locator(tid("pg-reply")).last
    eventually(lambda: reply.get_attribute("data-state") == "done", timeout=30)
    assert re.search(r"\d\s*m?s\b", page.text_content(tid("pg-ttft")) or "")
    assert re.search(r"\d", page.text_content(tid("pg-tps")) or "")
    # A second turn sends the whole conversation.
    page.fill(tid("pg-input"), "Again.")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click(tid("pg-send"))
    body = sent.value.post_data_json
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["temperature"] == 0 and body["seed"] == 7 and body["max_tokens"] == 12
    eventually(lambda: page.locator(tid("pg-reply")).last.get_attribute("data-state") == "done",
               timeout=30)
    page.click(tid("pg-view-code"))
    curl = page.text_content(tid("code-curl")) or ""
    python = page.text_content(tid("code-python")) or ""
    js = page.text_content(tid("code-js")) or ""
    assert console.server.v1 in curl and "YOUR_API_KEY" in curl and '"seed": 7' in curl
    assert "from openai import OpenAI" in python and "YOUR_API_KEY" in python
    assert "import OpenAI from" in js and "YOUR_API_KEY" in js
    assert "ks-" not in curl + python + js
    # The Python shown is the request itself: with a real key it runs and answers.
    ran = subprocess.run([sys.executable, "-c", python.replace("YOUR_API_KEY", key)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert ran.returncode == 0, ran.stderr
    assert re.search(r"\d+ prompt \+ \d+ completion tokens", ran.stdout), ran.stdout


def test_voice_options_give_a_reply_with_no_digits_or_markdown(
    page: Any, console: Console
) -> None:
    sign_up(page, email())
    _playground(page)
    page.check(tid("pg-finetune"))
    page.select_option(tid("pg-language"), "en")
    page.select_option(tid("pg-accent"), "british")
    page.select_option(tid("pg-gender"), "female")
    page.fill(tid("pg-max-tokens"), "80")
    page.fill(tid("pg-temperature"), "0")
    page.fill(tid("pg-input"), "Give me a markdown list with **bold** items: the numbers "
              "1, 2 and 3, the year 2024, and the price $4.50.")
    with page.expect_request("**/v1/chat/completions") as sent:
        page.click(tid("pg-send"))
    body = sent.value.post_data_json
    assert (body["finetune"], body["language"], body["accent"], body["gender"]) == (
        True, "en", "british", "female")
    reply = page.locator(tid("pg-reply")).last
    eventually(lambda: reply.get_attribute("data-state") == "done", timeout=60)
    text = reply.text_content() or ""
    assert text.strip()
    assert not re.search(r"[0-9*#`_\[\]]", text), text


def test_a_reply_with_html_in_it_renders_as_text(page: Any, console: Console) -> None:
    sign_up(page, email())
    _playground(page, "html-upstream")
    page.fill(tid("pg-input"), "<img src=y onerror=\"window.pwned=3\"> show me markup")
    page.click(tid("pg-send"))
    reply = page.locator(tid("pg-reply")).last
    eventually(lambda: reply.get_attribute("data-state") == "done")
    text = reply.text_content() or ""
    assert "<script>window.pwned = 1</script>" in text
    assert '<img src=x onerror="window.pwned=2">' in text and "<b>bold</b>" in text
    assert reply.locator("script, img, b").count() == 0
    messages = page.locator(tid("pg-messages"))
    assert messages.locator("img").count() == 0  # the person's own markup is text too
    assert '<img src=y onerror="window.pwned=3">' in (messages.text_content() or "")
    assert page.evaluate("window.pwned") is None


def test_a_non_admin_cannot_reach_admin_pages(page: Any, console: Console) -> None:
    sign_up(page, email())
    assert page.locator(tid("nav-admin")).count() == 0
    page.goto("/#/admin")
    page.wait_for_selector(tid("admin-forbidden"))
    assert page.locator(tid("admin-accounts")).count() == 0
    for path in ("/admin/accounts", "/admin/keys", "/admin/usage"):
        assert page.request.get(path).status == 403


def test_an_admin_disables_an_account_and_its_keys_stop(
    page: Any, console: Console, request: pytest.FixtureRequest
) -> None:
    user = email()
    console.account(user)
    with console.admin() as c:
        account_id = next(a["id"] for a in c.get("/admin/accounts").json()["data"]
                          if a["email"] == user)
        key = remember_key(c.post("/admin/keys", json={"account_id": account_id,
                                                       "name": "k"}).json()["key"])
    client = OpenAI(base_url=console.server.v1, api_key=key, max_retries=0)
    request.addfinalizer(client.close)
    assert client.models.list().data
    boss = email()
    console.account(boss, admin=True)
    log_in(page, boss)
    page.click(tid("nav-admin"))
    row = page.locator(tid("account-row"), has_text=user)
    row.locator(tid("account-toggle")).click()
    if page.locator(tid("confirm-ok")).count():
        page.click(tid("confirm-ok"))
    expect(row).to_contain_text("disabled", ignore_case=True)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()


@pytest.fixture
def other_origin() -> Iterator[str]:
    """A page on another origin of the same site (127.0.0.1, another port), whose form
    posts to the console's API: the cookie goes with it (same site), the token cannot."""
    port = free_port()

    class Evil(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            target = self.path.split("?target=", 1)[1]
            page = (f'<form method="post" action="{target}/v1/keys" '
                    'enctype="text/plain"><input name=\'{"name": "evil", "x": "\' '
                    'value=\'"}\'><button id="go">Go</button></form>').encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Evil)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_cross_site_form_post_without_the_csrf_token_is_refused(
    page: Any, console: Console, other_origin: str
) -> None:
    sign_up(page, email())
    page.goto(f"{other_origin}/?target={console.server.base_url}")
    with page.expect_response(f"{console.server.base_url}/v1/keys") as answer:
        page.click("#go")
    assert answer.value.status == 403
    assert answer.value.json()["error"]["code"] == "csrf_failed"
    page.goto(console.url + "#/keys")
    page.wait_for_selector('[data-page="keys"]')
    keys = page.request.get("/v1/keys").json()["data"]
    assert keys == []  # nothing was created
    # The same form post without a matching Origin check still lacks the token.
    r = page.request.post("/v1/keys", data='{"name": "no token"}',
                          headers={"Content-Type": "text/plain"})
    assert r.status == 403 and r.json()["error"]["code"] == "csrf_failed"


def test_login_throttling_answers_429(page: Any, console: Console) -> None:
    address = email()
    console.account(address)
    statuses = []
    for _ in range(LOGIN_FAILURES + 1):
        with page.expect_response("**/v1/auth/session") as answer:
            log_in(page, address, "wrong password!")
        statuses.append(answer.value.status)
        message = page.locator(tid("error"))
        message.wait_for()
    assert statuses == [401] * LOGIN_FAILURES + [429]
    assert int(answer.value.headers["retry-after"]) > 0
    assert "too many" in (page.text_content(tid("error")) or "").lower()
    # Refused even with the right password until the lockout ends.
    with page.expect_response("**/v1/auth/session") as answer:
        log_in(page, address)
    assert answer.value.status == 429


def test_closed_registration_hides_sign_up(browser: Any, console: Console) -> None:
    """A closed server (the default): the page offers no sign-up, and says why."""
    from tests.conftest import start_server, stop_server

    server = start_server(console.tmp / "closed", "local: null\n")
    try:
        context = browser.new_context(base_url=server.base_url)
        page = context.new_page()
        page.goto("/#/login")
        page.wait_for_selector(tid("login-email"))
        assert page.locator(tid("signup-link")).count() == 0
        page.goto("/#/signup")
        page.wait_for_selector(tid("signup-closed"))
        assert page.locator(tid("signup-email")).count() == 0
        context.close()
    finally:
        stop_server(server)


def test_the_csv_export_keeps_a_formula_as_text(page: Any, console: Console) -> None:
    """A model name is whatever a client sent (a 404 is recorded under it): one that
    looks like a spreadsheet formula is exported with a leading quote, so opening
    the file (an admin's, say) runs nothing."""
    sign_up(page, email())
    key = create_key(page, "k")
    page.click(tid("key-done"))
    with OpenAI(base_url=console.server.v1, api_key=key, max_retries=0) as client, \
            pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="=HYPERLINK(\"http://evil.example\")",
                                       messages=[{"role": "user", "content": "Hi"}])
    page.click(tid("nav-usage"))
    total = page.locator(tid("usage-total-requests"))
    eventually(lambda: (total.text_content() or "").strip() == "1", reload=page)
    with page.expect_download() as download:
        page.click(tid("usage-export"))
    text = Path(download.value.path()).read_text()
    assert '"\'=HYPERLINK(""http://evil.example"")"' in text, text

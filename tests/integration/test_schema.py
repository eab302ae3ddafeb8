"""A bounded schemathesis run against the live app's own OpenAPI schema.

Checks: no 5xx; status codes, content types, headers and bodies that the schema
declares; requests the schema forbids are refused and requests it allows are not
(so the schema says what the server enforces); a method a path lacks gets a 405
with ``Allow`` and ``OPTIONS`` lists exactly the documented methods; a missing
or wrong key gets a 401; a revoked or created resource behaves as the links say.
What is true of this deployment only (the models it serves, "now") is in
tests/schemathesis_hooks.py, which says why.

The server runs the real model with a small context and max_tokens capped at 4 (a
request that gives none gets the cap: a default above the ceiling is lowered to it; the
hooks put the caps into the schema), so that every generated request finishes quickly; --max-time is the
budget of the whole run (schemathesis fuzzes again until it is spent), so the
test takes about a minute and a quarter on any machine. The coverage phase alone
sends about 830 chat requests (each listed voice language and accent among them), so
the budget must leave it room.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import LiveServer, start_server, stop_server

CHECKS = ",".join([
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
])
BUDGET_SECONDS = 60
# The static key is an admin, which has no account: an account holder's routes
# (/v1/keys) get one of the account's keys, and logout a login token.
CONFIG = """\
headers = { Authorization = "Bearer ${ST_ADMIN_KEY}" }

[[operations]]
include-path-regex = "^/v1/keys"
headers = { Authorization = "Bearer ${ST_ACCOUNT_KEY}" }

[[operations]]
include-path = "/v1/account"
headers = { Authorization = "Bearer ${ST_ACCOUNT_KEY}" }

[[operations]]
include-path = "/v1/auth/logout"
headers = { Authorization = "Bearer ${ST_SESSION}" }

# A chat request has rules between its fields that JSON Schema cannot state (a tool
# message answers a call an earlier assistant message made; voice mode rewrites the
# text, so it cannot give logprobs): breaking one is a 400 that names the field and
# the rule, as OpenAI answers. A schema-valid chat request may get that 400, never a
# 422 (a 422 says the schema was broken); every other operation may get neither.
[[operations]]
include-path = "/v1/chat/completions"
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "400", "401", "403", "404", "409", "429"]

# An embeddings request the schema allows may still break a rule that depends on the
# model (a 400 naming the field): an empty text, a token id past its vocabulary, an
# input longer than its context, or `dimensions`, which the embedded model lacks.
[[operations]]
include-path = "/v1/embeddings"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "429"]

# A completion the schema allows may still ask what the model refuses with a 400 that
# names the field: more than the server's max_tokens, a token id past its vocabulary,
# several prompts, a suffix, best_of above 1, echo with logprobs.
[[operations]]
include-path = "/v1/completions"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "429"]

# Anthropic's dialect answers every refused request 400 (a schema-valid one may break a
# rule between fields, or ask what the local model cannot do, such as thinking).
[[operations]]
include-path-regex = "^/v1/messages"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "429"]

# A response the schema allows may still ask what Kathan cannot honour (a built-in tool,
# background, conversation, an input_file: a 400 that names it), continue a response
# that is not stored (404), or break a rule of the model's (max_output_tokens above the
# server's limit: a 400).
[[operations]]
include-path-regex = "^/v1/responses"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "429"]
"""


def account_credentials(server: LiveServer) -> dict[str, str]:
    """An account with a password and a key, and a login token, made through the API."""
    admin = {"Authorization": f"Bearer {server.api_key}"}
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        account = http.post("/admin/accounts", headers=admin, json={
            "name": "schemathesis", "email": "st@example.com", "password": "a long password"})
        assert account.status_code == 201, account.text
        key = http.post("/admin/keys", headers=admin,
                        json={"account_id": account.json()["id"], "name": "st"})
        assert key.status_code == 201, key.text
        login = http.post("/v1/auth/login",
                          json={"email": "st@example.com", "password": "a long password"})
        assert login.status_code == 200, login.text
    return {"ST_ADMIN_KEY": server.api_key, "ST_ACCOUNT_KEY": key.json()["key"],
            "ST_SESSION": login.json()["token"]}


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("schema"),
                          "local:\n  n_ctx: 256\n"
                          "requests:\n  max_tokens: 4\n  max_n: 2\n"
                          # Its wrong passwords are not guesses worth slowing down.
                          "login_failure_delay_seconds: 0\n")
    yield server
    stop_server(server)


def test_schemathesis_finds_no_server_errors_or_schema_violations(
    small_server: LiveServer, tmp_path: Path
) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    result = subprocess.run(
        [
            str(cli), "run", f"{small_server.base_url}/openapi.json",
            "--checks", CHECKS,
            "--max-examples", "30",
            "--seed", "20261122",
            "--max-time", str(BUDGET_SECONDS),
            "--request-timeout", "30",
            "--report-dir", str(tmp_path),
        ],
        check=False, capture_output=True, text=True, timeout=BUDGET_SECONDS + 60,
        # Run from a temporary directory (where its config is), so schemathesis' cache
        # stays out of the tree.
        env={
            **os.environ,
            **account_credentials(small_server),
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "PYTHONPATH": str(Path(__file__).parents[2]),
        },
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
    # Every operation of the schema was exercised, not cut short by the budget.
    selected = re.search(r"Selected: (\d+)/(\d+)", result.stdout)
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert selected and tested, result.stdout[-3000:]
    assert selected[1] == selected[2] == tested[1], result.stdout[-3000:]

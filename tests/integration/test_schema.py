"""A bounded schemathesis run against the live app's own OpenAPI schema.

Checks: no 5xx; status codes, content types, headers and bodies that the schema
declares; requests the schema forbids are refused and requests it allows are not
(so the schema says what the server enforces); a method a path lacks gets a 405
with ``Allow`` and ``OPTIONS`` lists exactly the documented methods; a missing
or wrong key gets a 401; a revoked or created resource behaves as the links say.
What is true of this deployment only (the models it serves, "now") is in
tests/schemathesis_hooks.py, which says why.

The server runs the real model with a small context and a small default
max_tokens, so that every generated request finishes quickly; --max-time is the
budget of the whole run (schemathesis fuzzes again until it is spent), so the
test takes about a minute on any machine.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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
BUDGET_SECONDS = 45


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("schema"),
                          "local:\n  n_ctx: 256\nrequests:\n  default_max_tokens: 16\n")
    yield server
    stop_server(server)


def test_schemathesis_finds_no_server_errors_or_schema_violations(
    small_server: LiveServer, tmp_path: Path
) -> None:
    cli = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [
            str(cli), "run", f"{small_server.base_url}/openapi.json",
            "--checks", CHECKS,
            "--max-examples", "30",
            "--seed", "20261122",
            "--max-time", str(BUDGET_SECONDS),
            "--request-timeout", "30",
            "--header", f"Authorization: Bearer {small_server.api_key}",
            "--report-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=BUDGET_SECONDS + 60,
        # Run from a temporary directory, so schemathesis' cache stays out of the tree.
        env={
            **os.environ,
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

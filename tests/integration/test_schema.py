"""A bounded schemathesis run against the live app's own OpenAPI schema.

Checks: no 5xx, status codes, content types, headers and bodies that the
schema declares. The server runs the real model with a small context so that
every generated request finishes quickly.
"""

from __future__ import annotations

import os
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
])


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("schema"), "local:\n  n_ctx: 256\n")
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
            "--max-time", "90",
            "--request-timeout", "30",
            "--header", f"Authorization: Bearer {small_server.api_key}",
            "--report-dir", str(tmp_path),
        ],
        capture_output=True, text=True, timeout=300,
        # Run from a temporary directory, so schemathesis' cache stays out of the tree.
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "PYTHONPATH": str(Path(__file__).parents[2]),
        },
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

"""The `kathan` command as a user meets it: run as a process, its exit status, its
stderr (one line, no traceback), its version and its help."""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

import httpx
import pytest

from kathan.cli_config import setting_docs
from kathan.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def kathan(*argv: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kathan", *argv], capture_output=True,
                          check=False, text=True, env=env, cwd=cwd, timeout=timeout)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("KATHAN_")}
    environment["KATHAN_DATA_DIR"] = str(tmp_path / "data")
    return environment


def assert_one_line_error(result: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    [line] = lines
    assert line.startswith("kathan: ")
    for part in parts:
        assert part in line, line
    assert "Kathan is ready" not in result.stdout + result.stderr
    return line


@pytest.mark.parametrize("flag", ["--version", "-V"])
def test_version_comes_from_the_installed_package(flag: str, env: dict[str, str]) -> None:
    result = kathan(flag, env=env)
    assert result.returncode == 0
    assert result.stdout.strip() == f"kathan {metadata.version('kathan')}"


@pytest.mark.parametrize(
    ("text", "parts"),
    [
        (None, ["kathan.yaml: no such config file"]),
        ("models: [\n", ["kathan.yaml: not valid YAML:", "(line 2, column 1)"]),
        ("- just\n- a list\n", ["kathan.yaml: the top level must be a mapping"]),
        ("models:\n  - id: m\n    deployments:\n      - backend: openai\n",
         ["kathan.yaml: models[0].deployments[0].base_url: a openai deployment needs base_url"]),
        ("modles: []\n", ["kathan.yaml: modles: unknown setting (did you mean models?)"]),
        ("local:\n  n_ctxx: 100\n", ["kathan.yaml: local.n_ctxx: unknown setting (did you mean n_ctx?)"]),
        ("port: 70000\n", ["kathan.yaml: port: Input should be less than or equal to 65535"]),
        ("log_level: loud\n", [("kathan.yaml: log_level: Input should be 'critical', 'error', "
                               "'warning', 'info' or 'debug'")]),
    ],
)
def test_a_bad_config_is_one_line_and_exit_1(
    tmp_path: Path, env: dict[str, str], text: str | None, parts: list[str]
) -> None:
    if text is not None:
        (tmp_path / "kathan.yaml").write_text(text)
    commands = (["serve", "--config", "kathan.yaml"], ["config", "check", "kathan.yaml"],
                ["models", "--config", "kathan.yaml"], ["keys", "list", "--config", "kathan.yaml"])
    # The four processes run side by side: each spends its time importing, not waiting.
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda argv: kathan(*argv, env=env, cwd=tmp_path), commands))
    for result in results:
        assert_one_line_error(result, *parts)


def test_models_that_cannot_be_served_are_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "kathan.yaml").write_text(
        "models:\n  - id: m\n    fallbacks: [nowhere]\n    deployments:\n"
        "      - {backend: openai, base_url: 'http://127.0.0.1:9/v1'}\n")
    commands = (["serve", "--config", "kathan.yaml"], ["config", "check", "kathan.yaml"],
                ["models", "--config", "kathan.yaml"])
    with ThreadPoolExecutor(len(commands)) as pool:
        results = list(pool.map(lambda argv: kathan(*argv, env=env, cwd=tmp_path), commands))
    for result in results:
        assert_one_line_error(result, "kathan.yaml: model m: fallback 'nowhere' is not a model")


def test_models_that_cannot_fit_in_memory_are_refused_in_one_line_with_the_numbers(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "kathan.yaml").write_text(
        "local:\n  - id: small\n    n_ctx: 1024\n  - id: huge\n    n_ctx: 20000000\n")
    result = kathan("serve", "--config", "kathan.yaml", env=env, cwd=tmp_path)
    line = assert_one_line_error(
        result, "kathan: the local models need about 1287.6 GiB of memory, but ",
        "available (MemAvailable): small 94 MiB file + 68 MiB KV cache", "; huge 94 MiB file "
        "+ 1287.5 GiB KV cache (3 x n_ctx 20000000 x 11520 K/V values a token x 2 bytes)",
        "or set memory_check: false to start anyway")
    assert "Loading" not in line


def test_a_bad_environment_variable_is_named(env: dict[str, str]) -> None:
    result = kathan("serve", env={**env, "KATHAN_PORT": "eighty"})
    assert_one_line_error(result, "KATHAN_PORT: port: Input should be a valid integer")
    result = kathan("serve", "--port", "70000", env=env)
    assert_one_line_error(result, "--port: port: Input should be less than or equal to 65535")


def test_a_taken_port_is_one_line_and_no_ready_line(env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = kathan("serve", "--port", str(port), env=env)
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}", "already in use")
    assert "Loading" not in result.stderr  # it failed before loading the model


def test_a_store_that_cannot_be_reached_is_one_line(env: dict[str, str]) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        url = f"postgresql://kathan:secret-pw@127.0.0.1:{port}/kathan"
        result = kathan("serve", "--port", "0", env={**env, "KATHAN_DATABASE_URL": url})
        line = assert_one_line_error(result, "cannot open the store at postgresql+asyncpg://",
                                     f"127.0.0.1:{port}")
        assert "secret-pw" not in line
        result = kathan("usage", env={**env, "KATHAN_DATABASE_URL": url})
        assert "Traceback" not in result.stderr and result.returncode == 1
        assert "secret-pw" not in result.stderr


def test_ready_is_said_once_serving_and_a_generated_key_goes_to_a_private_file(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Accounts off and no keys: the key made for this run is in a 0600 file in data_dir,
    never in the output, and it works; "Kathan is ready" comes once the port answers."""
    config = tmp_path / "kathan.yaml"
    config.write_text("local: null\n")
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kathan", "serve", "--port", "0", "--config", str(config)],
            stdout=out, stderr=subprocess.STDOUT, text=True,
            env={**env, "KATHAN_ACCOUNTS": "false"})
    try:
        deadline = time.monotonic() + 60
        ready = None
        while ready is None and time.monotonic() < deadline and process.poll() is None:
            ready = re.search(r"Kathan is ready: send requests to (http://\S+)/v1/", log.read_text())
            time.sleep(0.05)
        assert ready is not None, log.read_text()
        base = ready.group(1)
        assert not base.endswith(":0")  # the port actually bound
        key_file = Path(env["KATHAN_DATA_DIR"]) / "api-key.txt"
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        key = key_file.read_text().strip()
        assert key and key not in log.read_text()
        assert str(key_file) in log.read_text()
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": f"Bearer {key}"}
                         ).status_code == 200
        assert httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer sk-wrong"}
                         ).status_code == 401
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_serve_help_points_to_every_setting(env: dict[str, str]) -> None:
    result = kathan("serve", "--help", env={**env, "COLUMNS": "200"})
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for name in Settings.model_fields:
        if name != "config_file":
            assert name in text, name
    assert "kathan config settings" in text and "KATHAN_<NAME>" in text
    assert "--log-level" in text


def test_config_settings_lists_every_setting_with_its_variable_and_default(
    env: dict[str, str]
) -> None:
    result = kathan("config", "settings", env=env)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    listed = {line.split()[0]: line for line in lines[1:]}
    paths = [doc.path for doc in setting_docs()]
    assert list(listed) == paths
    for name in Settings.model_fields:  # top-level: with its environment variable
        assert f"KATHAN_{name.upper()}" in listed[name]
    for nested in ("local.n_ctx", "models[].deployments[].base_url", "routing.retries",
                   "requests.max_tokens", "default_account.limits.rpm"):
        assert nested in listed
    assert listed["local.n_ctx"].split()[2] == "8192"
    assert listed["port"].split()[2] == "8000"
    level = listed["log_level"]
    for value in ("critical", "error", "warning", "info", "debug"):
        assert value in level


def test_the_readme_documents_every_top_level_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in Settings.model_fields  # a cell of the settings table
               if name != "config_file" and not re.search(rf"\| [^|\n]*`{name}`[^|\n]* \|", readme)]
    assert missing == []

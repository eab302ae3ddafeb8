from pathlib import Path

import pytest

from kathan.settings import Settings


def test_api_keys_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KATHAN_API_KEYS", "sk-a, sk-b,,")
    assert Settings().api_keys == ["sk-a", "sk-b"]


def test_yaml_file_sets_the_local_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KATHAN_API_KEYS", raising=False)
    config = tmp_path / "kathan.yaml"
    config.write_text("port: 9001\nlocal:\n  id: my-model\n  gguf: /models/x.gguf\n  n_ctx: 1024\n")
    settings = Settings(config_file=config)
    assert settings.port == 9001
    assert settings.local.id == "my-model"
    assert settings.local.gguf == Path("/models/x.gguf")
    assert settings.local.n_ctx == 1024


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "kathan.yaml"
    config.write_text("port: 9001\n")
    monkeypatch.setenv("KATHAN_PORT", "9002")
    assert Settings(config_file=config).port == 9002


def test_unknown_setting_is_an_error(tmp_path: Path) -> None:
    config = tmp_path / "kathan.yaml"
    config.write_text("prot: 9001\n")
    with pytest.raises(ValueError, match="prot"):
        Settings(config_file=config)

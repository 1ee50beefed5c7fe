"""Settings: defaults, environment, flags, and one-line errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from redline.cli import build_app
from redline.exceptions import ConfigError
from redline.serve.settings import load_settings, parse_rate_limit


def test_defaults_are_the_embedded_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDLINE_PORT", "REDLINE_MODEL", "REDLINE_CACHE_URL", "REDLINE_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.host, settings.port, settings.workers) == ("127.0.0.1", 8000, 1)
    assert settings.model == "minilm"
    assert settings.cache_url == "memory://"
    assert settings.cache_enabled
    assert settings.resolved_database_url.startswith("sqlite+aiosqlite:///")
    assert (settings.max_batch_size, settings.max_wait_ms, settings.max_inputs) == (32, 2.0, 256)
    assert (settings.max_chars, settings.max_body_bytes) == (8192, 2 * 1024 * 1024)
    assert settings.model_runtime == "onnx"


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDLINE_PORT", "9123")
    monkeypatch.setenv("REDLINE_API_KEYS", "k1, k2,,")
    monkeypatch.setenv("REDLINE_CACHE_URL", "none")
    monkeypatch.setenv("REDLINE_LOG_LEVEL", "DEBUG")
    settings = load_settings()
    assert settings.port == 9123
    assert settings.api_keys == ("k1", "k2")
    assert not settings.cache_enabled
    assert settings.log_level == "debug"


def test_overrides_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDLINE_PORT", "9123")
    assert load_settings(port=9200, host=None).port == 9200


def test_postgres_urls_get_the_asyncpg_driver() -> None:
    settings = load_settings(database_url="postgresql://u@127.0.0.1:5432/db")
    assert settings.resolved_database_url == "postgresql+asyncpg://u@127.0.0.1:5432/db"


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"port": 70000}, "REDLINE_PORT=70000: Input should be less than or equal to 65535"),
        ({"workers": 0}, "REDLINE_WORKERS=0"),
        ({"max_batch_size": 0}, "REDLINE_MAX_BATCH_SIZE=0"),
        ({"model_workers": 0}, "REDLINE_MODEL_WORKERS=0"),
        ({"model": "no-colon"}, "model must be 'minilm' or 'package.module:factory'"),
        ({"rate_limit": "fast"}, "rate limit must look like '100/s'"),
        ({"log_level": "loud"}, "REDLINE_LOG_LEVEL='loud'"),
        ({"model_runtime": "tensorrt"}, "REDLINE_MODEL_RUNTIME='tensorrt': Input should be 'onnx'"),
    ],
)
def test_bad_values_raise_one_line_config_errors(
    overrides: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message
    assert message.startswith("invalid setting ")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("100/s", (100.0, 1.0)),
        ("600/min", (600.0, 60.0)),
        ("10/5s", (10.0, 5.0)),
        ("1/h", (1.0, 3600.0)),
    ],
)
def test_rate_limit_specs(spec: str, expected: tuple[float, float]) -> None:
    assert parse_rate_limit(spec) == expected


def test_serve_command_rejects_a_bad_port_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(build_app(), ["serve", "--port", "70000"])
    assert result.exit_code == 2
    assert "REDLINE_PORT=70000" in result.output
    assert "Traceback" not in result.output


def test_serve_command_is_registered_with_its_flags() -> None:
    result = CliRunner().invoke(build_app(), ["serve", "--help"])
    assert result.exit_code == 0
    for flag in ("--host", "--port", "--workers", "--model", "--cache-url", "--model-runtime"):
        assert flag in result.output


@pytest.mark.parametrize(
    ("flags", "fragment"),
    [
        (["--cache-url", "ftp://nowhere"], "ftp"),
        (["--database-url", "not a url"], "REDLINE_DATABASE_URL"),
        (["--model", "no_such_package_xyz:factory"], "cannot find module 'no_such_package_xyz'"),
    ],
)
def test_serve_command_checks_urls_and_model_before_starting(
    flags: list[str], fragment: str
) -> None:
    result = CliRunner().invoke(build_app(), ["serve", *flags])
    assert result.exit_code == 2
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1

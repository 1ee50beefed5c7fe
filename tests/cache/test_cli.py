"""``redline cache-demo`` against memory and a real Redis; a bad URL exits 1 with the reason."""

from __future__ import annotations

from typer.testing import CliRunner

from redline.cli import build_app


def test_cache_demo_on_memory() -> None:
    result = CliRunner().invoke(build_app(), ["cache-demo", "--keys", "50"])
    assert result.exit_code == 0, result.output
    assert "50/50 found" in result.output
    assert "health ok" in result.output


def test_cache_demo_on_redis(redis_url: str) -> None:
    result = CliRunner().invoke(build_app(), ["cache-demo", "--url", redis_url, "--keys", "30"])
    assert result.exit_code == 0, result.output
    assert "30/30 found" in result.output
    assert "redis" in result.output


def test_cache_demo_with_a_bad_url_exits_1_and_says_why() -> None:
    result = CliRunner().invoke(build_app(), ["cache-demo", "--url", "bogus://x"])
    assert result.exit_code == 1
    assert "unknown cache URL scheme 'bogus'" in result.output

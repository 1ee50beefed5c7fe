"""The graph cache: a file is built once, checked before each use, and rebuilt when damaged."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from redline.exceptions import ModelError
from redline.serve.graph_cache import GraphCache, default_cache_dir, file_sha256

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class CountingBuild:
    """A build function that writes PAYLOAD and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, path: Path) -> None:
        with self.lock:
            self.calls += 1
        path.write_bytes(PAYLOAD)


def test_a_file_is_built_once_then_found(tmp_path: Path) -> None:
    cache, build = GraphCache(tmp_path), CountingBuild()
    first = cache.get_or_build("model-1", "fp32.onnx", build)
    second = GraphCache(tmp_path).get_or_build("model-1", "fp32.onnx", build)
    assert first == second == tmp_path / "model-1" / "fp32.onnx"
    assert build.calls == 1
    assert first.read_bytes() == PAYLOAD
    checksum = (tmp_path / "model-1" / "fp32.onnx.sha256").read_text().split()[0]
    assert checksum == file_sha256(first)
    assert not list((tmp_path / "model-1").glob("*.tmp"))  # the temp name was renamed


def test_another_entry_or_name_is_another_file(tmp_path: Path) -> None:
    cache, build = GraphCache(tmp_path), CountingBuild()
    cache.get_or_build("model-1", "fp32.onnx", build)
    cache.get_or_build("model-2", "fp32.onnx", build)
    cache.get_or_build("model-1", "int8.onnx", build)
    assert build.calls == 3


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda p: p.write_bytes(PAYLOAD[: len(PAYLOAD) // 2]), id="truncated"),
        pytest.param(lambda p: p.write_bytes(b"\xff" + PAYLOAD[1:]), id="one-byte-changed"),
        pytest.param(lambda p: p.write_bytes(b""), id="empty"),
        pytest.param(lambda p: p.unlink(), id="file-removed"),
        pytest.param(lambda p: p.with_name(p.name + ".sha256").unlink(), id="checksum-removed"),
        pytest.param(
            lambda p: p.with_name(p.name + ".sha256").write_text("garbage"), id="checksum-wrong"
        ),
    ],
)
def test_a_damaged_file_is_discarded_and_built_again(tmp_path: Path, damage: object) -> None:
    cache, build = GraphCache(tmp_path), CountingBuild()
    path = cache.get_or_build("model-1", "fp32.onnx", build)
    damage(path)  # type: ignore[operator]
    assert not cache.verify(path)
    again = cache.get_or_build("model-1", "fp32.onnx", build)
    assert build.calls == 2
    assert again.read_bytes() == PAYLOAD
    assert cache.verify(again)


def test_a_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    cache = GraphCache(tmp_path)

    def half_then_fail(path: Path) -> None:
        path.write_bytes(PAYLOAD[:100])
        raise ModelError("export failed")

    with pytest.raises(ModelError, match="export failed"):
        cache.get_or_build("model-1", "fp32.onnx", half_then_fail)
    assert sorted(p.name for p in (tmp_path / "model-1").iterdir()) == ["fp32.onnx.lock"]
    build = CountingBuild()
    assert cache.get_or_build("model-1", "fp32.onnx", build).read_bytes() == PAYLOAD


def test_builders_that_start_together_build_once(tmp_path: Path) -> None:
    build = CountingBuild()
    started = threading.Barrier(4)
    paths: list[Path] = []

    def start() -> None:
        started.wait()
        paths.append(GraphCache(tmp_path).get_or_build("model-1", "fp32.onnx", build))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert build.calls == 1
    assert len(set(paths)) == 1


def test_an_unwritable_cache_folder_is_a_model_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ModelError, match="REDLINE_MODEL_CACHE_DIR"):
        GraphCache(blocker).get_or_build("model-1", "fp32.onnx", CountingBuild())


def test_the_default_folder_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "redline" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "redline" / "models"


def test_the_cache_folder_and_int8_runtime_are_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from redline.exceptions import ConfigError
    from redline.serve.settings import load_settings

    monkeypatch.delenv("REDLINE_MODEL_CACHE_DIR", raising=False)
    assert load_settings().model_cache_dir is None  # the XDG default
    monkeypatch.setenv("REDLINE_MODEL_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("REDLINE_MODEL_RUNTIME", "onnx-int8")
    settings = load_settings()
    assert settings.model_cache_dir == tmp_path
    assert settings.model_runtime == "onnx-int8"
    with pytest.raises(ConfigError, match="'onnx', 'onnx-int8' or 'torch'"):
        load_settings(model_runtime="int4")

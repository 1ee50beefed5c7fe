"""A start that finds its graph in the cache serves without torch; a damaged graph is rebuilt."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from redline.serve.graph_cache import GraphCache
from redline.serve.minilm import MiniLMModel
from redline.serve.onnx_export import GraphKind, graph_for
from redline.serve.runtimes import make_runners

pytestmark = pytest.mark.model

SENTENCES = ["the cache is warm", "a model served from a file", "Zeichen und 日本語"]

# Loads the built-in model from the cache in a fresh interpreter and reports what it imported.
LOAD_FROM_CACHE = """
import json, sys
from pathlib import Path
from redline.serve.minilm import create_minilm_model
model = create_minilm_model(workers=1, runtime=sys.argv[1], cache_dir=Path(sys.argv[2]))
vectors = model.batch(json.loads(sys.argv[3]))
heavy = sorted(m for m in ("torch", "transformers", "sentence_transformers") if m in sys.modules)
tokens = model.count_tokens(["a b"])
print(json.dumps({"heavy": heavy, "vectors": vectors.tolist(), "tokens": tokens}))
"""


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_a_start_from_the_cache_imports_no_torch(minilm: MiniLMModel, runtime: GraphKind) -> None:
    graph_for(minilm.files, runtime, minilm.cache)  # in the cache now, built if it was not
    (runner,) = make_runners(minilm.files, runtime, workers=1, threads=1, cache=minilm.cache)
    expected = runner.encode(SENTENCES, 16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_FROM_CACHE,
            runtime,
            str(minilm.cache.directory),
            json.dumps(SENTENCES),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["heavy"] == []
    assert report["tokens"] == [4]
    np.testing.assert_allclose(np.array(report["vectors"]), expected, atol=1e-5)


@pytest.mark.parametrize("damage", ["truncate", "flip-a-byte"])
def test_a_damaged_cached_graph_is_exported_again(
    minilm: MiniLMModel, tmp_path: Path, damage: str
) -> None:
    good = graph_for(minilm.files, "onnx", minilm.cache)
    # The same cache entry in a folder of its own, then damaged as a crash or a bad disk would.
    entry = tmp_path / good.parent.name
    entry.mkdir()
    for file in (good, good.with_name(good.name + ".sha256")):
        shutil.copyfile(file, entry / file.name)
    copied = entry / good.name
    size = copied.stat().st_size
    with copied.open("r+b") as handle:
        if damage == "truncate":
            handle.truncate(size // 3)
        else:
            handle.seek(size // 2)
            byte = handle.read(1)
            handle.seek(size // 2)
            handle.write(bytes([byte[0] ^ 0xFF]))
    cache = GraphCache(tmp_path)
    assert not cache.verify(copied)
    (runner,) = make_runners(minilm.files, "onnx", workers=1, threads=1, cache=cache)
    assert cache.verify(copied)  # exported again, with its checksum
    raw = minilm.encoder.encode(SENTENCES, normalize_embeddings=True)
    cosines = np.sum(runner.encode(SENTENCES, 16) * raw, axis=1)
    assert np.all(cosines >= 0.9999)

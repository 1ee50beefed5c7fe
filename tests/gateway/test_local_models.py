"""Several local models side by side (``--model`` repeated, ``REDLINE_MODEL`` comma-separated)
in one real ``redline serve`` process, beside an upstream: a request's ``model`` picks one,
``/v1/models`` lists them all, and each model's cache entries stay its own."""

from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from redline.serve.settings import load_settings
from redline.serve.testing import HashingModel
from tests._services import RedisServer
from tests.gateway._fake import FakeUpstream
from tests.gateway._procs import HASHING, Serve

pytestmark = [pytest.mark.slow, pytest.mark.model]

MINILM = "all-MiniLM-L6-v2"
TEXTS = ["The cat sat on the mat.", "Two models, one cache.", "The cat sat on the mat."]


def _embed(client: httpx.Client, url: str, body: dict[str, object]) -> httpx.Response:
    response = client.post(f"{url}/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    return response


def _vectors(response: httpx.Response) -> np.ndarray:
    return np.array([row["embedding"] for row in response.json()["data"]], dtype=np.float32)


def test_two_local_models_and_an_upstream_side_by_side(fresh_redis: RedisServer) -> None:
    hashing = HashingModel(384)  # what the server's hashing model computes
    with (
        FakeUpstream(dimension=8) as fake,
        Serve(
            "--model",
            "minilm",
            "--model",
            HASHING,
            "--upstream",
            f"fake={fake.url}?model=fake&dimension=8",
            "--cache-url",
            fresh_redis.url,
        ) as server,
        httpx.Client(timeout=60) as client,
    ):
        ids = {row["id"] for row in client.get(f"{server.url}/v1/models").json()["data"]}
        assert ids == {MINILM, "hashing", "fake"}
        ready = client.get(f"{server.url}/ready").json()
        assert ready["checks"]["batcher"] == "ok"

        # The hashing model first: its vectors land in the shared Redis ...
        first = _embed(client, server.url, {"input": TEXTS, "model": "hashing"})
        assert first.json()["model"] == "hashing"
        assert first.headers["x-cache"] == "miss"
        np.testing.assert_allclose(_vectors(first), hashing.batch(TEXTS), atol=1e-6)
        # ... and MiniLM, asked for the same texts, does not find them: its own entries.
        minilm = _embed(client, server.url, {"input": TEXTS, "model": MINILM})
        assert minilm.json()["model"] == MINILM
        assert minilm.headers["x-cache"] == "miss"
        minilm_vectors = _vectors(minilm)
        assert abs(float(minilm_vectors[0] @ hashing.batch(TEXTS[:1])[0])) < 0.5
        np.testing.assert_allclose(minilm_vectors[0], minilm_vectors[2], atol=1e-6)
        # No model named: the first --model (the default); its aliases work too.
        default = _embed(client, server.url, {"input": TEXTS})
        assert default.json()["model"] == MINILM
        assert default.headers["x-cache"] == "hit"
        np.testing.assert_allclose(_vectors(default), minilm_vectors, atol=1e-6)
        alias = _embed(client, server.url, {"input": TEXTS[:1], "model": "minilm"})
        assert alias.headers["x-cache"] == "hit"
        np.testing.assert_allclose(_vectors(alias)[0], minilm_vectors[0], atol=1e-6)
        # Hits of each model are that model's vectors, at full and reduced dimensions.
        again = _embed(client, server.url, {"input": TEXTS, "model": "hashing"})
        assert again.headers["x-cache"] == "hit"
        np.testing.assert_allclose(_vectors(again), hashing.batch(TEXTS), atol=1e-6)
        short = _embed(
            client, server.url, {"input": TEXTS[:1], "model": "hashing", "dimensions": 8}
        )
        cut = hashing.batch(TEXTS[:1])[0][:8]
        np.testing.assert_allclose(_vectors(short)[0], cut / np.linalg.norm(cut), atol=1e-6)
        # The upstream's model is served beside them, through its own key space.
        upstream = _embed(client, server.url, {"input": TEXTS, "model": "fake"})
        assert upstream.json()["model"] == "fake"
        assert _vectors(upstream).shape == (3, 8)
        assert fake.inputs == [TEXTS[0], TEXTS[1]]

        unknown = client.post(
            f"{server.url}/v1/embeddings", json={"input": "x", "model": "nope"}
        ).json()
        assert unknown["error"]["code"] == "model_not_found"
        for name in (MINILM, "hashing", "fake"):
            assert name in unknown["error"]["message"]

    # Two distinct texts per local model, two for the upstream: each under its own prefix.
    keys = [key.decode() for key in redis.Redis(port=fresh_redis.port).scan_iter(count=1000)]
    counts: dict[str, int] = {}
    for key in keys:
        if key.startswith(("redline:emb:", "redline:gw:")):
            parts = key.split(":")
            model = f"{parts[1]}:{parts[2]}:{parts[-2]}"  # kind, model, dimensions
            counts[model] = counts.get(model, 0) + 1
    assert counts == {
        f"emb:{MINILM}:384": 2,
        "emb:hashing:384": 2,
        "emb:hashing:8": 1,
        "gw:fake:full": 2,
    }


def test_model_flag_and_setting_forms() -> None:
    settings = load_settings(model=f" minilm , {HASHING} ")
    assert settings.model_specs == ("minilm", HASHING)
    assert load_settings(model=["minilm", HASHING]).model_specs == ("minilm", HASHING)
    assert load_settings(model="none", upstreams=["u=http://127.0.0.1:1?model=m"]).model_specs == ()
    for bad in (f"none,{HASHING}", f"{HASHING},{HASHING}", "minilm,notaspec"):
        with pytest.raises(ValueError, match="model"):
            load_settings(model=bad)
    twice = subprocess.run(
        [sys.executable, "-m", "redline", "serve", "--model", HASHING, "--model", HASHING],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert twice.returncode == 2
    assert "the same model twice" in twice.stderr


def test_two_models_with_one_name_are_refused() -> None:
    """Two factories whose models share a name would share cache entries: never ready."""
    second = "tests.gateway._procs:create_second_hashing_model"
    server = Serve("--model", HASHING, "--model", second, env={"REDLINE_SECOND_NAME": "hashing"})
    proc = subprocess.Popen(server.args, env=server.env, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert time.monotonic() < deadline, "the server never reported the load failure"
            try:
                answer = httpx.get(f"{server.url}/ready", timeout=5)
            except httpx.HTTPError:
                time.sleep(0.2)
                continue
            model_check = answer.json()["checks"]["model"]
            if model_check != "loading":
                break
            time.sleep(0.2)
        assert answer.status_code == 503
        assert "two local models are both named 'hashing'" in model_check
    finally:
        proc.terminate()
        proc.wait(30)
        server.close()
    with Serve("--model", HASHING, "--model", second) as fine:
        ids = [row["id"] for row in httpx.get(f"{fine.url}/v1/models").json()["data"]]
        assert sorted(ids) == ["hashing", "second"]
        body = {"input": "x", "model": "second"}
        assert httpx.post(f"{fine.url}/v1/embeddings", json=body).json()["model"] == "second"


def test_models_lists_only_what_this_server_serves(tmp_path: Path) -> None:
    """The registry keeps rows of earlier runs on the same database: not listed, not found."""
    data = ["--data-dir", str(tmp_path)]
    second = "tests.gateway._procs:create_second_hashing_model"
    with Serve("--model", HASHING, "--model", second, *data) as both:
        ids = sorted(row["id"] for row in httpx.get(f"{both.url}/v1/models").json()["data"])
        assert ids == ["hashing", "second"]
    with Serve("--model", second, *data) as one:
        ids = [row["id"] for row in httpx.get(f"{one.url}/v1/models").json()["data"]]
        assert ids == ["second"]
        assert httpx.get(f"{one.url}/v1/models/second").status_code == 200
        gone = httpx.get(f"{one.url}/v1/models/hashing")
        assert gone.status_code == 404
        assert gone.json()["error"]["code"] == "model_not_found"


def _samples(client: httpx.Client, url: str) -> dict[tuple[str, str], float]:
    """``(series, model) -> value`` of every sample with a ``model`` label in ``/metrics``."""
    response = client.get(f"{url}/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, sample.labels["model"]): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if "model" in sample.labels and "le" not in sample.labels
    }


def test_each_local_model_has_its_own_batch_series() -> None:
    """Batch size, queue wait, model call and queue depth are labelled with the model whose
    batcher they measure: one model's traffic and backlog leave the other's series alone."""
    second = "tests.gateway._procs:create_second_hashing_model"
    counts = (
        "redline_batch_size_count",
        "redline_batch_queue_wait_seconds_count",
        "redline_inference_duration_seconds_count",
    )
    env = {"REDLINE_HASHING_DELAY_MS": "300", "REDLINE_MAX_BATCH_SIZE": "1"}  # "hashing" slow
    with (
        Serve("--model", HASHING, "--model", second, env=env) as server,
        httpx.Client(timeout=60) as client,
    ):
        for i in range(3):
            _embed(client, server.url, {"input": f"second {i}", "model": "second"})
        seen = _samples(client, server.url)
        for name in counts:
            assert seen[(name, "second")] == 3, name
            assert seen[(name, "hashing")] == 0, name  # exported at zero from the start
        assert seen[("redline_batch_errors_total", "second")] == 0

        # Four requests to the slow model at once: three wait in its queue, none in the other.
        with ThreadPoolExecutor(4) as pool:
            answers = [
                pool.submit(_embed, client, server.url, {"input": f"slow {i}", "model": "hashing"})
                for i in range(4)
            ]
            deadline = time.monotonic() + 30
            while True:
                seen = _samples(client, server.url)
                if seen[("redline_batch_queue_depth", "hashing")] >= 1:
                    break
                assert time.monotonic() < deadline, seen
                time.sleep(0.05)
            assert seen[("redline_batch_queue_depth", "second")] == 0
            for answer in answers:
                assert answer.result().json()["model"] == "hashing"
        seen = _samples(client, server.url)
        for name in counts:
            assert seen[(name, "hashing")] == 4, name
            assert seen[(name, "second")] == 3, name
        assert seen[("redline_batch_size_sum", "hashing")] == 4  # batches of one
        assert seen[("redline_inference_duration_seconds_sum", "hashing")] >= 4 * 0.3
        assert seen[("redline_inference_duration_seconds_sum", "second")] < 0.3
        assert seen[("redline_batch_queue_depth", "hashing")] == 0
        capacity = seen[("redline_batch_queue_capacity", "hashing")]
        assert capacity > 0
        assert seen[("redline_batch_queue_capacity", "second")] == capacity

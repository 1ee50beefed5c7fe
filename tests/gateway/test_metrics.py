"""The gateway's Prometheus series move as a real gateway process works: calls by result,
latency, batch sizes, inputs by source (cache, coalesced, upstream), ejections."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway._fake import FakeUpstream
from tests.gateway._procs import Serve

pytestmark = pytest.mark.slow


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of ``/metrics`` by (name, sorted labels)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _inputs(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], source: str) -> float:
    return _value(samples, "redline_gateway_inputs_total", model="fake", source=source)


def test_gateway_metrics_follow_a_real_run() -> None:
    with FakeUpstream(dimension=8) as fake:
        spec = f"up={fake.url}?model=fake&dimension=8&timeout=3"
        with Serve("--model", "none", "--upstream", spec) as gw:
            before = _scrape(gw.url)
            assert _value(before, "redline_upstream_ejected", upstream="up") == 0
            assert _value(before, "redline_upstream_ejections_total", upstream="up") == 0

            def embed(texts: list[str]) -> httpx.Response:
                return httpx.post(f"{gw.url}/v1/embeddings", json={"input": texts}, timeout=30)

            # Three new inputs in one call, then the same (and a repeat) from the cache.
            assert embed(["a", "b", "c"]).status_code == 200
            assert embed(["a", "b", "c", "a"]).status_code == 200
            # A repeat within one uncached request is sent once.
            assert embed(["d", "d"]).status_code == 200
            samples = _scrape(gw.url)
            assert _inputs(samples, "upstream") == 4
            assert _inputs(samples, "cache") == 4
            assert _inputs(samples, "coalesced") == 1
            # One cache lookup per request, for upstream models as for local ones.
            lookups = "redline_cache_lookup_duration_seconds_count"
            assert _value(samples, lookups) - _value(before, lookups) == 3
            assert (
                _value(samples, "redline_upstream_requests_total", upstream="up", result="ok") == 2
            )
            assert _value(samples, "redline_upstream_batch_size_sum", upstream="up") == 4
            assert _value(samples, "redline_upstream_batch_size_count", upstream="up") == 2
            assert (
                _value(samples, "redline_upstream_request_duration_seconds_count", upstream="up")
                == 2
            )
            assert (
                _value(samples, "redline_upstream_request_duration_seconds_sum", upstream="up") > 0
            )

            # Ten clients at once for one uncached input: one goes upstream, nine join it.
            fake.mode = "slow:0.5"

            async def burst() -> list[int]:
                async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
                    answers = await asyncio.gather(
                        *(client.post("/v1/embeddings", json={"input": "same"}) for _ in range(10))
                    )
                return [answer.status_code for answer in answers]

            assert asyncio.run(burst()) == [200] * 10
            samples = _scrape(gw.url)
            assert _inputs(samples, "upstream") == 5
            assert _inputs(samples, "coalesced") == 10
            assert fake.inputs.count("same") == 1

            # The upstream fails: each try is counted by kind, and the third ejects it.
            fake.mode = "500"
            failed = embed(["broken"])
            assert failed.status_code in (502, 503)
            samples = _scrape(gw.url)
            assert (
                _value(samples, "redline_upstream_requests_total", upstream="up", result="http_5xx")
                == 3
            )
            assert _value(samples, "redline_upstream_ejections_total", upstream="up") == 1
            assert _value(samples, "redline_upstream_ejected", upstream="up") == 1

            # Back up: after the cooldown a probe succeeds and the upstream is back.
            fake.mode = "ok"
            time.sleep(1.2)
            assert embed(["healed"]).status_code == 200
            samples = _scrape(gw.url)
            assert _value(samples, "redline_upstream_ejected", upstream="up") == 0
            assert (
                _value(samples, "redline_upstream_requests_total", upstream="up", result="ok") == 4
            )

            # A connection refused is a different kind.
            fake.stop()
            assert embed(["gone"]).status_code in (502, 503)
            samples = _scrape(gw.url)
            assert (
                _value(samples, "redline_upstream_requests_total", upstream="up", result="connect")
                >= 1
            )

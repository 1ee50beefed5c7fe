"""Server-side numbers: ``Server-Timing`` headers and Prometheus ``/metrics`` deltas.

``parse_server_timing`` turns ``cache;dur=0.2, inference;dur=3.1`` into ``{"cache": 0.2,
"inference": 3.1}`` (milliseconds). ``parse_prometheus`` reads the text exposition format into
samples; :func:`metrics_delta` subtracts a scrape taken before the run from one taken after, so
the report shows only what this run caused.

Example::

    before = parse_prometheus(await scrape_metrics(session, url))
    ...  # run the load
    after = parse_prometheus(await scrape_metrics(session, url))
    delta = metrics_delta(before, after)
    delta.histogram_mean_ms("redline_inference_duration_seconds")
"""

from __future__ import annotations

import logging
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import aiohttp

__all__ = [
    "MetricsDelta",
    "metrics_delta",
    "metrics_url_for",
    "parse_prometheus",
    "parse_server_timing",
    "scrape_metrics",
]

logger = logging.getLogger(__name__)

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_server_timing(header: str) -> dict[str, float]:
    """Durations (ms) by metric name from one ``Server-Timing`` header; entries without dur skip.

    Example::

        parse_server_timing("cache;dur=0.5, total;dur=2")  # {'cache': 0.5, 'total': 2.0}
    """
    result: dict[str, float] = {}
    for entry in header.split(","):
        parts = [part.strip() for part in entry.split(";")]
        name = parts[0]
        if not name:
            continue
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() != "dur":
                continue
            try:
                duration = float(value.strip().strip('"'))
            except ValueError:
                break
            if math.isfinite(duration) and duration >= 0:
                result[name] = result.get(name, 0.0) + duration
            break
    return result


def parse_prometheus(text: str) -> Samples:
    """Samples of a Prometheus text exposition, keyed by (name, sorted labels)."""
    samples: Samples = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if match is None:
            continue
        name, label_text, value_text = match.groups()
        try:
            value = float(value_text)
        except ValueError:
            continue
        labels = tuple(sorted(_LABEL.findall(label_text or "")))
        samples[(name, labels)] = value
    return samples


def metrics_url_for(url: str) -> str:
    """``scheme://host:port/metrics`` of the server behind a benchmark URL."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/metrics", "", ""))


async def scrape_metrics(session: aiohttp.ClientSession, url: str) -> Samples | None:
    """Scrape ``url``; ``None`` (and a log line) when it is not a Prometheus endpoint."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as response:
            if response.status != 200:
                logger.info("metrics scrape of %s returned HTTP %d", url, response.status)
                return None
            text = await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        logger.info("metrics scrape of %s failed: %r", url, exc)
        return None
    samples = parse_prometheus(text)
    return samples or None


@dataclass(frozen=True)
class MetricsDelta:
    """What changed between two scrapes (counters and histogram sums/counts only)."""

    samples: Samples = field(default_factory=dict)

    def total(self, name: str, **labels: str) -> float:
        """Sum of the deltas of ``name`` over every series matching ``labels``."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample_name, sample_labels), value in self.samples.items()
            if sample_name == name and wanted <= set(sample_labels)
        )

    def histogram_mean_ms(self, name: str) -> float | None:
        """Mean of a ``*_seconds`` histogram over the run, in ms (``None`` if it saw nothing)."""
        count = self.total(f"{name}_count")
        if count <= 0:
            return None
        return self.total(f"{name}_sum") / count * 1000.0

    def histograms(self) -> dict[str, dict[str, float]]:
        """Every histogram/summary that moved: ``{name: {"count", "sum", "mean"}}``."""
        sums: dict[str, float] = defaultdict(float)
        counts: dict[str, float] = defaultdict(float)
        for (name, _labels), value in self.samples.items():
            if name.endswith("_sum"):
                sums[name[: -len("_sum")]] += value
            elif name.endswith("_count"):
                counts[name[: -len("_count")]] += value
        return {
            name: {"count": counts[name], "sum": sums[name], "mean": sums[name] / counts[name]}
            for name in sorted(counts)
            if counts[name] > 0 and name in sums
        }

    def counters(self) -> dict[str, float]:
        """Every ``*_total`` series that moved, as ``name{labels}`` → delta."""
        result: dict[str, float] = {}
        for (name, labels), value in sorted(self.samples.items()):
            if name.endswith("_total") and value != 0:
                label_text = ",".join(f'{key}="{val}"' for key, val in labels)
                result[f"{name}{{{label_text}}}" if labels else name] = value
        return result


def metrics_delta(before: Samples, after: Samples) -> MetricsDelta:
    """``after - before`` for counters, histogram ``_sum``/``_count``/``_bucket`` series."""
    delta: Samples = {}
    for key, value in after.items():
        name = key[0]
        if name.endswith(("_total", "_sum", "_count", "_bucket")):
            delta[key] = value - before.get(key, 0.0)
    return MetricsDelta(delta)

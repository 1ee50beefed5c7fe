"""Read counts out of a replica's Prometheus ``/metrics`` text (best effort, no client lib)."""

from __future__ import annotations

__all__ = ["IN_FLIGHT_GAUGE", "REQUEST_COUNTERS", "in_flight", "requests_served"]

# Counter families that count served HTTP requests, first match wins.
REQUEST_COUNTERS = ("redline_http_requests_total", "redline_requests_total", "http_requests_total")
IN_FLIGHT_GAUGE = "redline_http_requests_in_flight"
# Probes and scrapes are not "requests served".
_NOT_SERVED = ('route="/ready"', 'route="/health"', 'route="/metrics"')


def _samples(text: str, family: str) -> list[tuple[str, float]]:
    """``(labels, value)`` for every sample of *family*."""
    found = []
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(family):
            continue
        head, _, rest = line.partition(" ") if "{" not in line else line.partition("} ")
        name, _, labels = head.partition("{")
        if name != family:
            continue
        try:
            found.append((labels, float(rest.split()[0])))
        except (ValueError, IndexError):
            continue
    return found


def requests_served(text: str) -> int | None:
    """Requests served (probes and scrapes excluded); None if no known counter is exported."""
    for family in REQUEST_COUNTERS:
        samples = _samples(text, family)
        if samples:
            return int(sum(v for labels, v in samples if not any(n in labels for n in _NOT_SERVED)))
    return None


def in_flight(text: str) -> int | None:
    """Requests in flight right now, or None if the gauge is not exported."""
    samples = _samples(text, IN_FLIGHT_GAUGE)
    return int(sum(v for _, v in samples)) if samples else None

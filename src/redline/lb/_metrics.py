"""Read the served-request count out of a replica's Prometheus ``/metrics`` text."""

from __future__ import annotations

__all__ = ["REQUEST_COUNTERS", "requests_served"]

# Counter families that count served HTTP requests, first match wins.
REQUEST_COUNTERS = ("redline_http_requests_total", "redline_requests_total", "http_requests_total")


def requests_served(text: str) -> int | None:
    """Sum every sample of the first request counter family present; None if there is none."""
    for family in REQUEST_COUNTERS:
        total = 0.0
        found = False
        for line in text.splitlines():
            if line.startswith("#") or not line.startswith(family):
                continue
            name = line.split("{", 1)[0].split(" ", 1)[0]
            if name != family:
                continue
            try:
                total += float(line.rsplit(" ", 1)[-1])
            except ValueError:
                continue
            found = True
        if found:
            return int(total)
    return None

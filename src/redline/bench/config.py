"""What ``redline bench`` was asked to do: URL, loop mode, concurrency/rate, length.

Example::

    LoadConfig(url="http://127.0.0.1:8000", concurrency=16, duration=30.0)   # closed loop
    LoadConfig(url="http://127.0.0.1:8000", rate=500.0, requests=10_000)    # open loop
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from redline.exceptions import BenchError

__all__ = ["LoadConfig"]

_DEFAULT_DURATION_S = 10.0


@dataclass(frozen=True)
class LoadConfig:
    """How hard and how long to push.

    ``concurrency``: closed-loop workers, or the open-loop cap on requests in flight (default
    1024 then). ``requests`` or ``duration`` (not both; neither means 10 s). ``rate`` (req/s)
    switches to open loop. ``warmup`` seconds of the same load run first and are not counted.

    Example::

        LoadConfig(url="http://127.0.0.1:8000", rate=200.0, duration=5.0)
    """

    url: str
    concurrency: int | None = None
    requests: int | None = None
    duration: float | None = None
    rate: float | None = None
    warmup: float = 0.0
    timeout: float = 30.0
    headers: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BenchError(f"URL must look like http://HOST:PORT, got {self.url!r}")
        if self.concurrency is not None and self.concurrency < 1:
            raise BenchError(f"--concurrency must be >= 1, got {self.concurrency}")
        if self.requests is not None and self.duration is not None:
            raise BenchError("give --requests or --duration, not both")
        if self.requests is not None and self.requests < 1:
            raise BenchError(f"--requests must be >= 1, got {self.requests}")
        if self.duration is not None and not self.duration > 0:
            raise BenchError(f"--duration must be > 0 seconds, got {self.duration}")
        if self.rate is not None and not (self.rate > 0 and math.isfinite(self.rate)):
            raise BenchError(f"--rate must be > 0 requests per second, got {self.rate}")
        if not self.warmup >= 0:
            raise BenchError(f"--warmup must be >= 0 seconds, got {self.warmup}")
        if not self.timeout > 0:
            raise BenchError(f"--timeout must be > 0 seconds, got {self.timeout}")

    @property
    def mode(self) -> str:
        """``open`` (fixed rate) or ``closed`` (fixed concurrency)."""
        return "open" if self.rate is not None else "closed"

    @property
    def in_flight_limit(self) -> int:
        """Most requests in flight at once."""
        if self.concurrency is not None:
            return self.concurrency
        return 1024 if self.mode == "open" else 8

    @property
    def effective_duration(self) -> float | None:
        """The run length in seconds (``None`` when bounded by ``requests``)."""
        if self.requests is not None:
            return None
        return self.duration if self.duration is not None else _DEFAULT_DURATION_S

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (for the report)."""
        return {
            "url": self.url,
            "mode": self.mode,
            "concurrency": self.in_flight_limit,
            "requests": self.requests,
            "duration_s": self.effective_duration,
            "rate": self.rate,
            "warmup_s": self.warmup,
            "timeout_s": self.timeout,
        }

"""The fault-injecting proxy lives in ``redline._services``, shared with the benchmarks."""

from redline._services.faultproxy import FaultProxy

__all__ = ["FaultProxy"]

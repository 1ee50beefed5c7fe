"""The real services the tests start (Redis, Redis Cluster, PostgreSQL, the fault proxy) live in
``redline._services``, shared with the benchmarks; this module keeps the tests' import path."""

from redline._services import *  # noqa: F403
from redline._services import __all__ as __all__

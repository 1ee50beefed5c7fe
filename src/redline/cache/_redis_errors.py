"""Private: which redis-py errors mean "Redis is unavailable", and their redline translation."""

from __future__ import annotations

from redis import exceptions as redis_errors

from redline.exceptions import CacheError, CacheUnavailable

__all__ = ["ANSWERED_ERRORS", "TRANSLATED_ERRORS", "UNAVAILABLE_ERRORS", "translate_redis_error"]

# Errors that say "this tier cannot serve right now": they trip the breaker. Any other
# redis error (WRONGTYPE, bad arguments...) is a CacheError that leaves the breaker alone.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # also BusyLoading, Authentication, MaxConnections
    redis_errors.TimeoutError,
    redis_errors.ClusterError,  # also ClusterDown, MasterDown
    redis_errors.RedisClusterException,  # also SlotNotCovered
    redis_errors.TryAgainError,
    redis_errors.AskError,  # also Moved: redirects that outlived the client's retries
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.InvalidResponse,
    OSError,
    TimeoutError,
)
# Unavailable errors a node answers with while it is up: the Cluster is down as a whole
# (CLUSTERDOWN while a failover runs; MASTERDOWN from a replica) or a slot is moving.
# They fail the call but say nothing against that node, so they leave its breaker closed.
ANSWERED_ERRORS: tuple[type[BaseException], ...] = (
    redis_errors.ClusterDownError,  # also MasterDown
    redis_errors.TryAgainError,
)
TRANSLATED_ERRORS: tuple[type[BaseException], ...] = (
    *UNAVAILABLE_ERRORS,
    redis_errors.RedisError,
)


def translate_redis_error(exc: BaseException, what: str) -> CacheError:
    """The redline error for a redis-py (or socket) error raised while doing *what*."""
    if isinstance(exc, UNAVAILABLE_ERRORS):
        return CacheUnavailable(f"redis unavailable during {what}: {type(exc).__name__}: {exc}")
    return CacheError(f"redis rejected {what}: {type(exc).__name__}: {exc}")

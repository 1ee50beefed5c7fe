"""The one exception root of redline, and the tree under it.

::

    RedlineError
    ├── ConfigError                  bad settings, URL or option combination (also a ValueError)
    ├── CacheError
    │   ├── CacheUnavailable         a cache tier cannot be reached (Redis down, breaker open)
    │   ├── SerializationError       a value cannot be encoded for, or decoded from, a remote
    │   │                            tier or channel (also a ValueError)
    │   ├── WrongValueType           the stored value has the wrong type for the operation,
    │   │                            such as ``incr`` of a non-integer (also a TypeError)
    │   └── LockError
    │       └── LockTimeout          waited past the hard cap for a distributed lock
    ├── ConcurrencyError
    │   ├── Overloaded               a bounded queue is full; retry later
    │   ├── Closed                   the primitive is closed and takes no new work
    │   ├── WorkerCrashed            a worker thread/process died while running the work
    │   ├── NotStarted               the primitive was used before start() / outside its
    │   │                            ``async with`` (also a RuntimeError)
    │   ├── BatchTimeout             a batched call passed its deadline (also a TimeoutError)
    │   ├── BatchFailed              the batch function ended with a BaseException, not an
    │   │                            Exception (its own CancelledError, SystemExit...)
    │   ├── BatchResultError         the batch function returned a wrong result (also a
    │   │                            ValueError)
    │   └── RateLimited              a rate limit refused the work (carries ``retry_after``)
    ├── ModelError
    │   ├── ModelNotFound            the requested model is not served here
    │   ├── ModelNotReady            the model is not loaded / warmed yet
    │   └── ModelOutputError         the model returned an array of the wrong shape (also a
    │                                ValueError)
    ├── GatewayError                 an upstream embeddings API could not answer (carries the
    │   │                            HTTP ``status`` to give the client)
    │   ├── UpstreamUnavailable      every upstream serving the model is down or cooling down
    │   ├── UpstreamTimeout          no answer within the request's deadline (also a
    │   │                            TimeoutError)
    │   └── UpstreamRejected         the upstream refused the request (a 4xx it returned)
    ├── ClusterError
    │   └── NginxError               nginx missing, config rejected, or failed to start
    └── BenchError                   the load generator cannot run (unreachable URL, bad flags)

Classes defined beside the code that raises them also sit under the root:
``redline.gateway.client.CallFailed`` (a GatewayError), ``redline.serve.errors.APIError``
(an HTTP error for route code) and ``redline.serve.cache_control.CacheControlError`` (a bad
``Cache-Control`` header, also a ValueError; ``CacheControlRefused`` under it).

What callers catch:

- **Failures at run time** (a tier down, a timeout, a full queue, a closed or unopened object
  used, a bad value read back, a model's wrong output) raise a :class:`RedlineError`.
  Third-party errors (redis-py, httpx, asyncpg, onnxruntime) are translated at the boundary
  with ``raise ... from exc``. Where a built-in base helps (``except TimeoutError``,
  ``except ValueError``), the class subclasses it too.
- **Misuse of the API** (a wrong argument type or value given to a constructor or a call:
  ``ValueError("max_batch must be >= 1, got 0")``, ``TypeError("amount must be an int, got
  '1'")``) raises the built-in ``ValueError`` / ``TypeError`` with an exact message; fix the
  call rather than catch it. ``CacheStats.tier(name)`` raises ``KeyError`` for an unknown
  tier, as a mapping would.
- **Errors of your own code** (a loader, a batch function, a ``key=`` function) reach you
  unchanged; a ``StopIteration`` from a batch function becomes ``RuntimeError``, as it does
  when it leaves a generator.

Every class pickles with its message and extra attributes (``retry_after``, ``status``...),
so an error crosses a process pool intact.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BatchFailed",
    "BatchResultError",
    "BatchTimeout",
    "BenchError",
    "CacheError",
    "CacheUnavailable",
    "Closed",
    "ClusterError",
    "ConcurrencyError",
    "ConfigError",
    "GatewayError",
    "LockError",
    "LockTimeout",
    "ModelError",
    "ModelNotFound",
    "ModelNotReady",
    "ModelOutputError",
    "NginxError",
    "NotStarted",
    "Overloaded",
    "RateLimited",
    "RedlineError",
    "SerializationError",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "WorkerCrashed",
    "WrongValueType",
]


def _rebuild(cls: type[BaseException], args: tuple[Any, ...]) -> BaseException:
    """Unpickle without calling ``__init__`` (whose signature may differ from ``args``)."""
    error = cls.__new__(cls, *args)
    error.args = args
    return error


class RedlineError(Exception):
    """Root of every error redline raises on purpose."""

    def __reduce__(self) -> tuple[Any, ...]:
        # The default (``cls(*self.args)``) breaks on classes whose ``__init__`` takes other
        # arguments than the message (``RateLimited(message, retry_after)``); rebuild from
        # ``args`` and restore the instance attributes as the state instead.
        return (_rebuild, (type(self), self.args), self.__dict__ or None)


class ConfigError(RedlineError, ValueError):
    """A setting, URL or option combination is invalid."""


class CacheError(RedlineError):
    """A cache operation failed."""


class CacheUnavailable(CacheError):
    """A cache tier cannot be reached right now."""


class SerializationError(CacheError, ValueError):
    """A value cannot be encoded for (or decoded from) a remote tier or channel."""


class WrongValueType(CacheError, TypeError):
    """The stored value has the wrong type for the operation (``incr`` of a non-integer)."""


class LockError(CacheError):
    """A distributed lock could not be taken or released."""


class LockTimeout(LockError):
    """Waited past the hard cap for a distributed lock."""


class ConcurrencyError(RedlineError):
    """A concurrency primitive refused or failed the work."""


class Overloaded(ConcurrencyError):
    """A bounded queue is full; the caller should retry later."""


class Closed(ConcurrencyError):
    """The primitive is closed (or draining) and takes no new work."""


class WorkerCrashed(ConcurrencyError):
    """A worker thread or process died while running the work."""


class NotStarted(ConcurrencyError, RuntimeError):
    """The primitive was used before ``start()`` / ``open()`` (or outside ``async with``)."""


class BatchTimeout(ConcurrencyError, TimeoutError):
    """A batched call passed its deadline; its item is dropped if it had not started."""


class BatchFailed(ConcurrencyError):
    """The batch function ended with a BaseException that is not an Exception.

    Its own ``CancelledError`` (an inner timeout, a cancelled client call), ``SystemExit`` or
    ``KeyboardInterrupt``: that batch's callers get this error, with the original as
    ``__cause__`` (named in the message, which survives pickling); the batcher carries on.
    """


class BatchResultError(ConcurrencyError, ValueError):
    """The batch function returned something other than one result per item."""


class RateLimited(ConcurrencyError):
    """A rate limit refused the work; ``retry_after`` says how long to wait (seconds)."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelError(RedlineError):
    """The model failed to load or to run."""


class ModelNotFound(ModelError):
    """The requested model is not served here."""


class ModelNotReady(ModelError):
    """The model is not loaded and warmed yet."""


class ModelOutputError(ModelError, ValueError):
    """The model returned an array of the wrong shape for its inputs."""


class GatewayError(RedlineError):
    """An upstream embeddings API could not answer; ``status`` is the HTTP status to return."""

    status = 502

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class UpstreamUnavailable(GatewayError):
    """Every upstream serving the model failed or is cooling down after failures."""

    status = 503


class UpstreamTimeout(GatewayError, TimeoutError):
    """No upstream answered within the request's deadline."""

    status = 504


class UpstreamRejected(GatewayError):
    """The upstream refused the request with a 4xx status (passed on to the client)."""

    status = 400


class ClusterError(RedlineError):
    """The replica cluster could not be started or supervised."""


class NginxError(ClusterError):
    """nginx is missing, rejected its config, or failed to start or reload."""


class BenchError(RedlineError):
    """The load generator cannot run (unreachable URL, bad flags)."""

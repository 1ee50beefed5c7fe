"""redline: make AI inference APIs fast and keep them up."""

from redline.exceptions import (
    BenchError,
    CacheError,
    CacheUnavailable,
    Closed,
    ClusterError,
    ConcurrencyError,
    ConfigError,
    LockError,
    LockTimeout,
    ModelError,
    ModelNotFound,
    ModelNotReady,
    NginxError,
    Overloaded,
    RateLimited,
    RedlineError,
    SerializationError,
    WorkerCrashed,
)

__version__ = "0.1.0"

__all__ = [
    "BenchError",
    "CacheError",
    "CacheUnavailable",
    "Closed",
    "ClusterError",
    "ConcurrencyError",
    "ConfigError",
    "LockError",
    "LockTimeout",
    "ModelError",
    "ModelNotFound",
    "ModelNotReady",
    "NginxError",
    "Overloaded",
    "RateLimited",
    "RedlineError",
    "SerializationError",
    "WorkerCrashed",
    "__version__",
]

"""Optional bearer-token API keys (``REDLINE_API_KEYS``) and the per-client rate limit.

Keys are compared with :func:`hmac.compare_digest` against every configured key. Failed
attempts are counted per client address and throttled (:mod:`redline.serve.auth_failures`).
The client identity used for rate limiting and usage records is
``key:<first 12 hex of SHA-256(key)>`` with a key, else ``ip:<address>``; the key itself is
never stored or logged.

Example::

    @router.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, client: str = Depends(authorize)) -> ...
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

from redline.serve import tracing
from redline.serve.auth_failures import AuthFailureLimiter
from redline.serve.errors import APIError
from redline.serve.settings import Settings

__all__ = [
    "INVALID_API_KEY",
    "authenticate",
    "authorize",
    "check_api_key",
    "client_address",
    "client_identity",
    "unchecked_client",
]

#: The error code of a request whose key matches none configured.
INVALID_API_KEY = "invalid_api_key"


def check_api_key(settings: Settings, authorization: str | None) -> str | None:
    """The matching key from an ``Authorization: Bearer <key>`` header; 401 APIError if none."""
    if not settings.api_keys:
        return None
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise APIError(
            401,
            "missing API key: send 'Authorization: Bearer <key>'",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    given = token.encode()
    matched = None
    for key in settings.api_keys:
        if hmac.compare_digest(given, key.encode()):
            matched = key
    if matched is None:
        raise APIError(
            401, "invalid API key", code=INVALID_API_KEY, headers={"WWW-Authenticate": "Bearer"}
        )
    return matched


def client_address(request: Request) -> str:
    """The client's IP address (behind the cluster's nginx: the one it forwarded)."""
    return request.client.host if request.client else "unknown"


def client_identity(request: Request, key: str | None) -> str:
    """``key:<hash prefix>`` or ``ip:<address>``."""
    if key is not None:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]
    return f"ip:{client_address(request)}"


async def authenticate(request: Request) -> str | None:
    """The API key the request carries (None when keys are off); 401 when it has none or a
    wrong one, 429 when its address sent too many wrong ones (``REDLINE_AUTH_FAILURE_LIMIT``).

    Only a wrong key counts as a failure: a request without one guesses nothing (health
    checkers, scrapers and browsers send none), and it costs no key comparison."""
    settings: Settings = request.app.state.redline.settings
    if not settings.api_keys:
        return None
    failures: AuthFailureLimiter | None = request.app.state.auth_failures
    if failures is None:
        return check_api_key(settings, request.headers.get("authorization"))
    address = client_address(request)
    failures.check(address)
    try:
        return check_api_key(settings, request.headers.get("authorization"))
    except APIError as exc:
        if exc.code == INVALID_API_KEY:
            await failures.record_failure(address)
        raise


def unchecked_client(request: Request) -> str | None:
    """The client id of *request* when there is nothing to check (no API keys, no rate limit,
    and tracing off: no ``auth`` span to open), kept in the scope's ``state`` as
    :func:`authorize` keeps it; None when :func:`authorize` must run. No coroutine: this is
    every request of a server that checks nothing."""
    state = request.app.state.redline
    if state.settings.api_keys or state.limiter is not None or tracing.is_enabled():
        return None
    client = client_identity(request, None)
    request.scope.setdefault("state", {})["client"] = client
    return client


@tracing.traced("auth")
async def authorize(request: Request) -> str:
    """FastAPI dependency: check the API key, apply the rate limit, return the client id
    (kept in the scope's ``state`` as ``client``, for the access log)."""
    state = request.app.state.redline
    key = await authenticate(request)
    client = client_identity(request, key)
    # The scope's dict itself: ``request.state`` would wrap it in a new State per request.
    request.scope.setdefault("state", {})["client"] = client
    if state.limiter is not None:
        await state.limiter.check(client)
    return client

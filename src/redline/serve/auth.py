"""Optional bearer-token API keys (``REDLINE_API_KEYS``) and the per-client rate limit.

Keys are compared with :func:`hmac.compare_digest` against every configured key. The client
identity used for rate limiting and usage records is ``key:<first 12 hex of SHA-256(key)>``
with a key, else ``ip:<address>``; the key itself is never stored or logged.

Example::

    @router.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest, client: str = Depends(authorize)) -> ...
"""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

from redline.serve.errors import APIError
from redline.serve.settings import Settings

__all__ = ["authorize", "check_api_key", "client_identity"]


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
            401, "invalid API key", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"}
        )
    return matched


def client_identity(request: Request, key: str | None) -> str:
    """``key:<hash prefix>`` or ``ip:<address>``."""
    if key is not None:
        return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]
    host = request.client.host if request.client else "unknown"
    return f"ip:{host}"


async def authorize(request: Request) -> str:
    """FastAPI dependency: check the API key, apply the rate limit, return the client id."""
    state = request.app.state.redline
    key = check_api_key(state.settings, request.headers.get("authorization"))
    client = client_identity(request, key)
    request.state.client = client
    if state.limiter is not None:
        await state.limiter.check(client)
    return client

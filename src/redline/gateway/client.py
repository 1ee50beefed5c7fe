"""One HTTP call to an OpenAI-compatible embeddings API, on a pooled keep-alive
``httpx.AsyncClient``; failures come back classified (retryable or not, ``Retry-After``).

Retrying, failover and backoff are the router's job (:mod:`redline.gateway.router`): this
module makes exactly one attempt per :meth:`UpstreamClient.embed` call.

Example::

    async with UpstreamClient(parse_upstream("up=http://127.0.0.1:8080")) as client:
        reply = await client.embed("bge", ["a", "b"], dimensions=None, timeout=5.0)
        reply.vectors.shape, reply.prompt_tokens      # (2, 384), 2
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np
import numpy.typing as npt
import orjson

from redline.exceptions import GatewayError, NotStarted
from redline.gateway.config import UpstreamConfig
from redline.serve import tracing
from redline.serve.token_input import decode_ids, is_ids

__all__ = ["CallFailed", "ModelInfo", "UpstreamClient", "UpstreamReply"]


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """Vectors in input order (float32) and the upstream's ``usage.prompt_tokens``."""

    vectors: npt.NDArray[np.float32]
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """One model an upstream lists (``dimension`` when it says so)."""

    id: str
    dimension: int | None
    max_input_tokens: int | None = None


class CallFailed(GatewayError):
    """One attempt failed; ``retryable`` says whether another attempt may succeed."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        retryable: bool,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        kind: str = "invalid_response",
        error_type: str = "invalid_response",
    ) -> None:
        super().__init__(message, status=status)
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status
        #: what failed, one of ``observer.RESULTS``: timeout, connect, http_429, http_4xx,
        #: http_5xx, invalid_response
        self.kind = kind
        #: the span's ``error.type`` when no HTTP status came back
        self.error_type = error_type


class UpstreamClient:
    """Calls one upstream; open with ``async with`` (or :meth:`open`), then :meth:`embed`."""

    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config
        # The base URL's own query (an api-version, say) goes after each endpoint's path.
        base, _, query = config.base_url.partition("?")
        prefix = base.rstrip("/")
        prefix += "" if prefix.endswith("/v1") else "/v1"
        tail = f"?{query}" if query else ""
        self._embeddings_url = prefix + "/embeddings" + tail
        self._models_url = prefix + "/models" + tail
        self._client: httpx.AsyncClient | None = None
        where = httpx.URL(prefix)
        self._host = where.host
        self._port = where.port or (443 if where.scheme == "https" else 80)

    async def open(self) -> None:
        """Build the pooled client (keep-alive connections, no proxies from the environment)."""
        if self._client is not None:
            return
        headers = {"Content-Type": "application/json"}
        key = self.config.api_key()
        if key is not None:
            headers["Authorization"] = f"Bearer {key}"
        pool = self.config.concurrency * 2
        self._client = httpx.AsyncClient(
            headers=headers,
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            timeout=httpx.Timeout(self.config.timeout, connect=min(5.0, self.config.timeout)),
            trust_env=False,
        )

    async def close(self) -> None:
        """Close every pooled connection."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _require(self) -> httpx.AsyncClient:
        if self._client is None:
            raise NotStarted(f"UpstreamClient {self.config.name!r} is not open")
        return self._client

    async def embed(
        self, model: str, inputs: list[str], *, dimensions: int | None, timeout: float
    ) -> UpstreamReply:
        """One ``POST /v1/embeddings`` within *timeout* seconds; :class:`CallFailed` if not."""
        sent: list[Any] = [decode_ids(t) if is_ids(t) else t for t in inputs]
        body: dict[str, Any] = {
            "model": model,
            "input": sent,
            "encoding_format": self.config.encoding,
        }
        if dimensions is not None:
            body["dimensions"] = dimensions
        payload = await self._call("POST", self._embeddings_url, orjson.dumps(body), timeout)
        return _parse_embeddings(payload, len(inputs), self.config)

    async def list_models(self, *, timeout: float) -> list[ModelInfo]:
        """``GET /v1/models``: the ids (and dimensions, where given) the upstream serves."""
        payload = await self._call("GET", self._models_url, None, timeout)
        rows = payload.get("data") if isinstance(payload, dict) else None
        if not isinstance(rows, list):
            raise self._bad("GET /v1/models answered without a 'data' list")
        found = []
        for row in rows:
            if isinstance(row, dict) and isinstance(row.get("id"), str):
                dimension = row.get("dimension")
                found.append(
                    ModelInfo(row["id"], dimension if isinstance(dimension, int) else None)
                )
        return found

    async def _call(self, method: str, url: str, content: bytes | None, timeout: float) -> Any:
        """Send and read the JSON answer; every failure becomes a :class:`CallFailed`.

        With tracing on, each call is a client span (HTTP semantic conventions) whose
        ``traceparent`` goes out with the request; with tracing off nothing of it runs.
        """
        if not tracing.is_enabled():
            return await self._send(method, url, content, timeout, None)
        attributes = {
            "http.request.method": method,
            "server.address": self._host,
            "server.port": self._port,
            "url.full": url,
            "redline.upstream": self.config.name,
        }
        route = "/v1/embeddings" if url is self._embeddings_url else "/v1/models"
        with tracing.client_span(f"{method} {route}", attributes) as span:
            headers: dict[str, str] = {}
            tracing.inject(headers)
            try:
                status, payload = await self._send(method, url, content, timeout, headers)
            except CallFailed as exc:
                if exc.upstream_status is not None:
                    span.set_attribute("http.response.status_code", exc.upstream_status)
                    span.set_attribute("error.type", str(exc.upstream_status))
                else:
                    span.set_attribute("error.type", exc.error_type)
                raise
            span.set_attribute("http.response.status_code", status)
            return payload

    async def _send(
        self,
        method: str,
        url: str,
        content: bytes | None,
        timeout: float,
        headers: dict[str, str] | None,
    ) -> Any:
        """One request: the JSON answer, or ``(status, JSON answer)`` when *headers* are
        given (the traced path)."""
        name = self.config.name
        client = self._require()
        if timeout <= 0:
            raise CallFailed(
                f"upstream {name!r}: no time left",
                status=504,
                retryable=False,
                kind="timeout",
                error_type="timeout",
            )
        try:
            async with asyncio.timeout(timeout):
                response = await client.request(method, url, content=content, headers=headers)
                raw = await response.aread()
        except TimeoutError:
            raise CallFailed(
                f"upstream {name!r} did not answer within {timeout:.2f}s",
                status=504,
                retryable=True,
                kind="timeout",
                error_type="timeout",
            ) from None
        except httpx.TimeoutException as exc:
            raise CallFailed(
                f"upstream {name!r} timed out: {type(exc).__name__}",
                status=504,
                retryable=True,
                kind="timeout",
                error_type="timeout",
            ) from exc
        except httpx.TransportError as exc:
            # Connect refused, connection closed mid-answer, ...: embeddings are idempotent.
            raise CallFailed(
                f"upstream {name!r} unreachable: {type(exc).__name__}: {exc}",
                status=502,
                retryable=True,
                kind="connect",
                error_type=f"httpx.{type(exc).__name__}",
            ) from exc
        status = response.status_code
        if status >= 400:
            detail = _error_detail(raw)
            retryable = status == 429 or status >= 500
            kind = "http_429" if status == 429 else "http_5xx" if status >= 500 else "http_4xx"
            raise CallFailed(
                f"upstream {name!r} answered {status}: {detail}",
                status=(502 if status >= 500 else status) if status != 429 else 503,
                retryable=retryable,
                retry_after=_retry_after(response.headers.get("retry-after")),
                upstream_status=status,
                kind=kind,
            )
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise self._bad(f"answered {status} with a body that is not JSON") from None
        return payload if headers is None else (status, payload)

    def _bad(self, what: str) -> CallFailed:
        return CallFailed(f"upstream {self.config.name!r} {what}", status=502, retryable=True)

    def __repr__(self) -> str:
        state = "open" if self._client is not None else "closed"
        return f"UpstreamClient({self.config.name!r}, {self._embeddings_url!r}, {state})"


def _parse_embeddings(payload: Any, count: int, config: UpstreamConfig) -> UpstreamReply:
    """Vectors ordered by ``index`` and the token count, or a retryable CallFailed."""
    name = config.name

    def bad(what: str) -> CallFailed:
        return CallFailed(f"upstream {name!r} {what}", status=502, retryable=True)

    rows = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(rows, list) or len(rows) != count:
        got = len(rows) if isinstance(rows, list) else "no"
        raise bad(f"returned {got} embeddings for {count} inputs")
    vectors: list[npt.NDArray[np.float32] | None] = [None] * count
    for position, row in enumerate(rows):
        index = row.get("index", position) if isinstance(row, dict) else None
        embedding = row.get("embedding") if isinstance(row, dict) else None
        if not isinstance(index, int) or not 0 <= index < count or vectors[index] is not None:
            raise bad(f"returned a bad or repeated index {index!r}")
        try:
            if isinstance(embedding, str):
                vector = np.frombuffer(base64.b64decode(embedding), dtype="<f4")
            else:
                vector = np.asarray(embedding, dtype=np.float32)
        except (ValueError, TypeError):
            raise bad(f"returned an embedding that is not floats at index {index}") from None
        vectors[index] = vector.astype(np.float32, copy=False)
    shapes = {vector.shape for vector in vectors if vector is not None}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise bad(f"returned embeddings of different shapes {sorted(shapes)}")
    usage = payload.get("usage") if isinstance(payload, dict) else None
    tokens = usage.get("prompt_tokens") if isinstance(usage, dict) else None
    return UpstreamReply(
        np.stack([v for v in vectors if v is not None]), tokens if isinstance(tokens, int) else -1
    )


def _error_detail(raw: bytes) -> str:
    """The upstream's error message (OpenAI shape) or the start of its body."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:200].decode(errors="replace") or "(empty body)"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:300]
        if isinstance(error, str):
            return error[:300]
    return str(body)[:200]


def _retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())

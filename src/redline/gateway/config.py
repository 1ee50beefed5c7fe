"""What the operator says about one upstream: :class:`UpstreamConfig` and its one-line spec.

A spec is ``NAME=URL`` with optional query parameters that redline reads and strips from the
URL (the rest of the query stays part of the URL)::

    tei=http://127.0.0.1:8080?model=bge-small&max_inputs=32
    openai=http://127.0.0.1:9000/v1?kind=openai&key_env=OPENAI_API_KEY&model=text-embedding-3-small&alias=small:text-embedding-3-small

==============  =========================================================================
parameter       meaning
==============  =========================================================================
model           a model the upstream serves (repeat it for several); none = ask the
                upstream's ``GET /v1/models`` at start
alias           ``ALIAS:MODEL``: clients may ask for MODEL as ALIAS (repeatable)
key_env         the environment variable holding the upstream's API key (sent as a bearer
                token); the key itself never appears on a command line
kind            ``generic`` (default: 32 inputs, 16384 tokens per call) or ``openai``
                (2048 inputs, 300000 tokens per call)
max_inputs      most inputs in one upstream call (overrides the kind's default)
max_tokens      most estimated tokens in one upstream call (overrides the kind's default)
timeout         seconds a request may wait for this upstream, retries included (default 30)
concurrency     upstream calls in flight at once (default 8)
encoding        how vectors travel from the upstream: ``base64`` (default) or ``float``
dimension       the model's full dimension (default: asked at start)
tokenizer       how each input's share of ``usage`` is counted: none = words (then a call's
                total is divided in proportion), ``minilm`` (the bundled tokenizer) or the
                path of a ``tokenizer.json``; capped at the model's ``max_input_tokens``
                when its ``/v1/models`` card gives one
==============  =========================================================================

Specs contain no commas, so several fit in one ``REDLINE_UPSTREAMS`` (comma- or
space-separated).

Example::

    config = parse_upstream("tei=http://127.0.0.1:8080?model=bge&max_inputs=16")
    config.name, config.base_url, config.models, config.max_inputs
    # ('tei', 'http://127.0.0.1:8080', ('bge',), 16)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redline.exceptions import ConfigError

__all__ = ["KINDS", "UpstreamConfig", "parse_upstream"]

KINDS: dict[str, tuple[int, int]] = {"generic": (32, 16384), "openai": (2048, 300_000)}
"""Per-call limits ``(max inputs, max tokens)`` of each upstream kind."""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_OURS = {
    "model",
    "alias",
    "key_env",
    "kind",
    "max_inputs",
    "max_tokens",
    "timeout",
    "concurrency",
    "encoding",
    "dimension",
    "tokenizer",
}


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """One OpenAI-compatible embeddings API redline sits in front of."""

    name: str
    base_url: str
    models: tuple[str, ...] = ()
    aliases: dict[str, str] = field(default_factory=dict)
    key_env: str | None = None
    max_inputs: int = 32
    max_tokens: int = 16384
    timeout: float = 30.0
    concurrency: int = 8
    encoding: Literal["base64", "float"] = "base64"
    dimension: int | None = None
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ConfigError(f"upstream name must be letters, digits, '._-'; got {self.name!r}")
        for what, value in (
            ("max_inputs", self.max_inputs),
            ("max_tokens", self.max_tokens),
            ("concurrency", self.concurrency),
        ):
            if value < 1:
                raise ConfigError(f"upstream {self.name!r}: {what} must be >= 1, got {value}")
        if not self.timeout > 0:
            raise ConfigError(f"upstream {self.name!r}: timeout must be > 0, got {self.timeout}")
        if self.dimension is not None and self.dimension < 1:
            raise ConfigError(f"upstream {self.name!r}: dimension must be >= 1")

    def api_key(self) -> str | None:
        """The key from ``key_env`` (read now, so a rotated key is picked up on restart)."""
        if self.key_env is None:
            return None
        key = os.environ.get(self.key_env)
        if not key:
            raise ConfigError(
                f"upstream {self.name!r}: environment variable {self.key_env} (key_env) is unset"
            )
        return key

    def __repr__(self) -> str:
        key = f"${self.key_env}" if self.key_env else None
        return (
            f"UpstreamConfig(name={self.name!r}, base_url={self.base_url!r}, "
            f"models={list(self.models)}, key={key}, max_inputs={self.max_inputs}, "
            f"max_tokens={self.max_tokens})"
        )


def parse_upstream(spec: str) -> UpstreamConfig:
    """Parse ``NAME=URL[?options]`` (see the module docstring); :class:`ConfigError` if bad."""
    name, sep, url = spec.strip().partition("=")
    if not sep or not name or not url:
        raise ConfigError(f"upstream must look like NAME=http://host:port[?options], got {spec!r}")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"upstream {name!r}: URL must be http(s)://host[:port], got {url!r}")
    ours: dict[str, list[str]] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OURS:
            ours.setdefault(key, []).append(value)
        else:
            rest.append((key, value))
    base_url = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), urlencode(rest), ""))

    def one(key: str) -> str | None:
        values = ours.get(key)
        if values is None:
            return None
        if len(values) > 1:
            raise ConfigError(f"upstream {name!r}: {key} given {len(values)} times")
        return values[0]

    def number(key: str, kind: type[int] | type[float]) -> int | float | None:
        value = one(key)
        if value is None:
            return None
        try:
            return kind(value)
        except ValueError:
            raise ConfigError(f"upstream {name!r}: {key} must be a number, got {value!r}") from None

    kind = one("kind") or "generic"
    if kind not in KINDS:
        raise ConfigError(f"upstream {name!r}: kind must be one of {sorted(KINDS)}, got {kind!r}")
    default_inputs, default_tokens = KINDS[kind]
    aliases: dict[str, str] = {}
    for alias in ours.get("alias", []):
        short, colon, target = alias.partition(":")
        if not colon or not short or not target:
            raise ConfigError(f"upstream {name!r}: alias must be ALIAS:MODEL, got {alias!r}")
        aliases[short] = target
    encoding = one("encoding") or "base64"
    if encoding not in ("base64", "float"):
        raise ConfigError(f"upstream {name!r}: encoding must be base64 or float, got {encoding!r}")
    max_inputs = number("max_inputs", int)
    max_tokens = number("max_tokens", int)
    timeout = number("timeout", float)
    concurrency = number("concurrency", int)
    dimension = number("dimension", int)
    return UpstreamConfig(
        name=name,
        base_url=base_url,
        models=tuple(ours.get("model", [])),
        aliases=aliases,
        key_env=one("key_env"),
        max_inputs=int(max_inputs) if max_inputs is not None else default_inputs,
        max_tokens=int(max_tokens) if max_tokens is not None else default_tokens,
        timeout=float(timeout) if timeout is not None else 30.0,
        concurrency=int(concurrency) if concurrency is not None else 8,
        encoding="float" if encoding == "float" else "base64",
        dimension=int(dimension) if dimension is not None else None,
        tokenizer=one("tokenizer"),
    )

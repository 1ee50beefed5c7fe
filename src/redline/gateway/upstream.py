"""An :class:`Upstream`: one configured embeddings API with its pooled client and its outlier
ejector (the unit the router picks between).

Example::

    upstream = Upstream(parse_upstream("tei=http://127.0.0.1:8080?model=bge"))
    await upstream.open()
    upstream.state()          # "healthy"
    await upstream.close()
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redline.gateway.client import UpstreamClient
from redline.gateway.config import UpstreamConfig
from redline.gateway.ejector import OutlierEjector

__all__ = ["Upstream"]


class Upstream:
    """Config + client + ejector of one upstream; ``models`` is filled when the gateway opens."""

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        ejector: OutlierEjector | None = None,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.name = config.name
        self.client = UpstreamClient(config)
        self.ejector = ejector if ejector is not None else OutlierEjector(timer=timer)
        self.models: dict[str, int | None] = dict.fromkeys(config.models)
        self.token_caps: dict[str, int] = {}  # max_input_tokens from the model cards

    async def open(self) -> None:
        """Open the connection pool."""
        await self.client.open()

    async def close(self) -> None:
        """Close the connection pool."""
        await self.client.close()

    def state(self) -> str:
        """``NAME: healthy`` / ``NAME: ejected for 2.0s after 3 failures: ...``."""
        return f"{self.name}: {self.ejector.state()}"

    def __repr__(self) -> str:
        return f"Upstream({self.name!r}, {self.config.base_url!r}, {self.ejector.state()})"

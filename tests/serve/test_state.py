"""ServerState: what a server does to its process once loaded, and undoes when it closes."""

from __future__ import annotations

import gc
from pathlib import Path

from redline.serve.testing import HashingModel
from tests.serve._helpers import make_settings, running_app


async def test_a_ready_server_leaves_its_heap_out_of_later_collections(tmp_path: Path) -> None:
    gc.unfreeze()
    async with running_app(make_settings(tmp_path), HashingModel(8)) as (client, state):
        assert state.ready
        assert gc.get_freeze_count() > 1000  # the loaded server's objects
        assert (await client.post("/v1/embeddings", json={"input": "a"})).status_code == 200
    assert gc.get_freeze_count() == 0  # closed: collectable again

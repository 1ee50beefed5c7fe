"""The offload threads run work at a lower priority than the loop; a large answer encoded item
by item is byte for byte the answer encoded at once."""

from __future__ import annotations

import os
import threading

import numpy as np
import orjson
import pytest

from redline.serve.offload import Offload
from redline.serve.routes._common import _encode_list


async def test_offload_runs_in_a_thread_of_lower_priority() -> None:
    offload = Offload(threads=1, niceness=5)
    try:
        loop_thread = threading.get_ident()
        loop_nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        def where(x: int, *, y: int) -> tuple[int, int, int]:
            return (
                threading.get_ident(),
                os.getpriority(os.PRIO_PROCESS, threading.get_native_id()),
                x + y,
            )

        thread, nice, total = await offload.run(where, 1, y=2)
    finally:
        offload.close()
    assert total == 3
    assert thread != loop_thread
    assert nice == min(19, loop_nice + 5)
    assert "niceness=5" in repr(offload)


def test_offload_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        Offload(threads=0)
    with pytest.raises(ValueError, match="niceness must be between 0 and 19, got 20"):
        Offload(niceness=20)


def test_a_list_encoded_by_item_is_the_list_encoded_at_once() -> None:
    vectors = np.random.default_rng(3).standard_normal((5, 8)).astype(np.float32)
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    whole = _encode_list(data, "m", 7, by_item=False)
    assert _encode_list(data, "m", 7, by_item=True) == whole
    assert orjson.loads(whole)["usage"] == {"prompt_tokens": 7, "total_tokens": 7}

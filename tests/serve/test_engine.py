"""InferenceEngine: every embed call has a deadline, and a failed request leaves nothing queued."""

from __future__ import annotations

import asyncio
import time

import pytest

from redline.exceptions import BatchTimeout, Overloaded
from redline.serve.engine import DEFAULT_REQUEST_TIMEOUT, InferenceEngine
from redline.serve.testing import HashingModel


async def test_embed_without_a_timeout_still_ends_at_the_request_timeout() -> None:
    model = HashingModel(8, delay=0.5)
    engine = InferenceEngine(model, max_batch_size=1, request_timeout=0.05)
    await engine.start()
    try:
        begun = time.monotonic()
        with pytest.raises(BatchTimeout):
            await asyncio.wait_for(engine.embed(["a"]), timeout=5)
        assert time.monotonic() - begun < 0.45  # the deadline, not the 0.5 s model call
    finally:
        await engine.close()


async def test_a_failed_request_leaves_none_of_its_inputs_queued() -> None:
    model = HashingModel(8, delay=0.05)
    engine = InferenceEngine(model, max_batch_size=1, max_queue=4)
    await engine.start()
    try:
        with pytest.raises(Overloaded):  # "a" to "d" fill the queue, "e" is refused
            await engine.embed(["a", "b", "c", "d", "e", "f"], timeout=5)
        await asyncio.sleep(0.3)
        # The worker had taken "a" and handed "b" to the model thread before "e" was
        # refused; "c" and "d" were still queued: they left with the failed request.
        assert model.inputs == ["a", "b"]
        assert engine.health()["queue_depth"] == 0
        vectors, _ = await engine.embed(["e"], timeout=5)
        assert vectors.shape == (1, 8)
    finally:
        await engine.close()


def test_the_default_deadline_is_set_and_bad_ones_are_refused() -> None:
    assert InferenceEngine(HashingModel(8)).request_timeout == DEFAULT_REQUEST_TIMEOUT
    with pytest.raises(ValueError, match=r"^request_timeout must be > 0, got 0$"):
        InferenceEngine(HashingModel(8), request_timeout=0)

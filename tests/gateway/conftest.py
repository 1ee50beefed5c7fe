"""Fixtures the gateway tests share: a fake upstream (one per module) and a gateway process
whose upstream ``fake`` is it.

A module tunes them by overriding the small fixtures they read: ``fake_dimension`` (8) and
``fake_options``, the extra query of the upstream's spec (``"&max_inputs=4"``; none by
default). A module with another upstream defines its own ``gw``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.gateway._fake import FakeUpstream
from tests.gateway._procs import Serve, gateway


@pytest.fixture(scope="module")
def fake_dimension() -> int:
    return 8


@pytest.fixture(scope="module")
def fake_options() -> str:
    return ""


@pytest.fixture(scope="module")
def fake(fake_dimension: int) -> Iterator[FakeUpstream]:
    with FakeUpstream(dimension=fake_dimension) as upstream:
        yield upstream


@pytest.fixture(scope="module")
def gw(fake: FakeUpstream, fake_dimension: int, fake_options: str) -> Iterator[Serve]:
    spec = f"fake={fake.url}?model=fake&dimension={fake_dimension}{fake_options}"
    with gateway(spec) as server:
        yield server

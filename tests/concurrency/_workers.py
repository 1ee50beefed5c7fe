"""Picklable functions for process-pool tests (importable by spawned children)."""

from __future__ import annotations

import hashlib
import os


def hash_rounds(data: bytes, rounds: int) -> str:
    digest = data
    for _ in range(rounds):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()


def pid() -> int:
    return os.getpid()


def die(code: int) -> None:
    os._exit(code)


def fail(message: str) -> None:
    raise ValueError(message)

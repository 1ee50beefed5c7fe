"""Built files (exported ONNX graphs) kept on disk, each checked before use.

Every file lives in ``<directory>/<entry>/<name>`` with its sha256 in ``<name>.sha256`` beside
it. :meth:`GraphCache.get_or_build` returns the file when its bytes still match that checksum;
a missing, truncated or corrupt file (or a missing checksum) is discarded and built again.
Builds write to a temp name and are renamed into place, the checksum last, so a crash leaves
at worst a file without a checksum, which the next start rebuilds. A lock file per entry and
name makes processes that start together (uvicorn workers, cluster replicas) build once: the
others wait and then find it.

Example::

    cache = GraphCache(default_cache_dir())
    path = cache.get_or_build("all-MiniLM-L6-v2-3f2a", "fp32.onnx", export_to)  # export_to(path)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from redline.exceptions import ModelError

__all__ = ["GraphCache", "default_cache_dir", "file_sha256"]

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/redline/models``, or ``~/.cache/redline/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "redline" / "models"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class GraphCache:
    """A folder of built files, each verified by the sha256 written beside it."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def get_or_build(self, entry: str, name: str, build: Callable[[Path], None]) -> Path:
        """The verified file *entry*/*name*, built first with ``build(path)`` if needed.

        *build* must write the whole file at the path it is given. Raises ``ModelError`` when
        the folder cannot be written.
        """
        folder = self.directory / entry
        path = folder / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModelError(
                f"cannot create the model cache folder {folder}: {exc}; "
                f"set REDLINE_MODEL_CACHE_DIR to a writable folder"
            ) from exc
        with self._locked(folder / f"{name}.lock"):
            if self.verify(path):
                return path
            self.discard(path)
            temp = folder / f".{name}.{os.getpid()}.tmp"
            try:
                build(temp)
                digest = file_sha256(temp)
                os.replace(temp, path)
                _write_atomically(_checksum_path(path), f"{digest}  {name}\n")
            except OSError as exc:
                raise ModelError(f"cannot write {path}: {exc}") from exc
            finally:
                temp.unlink(missing_ok=True)
            logger.info("built %s (sha256 %s)", path, digest[:12])
            return path

    def verify(self, path: Path) -> bool:
        """True when *path* and its checksum file exist and the bytes match; logs a mismatch."""
        checksum = _checksum_path(path)
        if not path.is_file() or not checksum.is_file():
            return False
        try:
            expected = checksum.read_text(encoding="ascii").split()[0]
            actual = file_sha256(path)
        except (OSError, ValueError, IndexError) as exc:
            logger.warning("cannot check %s: %s; building it again", path, exc)
            return False
        if actual != expected:
            logger.warning("%s does not match its checksum; building it again", path)
            return False
        return True

    def discard(self, path: Path) -> None:
        """Remove *path* and its checksum, if there."""
        for stale in (_checksum_path(path), path):
            stale.unlink(missing_ok=True)

    @contextlib.contextmanager
    def _locked(self, lock_path: Path) -> Iterator[None]:
        """Hold an exclusive lock on *lock_path* (blocking) while building or checking."""
        try:
            handle = lock_path.open("a")
        except OSError as exc:
            raise ModelError(f"cannot write to the model cache {lock_path.parent}: {exc}") from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def __repr__(self) -> str:
        return f"GraphCache(directory={str(self.directory)!r})"


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _write_atomically(path: Path, text: str) -> None:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temp.write_text(text, encoding="ascii")
    os.replace(temp, path)

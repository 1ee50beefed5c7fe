"""A sentence-transformers model as files on disk: what the ONNX runtimes read without torch.

The ONNX runtimes need four things from a model directory: the tokenizer (``tokenizer.json``,
run by the ``tokenizers`` library), the longest input (``sentence_bert_config.json``), the
vector size (``config.json``) and the module layout (``modules.json``, pooling config). None of
them imports torch; only :meth:`ModelFiles.load_encoder` does, for the torch runtime and for an
export the graph cache does not hold yet.

Example::

    files = ModelFiles("all-MiniLM-L6-v2", "0.1.0", Path(".../model"))
    files.fingerprint()        # sha256 over every file: the graph cache's key
    files.tokenizer()          # tokenizers.Tokenizer: truncates at max_length, pads a batch
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redline.exceptions import ModelError

__all__ = ["ModelFiles"]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFiles:
    """One sentence-transformers model directory, named and versioned by whoever ships it."""

    name: str
    version: str
    directory: Path

    @property
    def max_length(self) -> int:
        """Tokens per input the model reads (``max_seq_length``; 256 when unset)."""
        config = self._json("sentence_bert_config.json", required=False)
        return int(config.get("max_seq_length") or 256)

    @property
    def dimension(self) -> int:
        """Length of one vector: the transformer's hidden size (mean pooling keeps it)."""
        return int(self._json("config.json")["hidden_size"])

    def layout(self) -> tuple[list[str], str | None]:
        """The module kinds (``["Transformer", "Pooling", "Normalize"]``) and the pooling mode."""
        modules = self._json("modules.json", required=False) or []
        kinds = [str(module["type"]).rsplit(".", 1)[-1] for module in modules]
        pooling: str | None = None
        for module in modules:
            if str(module["type"]).endswith(".Pooling"):
                config = self._json(f"{module['path']}/config.json")
                modes = [key for key, on in config.items() if key.startswith("pooling_mode") and on]
                pooling = "mean" if modes == ["pooling_mode_mean_tokens"] else ",".join(modes)
        return kinds, pooling

    def check_onnx_layout(self) -> None:
        """Raise ``ModelError`` unless the model is Transformer + mean Pooling + Normalize.

        The ONNX runners redo the pooling and normalisation in numpy; anything else would
        give different vectors.
        """
        kinds, pooling = self.layout()
        if kinds != ["Transformer", "Pooling", "Normalize"] or pooling != "mean":
            raise ModelError(
                f"the onnx runtimes run Transformer + mean Pooling + Normalize, this model is "
                f"{kinds} (pooling {pooling!r}); use the torch runtime"
            )

    def fingerprint(self) -> str:
        """sha256 over every file's relative path and bytes: any change to the model changes it."""
        digest = hashlib.sha256(f"{self.name}\0{self.version}\0".encode())
        for path in sorted(p for p in self.directory.rglob("*") if p.is_file()):
            digest.update(f"{path.relative_to(self.directory).as_posix()}\0".encode())
            with path.open("rb") as file:
                while chunk := file.read(_CHUNK):
                    digest.update(chunk)
            digest.update(b"\0")
        return digest.hexdigest()

    def tokenizer(self, *, truncate: bool = True, pad: bool = True) -> Any:
        """A fresh ``tokenizers.Tokenizer`` (not thread-safe: one per worker).

        It adds [CLS]/[SEP], cuts inputs at :attr:`max_length` tokens and pads a batch to its
        longest member, as the package's encoder does; *truncate* / *pad* False turn that off
        (token counting).
        """
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - the serve extra installs it
            raise ModelError(f"the onnx runtimes need the tokenizers library: {exc}") from exc
        path = self.directory / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:
            raise ModelError(f"cannot load the tokenizer {path}: {exc}") from exc
        # tokenizer.json may carry its own fixed padding / truncation: the model's settings win.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        if truncate:
            tokenizer.enable_truncation(self.max_length, strategy="longest_first")
        if pad:
            pad_id = tokenizer.token_to_id("[PAD]")
            tokenizer.enable_padding(pad_id=pad_id or 0, pad_token="[PAD]")
        return tokenizer

    def load_encoder(self) -> Any:
        """The model as a ``SentenceTransformer`` on CPU (imports torch: seconds, ~400 MB)."""
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:  # pragma: no cover - the serve extra installs it
            raise ModelError(f"loading {self.name} needs sentence-transformers: {exc}") from exc
        try:
            return SentenceTransformer(str(self.directory), device="cpu")
        except Exception as exc:
            raise ModelError(f"cannot load {self.name} from {self.directory}: {exc}") from exc

    def _json(self, relative: str, *, required: bool = True) -> Any:
        path = self.directory / relative
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if not required:
                return {}
            raise ModelError(f"{self.name}: {path} is missing") from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"{self.name}: cannot read {path}: {exc}") from exc

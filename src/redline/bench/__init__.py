"""redline.bench."""

__all__: list[str] = []

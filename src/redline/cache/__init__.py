"""redline.cache."""

__all__: list[str] = []

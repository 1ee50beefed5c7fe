"""redline.serve."""

__all__: list[str] = []

"""redline.concurrency."""

__all__: list[str] = []

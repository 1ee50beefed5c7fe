"""redline.lb."""

__all__: list[str] = []

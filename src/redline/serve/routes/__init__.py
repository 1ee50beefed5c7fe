"""HTTP routes of the server, one module per resource."""

__all__: list[str] = []

"""The ``redline`` command line: ``serve``, ``cluster``, ``nginx-config``, ``bench``, ``demo``.

Each area registers its own commands (``redline.<area>.cli.register``); heavy imports (torch,
FastAPI, nginx tooling) happen inside the command bodies, so ``redline --help`` stays fast.
"""

from __future__ import annotations

import typer

__all__ = ["build_app", "main"]


def build_app() -> typer.Typer:
    """Build the root Typer app with every area's commands registered."""
    from redline.bench.cli import register as register_bench
    from redline.cache.cli import register as register_cache
    from redline.lb.cli import register as register_lb
    from redline.serve.cli import register as register_serve

    app = typer.Typer(
        name="redline",
        help="Make AI inference APIs fast and keep them up.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    register_cache(app)
    register_serve(app)
    register_lb(app)
    register_bench(app)
    return app


def main() -> None:
    """Console-script entry point."""
    build_app()()

"""A rich progress bar that shows live req/s, errors and p99 while the load runs.

Example::

    display = ProgressDisplay(Console(stderr=True))
    await run_load(config, workload, on_progress=display.update)
    display.close()
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from redline.bench.result import LoadProgress

__all__ = ["ProgressDisplay"]


class ProgressDisplay:
    """Live terminal progress fed by :class:`~redline.bench.loadgen.LoadProgress` snapshots."""

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("[bold]bench"),
            BarColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task("bench", total=1.0, stats="starting")
        self._progress.start()
        self.last: LoadProgress | None = None

    def update(self, snapshot: LoadProgress) -> None:
        """Show one snapshot."""
        self.last = snapshot
        stats = (
            f"{snapshot.completed:,} req  {snapshot.recent_rps:,.0f} req/s  "
            f"{snapshot.errors:,} err  p99 {snapshot.recent_p99_ms:.1f} ms"
        )
        self._progress.update(self._task, completed=snapshot.fraction or 0.0, stats=stats)

    def close(self) -> None:
        """Stop the live display."""
        self._progress.stop()

    def __repr__(self) -> str:
        done = "none" if self.last is None else f"{self.last.completed} completed"
        return f"<ProgressDisplay {done}>"

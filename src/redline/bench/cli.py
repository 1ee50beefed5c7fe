"""``redline bench``: ``redline bench URL …`` (= ``bench run URL …``), ``compare``, ``scenario``.

A Click group cannot also take a positional URL, so :class:`BenchGroup` routes a first
argument that is not a subcommand name (``http://…``) to the ``run`` command: both
``redline bench http://127.0.0.1:8000 -n 1000`` and ``redline bench run http://…`` work.
Every :class:`~redline.exceptions.BenchError` ends the command with a one-line
``error: …`` on stderr and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from redline.exceptions import BenchError

__all__ = ["BenchGroup", "register"]


class BenchGroup(TyperGroup):
    """A group whose first argument, when it is not a subcommand name, goes to ``run``."""

    default_command = "run"

    # ``ctx`` is typer's vendored click Context, which typer does not export publicly.
    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


bench_app = typer.Typer(
    cls=BenchGroup,
    help=(
        "Load-test a redline server (or any OpenAI-compatible embeddings endpoint). "
        "`redline bench URL [OPTIONS]` is short for `redline bench run URL [OPTIONS]`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _fail(exc: BenchError) -> typer.Exit:
    """Print a BenchError as one line and give the exit to raise (code 2)."""
    message = " ".join(str(exc).split())
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2)


def _parse_headers(headers: list[str], api_key: str | None) -> tuple[tuple[str, str], ...]:
    parsed = []
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise BenchError(f"--header must look like 'Name: value', got {header!r}")
        parsed.append((name.strip(), value.strip()))
    if api_key:
        parsed.append(("Authorization", f"Bearer {api_key}"))
    return tuple(parsed)


@bench_app.command("run")
def run_command(
    url: Annotated[str, typer.Argument(help="Server base URL, e.g. http://127.0.0.1:8000")],
    concurrency: Annotated[
        int | None,
        typer.Option("--concurrency", "-c", help="Closed-loop workers (open loop: in-flight cap)."),
    ] = None,
    requests: Annotated[
        int | None, typer.Option("--requests", "-n", help="Total requests.")
    ] = None,
    duration: Annotated[
        float | None, typer.Option("--duration", "-d", help="Seconds to run (default 10).")
    ] = None,
    rate: Annotated[
        float | None, typer.Option("--rate", "-r", help="Open loop: requests per second.")
    ] = None,
    warmup: Annotated[float, typer.Option(help="Seconds of un-counted load first.")] = 0.0,
    timeout: Annotated[float, typer.Option(help="Per-request timeout, seconds.")] = 30.0,
    route: Annotated[str, typer.Option(help="embeddings, predict or custom.")] = "embeddings",
    path: Annotated[str | None, typer.Option(help="Custom route: request path.")] = None,
    body: Annotated[
        str | None,
        typer.Option(help="Custom route: JSON body template with {{input}} / {{inputs}}."),
    ] = None,
    inputs_file: Annotated[
        Path | None, typer.Option(help="Inputs, one per line (default: generated).")
    ] = None,
    inputs_per_request: Annotated[int, typer.Option(help="Inputs in each request.")] = 1,
    repeat: Annotated[
        float, typer.Option(help="Fraction of requests drawn from a small hot set (0..1).")
    ] = 0.0,
    model: Annotated[
        str | None, typer.Option(help="Model sent to /v1/embeddings (default: the server's).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="Extra header 'Name: value'.")
    ] = None,
    api_key: Annotated[str | None, typer.Option(help="Sent as 'Authorization: Bearer …'.")] = None,
    processes: Annotated[int, typer.Option(help="Generator processes (merged).")] = 1,
    metrics_url: Annotated[
        str | None, typer.Option(help="Prometheus endpoint (default URL/metrics).")
    ] = None,
    no_metrics: Annotated[bool, typer.Option("--no-metrics", help="Do not scrape.")] = False,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON report.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG plot.")] = None,
    html: Annotated[
        Path | None, typer.Option(help="Write a self-contained HTML report (opens offline).")
    ] = None,
    label: Annotated[str | None, typer.Option(help="Name of this run in compare.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed for generated inputs.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Load a server: closed loop (-c/-n/-d) or open loop (--rate); print the report."""
    from redline.bench.runner import BenchRun, execute
    from redline.bench.workload import Workload, read_inputs_file

    try:
        from redline.bench.config import LoadConfig

        config = LoadConfig(
            url=url,
            concurrency=concurrency,
            requests=requests,
            duration=duration,
            rate=rate,
            warmup=warmup,
            timeout=timeout,
            headers=_parse_headers(header or [], api_key),
        )
        workload = Workload(
            route=route,  # type: ignore[arg-type]  # validated by Workload
            path=path,
            body=body,
            inputs=read_inputs_file(inputs_file) if inputs_file is not None else (),
            inputs_per_request=inputs_per_request,
            repeat=repeat,
            model=model,
        )
        if processes < 1:
            raise BenchError(f"--processes must be >= 1, got {processes}")
        run = BenchRun(
            config=config,
            workload=workload,
            processes=processes,
            metrics_url=None if no_metrics else metrics_url,
            scrape=not no_metrics,
            label=label,
            seed=seed,
            progress=not quiet and sys.stderr.isatty(),
        )
        execute(run, json_path=json_path, plot_path=plot, html_path=html)
    except BenchError as exc:
        raise _fail(exc) from exc


@bench_app.command("compare")
def compare_command(
    reports: Annotated[list[Path], typer.Argument(help="Two or more JSON reports.")],
    html: Annotated[
        Path | None,
        typer.Option(help="Also write them side by side as a self-contained HTML page."),
    ] = None,
) -> None:
    """Show JSON reports side by side, with ratios vs the first."""
    from rich.console import Console

    from redline.bench.compare import compare_reports
    from redline.bench.report import load_report

    try:
        if len(reports) < 2:
            raise BenchError(f"compare needs at least 2 reports, got {len(reports)}")
        loaded = [load_report(path) for path in reports]
    except BenchError as exc:
        raise _fail(exc) from exc
    Console().print(compare_reports(loaded))
    if html is not None:
        from redline.bench.html import write_html

        write_html(loaded, html)


@bench_app.command("scenario")
def scenario_command(
    name: Annotated[str, typer.Argument(help="concurrency, cache or batching.")],
    model: Annotated[
        str | None,
        typer.Option(help="Model factory for the server (default: the real model)."),
    ] = None,
    duration: Annotated[float, typer.Option(help="Seconds of load per cell.")] = 5.0,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the JSON result.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG bar chart.")] = None,
) -> None:
    """Run a canned experiment and print its table."""
    from rich.console import Console

    from redline.bench.scenarios import SCENARIOS, render_scenario, run_scenario, write_scenario

    try:
        if name not in SCENARIOS:
            raise BenchError(f"unknown scenario {name!r}; choose one of {', '.join(SCENARIOS)}")
        result: dict[str, Any] = run_scenario(name, model=model, duration=duration)
    except BenchError as exc:
        raise _fail(exc) from exc
    render_scenario(result, Console())
    write_scenario(result, json_path=json_path, plot_path=plot)


def register(app: typer.Typer) -> None:
    """Add ``redline bench`` (run / compare / scenario) to the root app."""
    app.add_typer(bench_app, name="bench")

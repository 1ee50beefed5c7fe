"""`redline` commands of the lb area: ``nginx-config`` and the ``cluster`` group.

* ``redline nginx-config --server 127.0.0.1:8001 --server 127.0.0.1:8002 > nginx.conf``
* ``redline cluster --replicas 3 --listen 127.0.0.1:8080`` runs replicas + nginx + supervisor
* ``redline cluster status`` / ``restart`` / ``scale N`` talk to a running supervisor
  through its run directory (``status.json``, ``supervisor.pid``, ``scale.request``).
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_RUN_DIR = Path(".redline/cluster")

RunDirOption = Annotated[
    Path, typer.Option("--run-dir", help="Cluster run directory (config, logs, pid, status).")
]


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("nginx-config")(nginx_config)
    cluster = typer.Typer(
        help="Run N replicas behind nginx with health checks, or inspect a running cluster.",
        invoke_without_command=True,
        no_args_is_help=False,
    )
    cluster.callback(invoke_without_command=True)(cluster_run)
    cluster.command("status")(cluster_status)
    cluster.command("restart")(cluster_restart)
    cluster.command("scale")(cluster_scale)
    app.add_typer(cluster, name="cluster")


def _fail(message: str, code: int = 1) -> typer.Exit:
    """Print a one-line error to stderr and return the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _parse_address(value: str) -> tuple[str, int]:
    """Split ``host:port``; ConfigError on a bad one."""
    from redline.exceptions import ConfigError

    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"server must be 'host:port', got {value!r}")
    return host, int(port)


def nginx_config(
    server: Annotated[
        list[str] | None, typer.Option("--server", "-s", help="Upstream host:port (repeat).")
    ] = None,
    backup: Annotated[
        list[str] | None, typer.Option("--backup", help="Backup host:port (repeat).")
    ] = None,
    down: Annotated[
        list[str] | None, typer.Option("--down", help="host:port of a --server marked down.")
    ] = None,
    weight: Annotated[
        list[int] | None, typer.Option("--weight", "-w", help="Weight per --server, in order.")
    ] = None,
    replicas: Annotated[
        int | None, typer.Option(help="Instead of --server: N replicas from --base-port.")
    ] = None,
    base_port: Annotated[int, typer.Option(help="First replica port for --replicas.")] = 8001,
    listen: Annotated[str, typer.Option(help="Where nginx listens.")] = "127.0.0.1:8080",
    strategy: Annotated[
        str, typer.Option(help="round_robin, least_conn, ip_hash, random_two or hash.")
    ] = "round_robin",
    hash_key: Annotated[
        str, typer.Option(help="nginx variable for --strategy hash.")
    ] = "$http_x_cache_key",
    rate: Annotated[str | None, typer.Option(help="Per-client rate limit, e.g. 100r/s.")] = None,
    burst: Annotated[int | None, typer.Option(help="Requests queued over --rate.")] = None,
    nodelay: Annotated[bool, typer.Option(help="Serve the burst without delay.")] = False,
    keepalive: Annotated[int, typer.Option(help="Idle upstream connections per worker.")] = 32,
    worker_processes: Annotated[str, typer.Option(help="'auto' or a number.")] = "auto",
    client_max_body_size: Annotated[str, typer.Option(help="e.g. 8m.")] = "8m",
    foreground: Annotated[
        bool, typer.Option("--foreground/--daemon", help="Emit `daemon off;`.")
    ] = True,
    pid_path: Annotated[str, typer.Option(help="pid file (relative to -p prefix).")] = "nginx.pid",
    temp_dir: Annotated[str, typer.Option(help="Temp files directory.")] = "temp",
    access_log: Annotated[str, typer.Option(help="Access log path.")] = "logs/access.log",
    error_log: Annotated[str, typer.Option(help="Error log path.")] = "logs/error.log",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Print a complete nginx.conf for redline replicas (nginx -p DIR -c nginx.conf)."""
    from redline.exceptions import ConfigError
    from redline.lb.options import NginxOptions, UpstreamServer, make_rate_limit
    from redline.lb.render import render_nginx_conf

    try:
        addresses = [_parse_address(s) for s in server or []]
        if replicas is not None:
            if addresses:
                raise ConfigError("give either --server or --replicas, not both")
            if replicas < 1:
                raise ConfigError(f"replicas must be >= 1, got {replicas}")
            addresses = [("127.0.0.1", base_port + i) for i in range(replicas)]
        weights = list(weight or [])
        if weights and len(weights) != len(addresses):
            raise ConfigError(
                f"got {len(weights)} --weight values for {len(addresses)} servers; "
                "give one per --server"
            )
        down_set = {_parse_address(d) for d in down or []}
        unknown = down_set - set(addresses)
        if unknown:
            raise ConfigError(f"--down names servers that are not --server: {sorted(unknown)}")
        servers = [
            UpstreamServer(
                host, port, weight=weights[i] if weights else 1, down=(host, port) in down_set
            )
            for i, (host, port) in enumerate(addresses)
        ]
        servers += [UpstreamServer(*_parse_address(b), backup=True) for b in backup or []]
        options = NginxOptions(
            servers=tuple(servers),
            listen=listen,
            strategy=strategy,  # type: ignore[arg-type]  # parsed in __post_init__
            hash_key=hash_key,
            rate_limit=make_rate_limit(rate, burst, nodelay),
            keepalive=keepalive,
            worker_processes=int(worker_processes)
            if worker_processes.isdigit()
            else worker_processes,
            client_max_body_size=client_max_body_size,
            foreground=foreground,
            pid_path=pid_path,
            temp_dir=temp_dir,
            access_log=access_log,
            error_log=error_log,
        )
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    text = render_nginx_conf(options)
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")


def cluster_run(
    ctx: typer.Context,
    replicas: Annotated[int, typer.Option(help="Number of replicas.")] = 2,
    max_replicas: Annotated[
        int | None,
        typer.Option(help="Upstream slots: scale up to this many without an nginx reload."),
    ] = None,
    base_port: Annotated[
        int | None, typer.Option(help="First replica port (default: free ports).")
    ] = None,
    listen: Annotated[str, typer.Option(help="Where nginx listens.")] = "127.0.0.1:8080",
    strategy: Annotated[
        str, typer.Option(help="round_robin, least_conn, ip_hash, random_two or hash.")
    ] = "round_robin",
    weight: Annotated[
        list[int] | None, typer.Option("--weight", "-w", help="Weight per replica, in order.")
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model for `redline serve --model`.")] = None,
    cache_url: Annotated[
        str | None, typer.Option(help="Shared cache URL for every replica.")
    ] = None,
    workers: Annotated[int, typer.Option(help="uvicorn workers per replica.")] = 1,
    rate: Annotated[str | None, typer.Option(help="Per-client rate limit, e.g. 100r/s.")] = None,
    burst: Annotated[int | None, typer.Option(help="Requests queued over --rate.")] = None,
    nodelay: Annotated[bool, typer.Option(help="Serve the burst without delay.")] = False,
    check_interval: Annotated[float, typer.Option(help="Seconds between /ready checks.")] = 1.0,
    check_timeout: Annotated[float, typer.Option(help="Seconds before a check fails.")] = 1.0,
    fall: Annotated[int, typer.Option(help="Failed checks before a replica is down.")] = 2,
    rise: Annotated[int, typer.Option(help="Good checks before it is back.")] = 2,
    drain: Annotated[float, typer.Option(help="Seconds to drain a replica on restart.")] = 1.0,
    startup_timeout: Annotated[float, typer.Option(help="Seconds to wait for /ready.")] = 120.0,
    replica_command: Annotated[
        str | None,
        typer.Option(help="Run this instead of `redline serve` ({port} and {index} filled in)."),
    ] = None,
    nginx: Annotated[str | None, typer.Option(help="Path of the nginx binary.")] = None,
    status_port: Annotated[
        int | None,
        typer.Option(help="Serve the live status page on this port (host of --listen; 0: any)."),
    ] = None,
    run_dir: RunDirOption = DEFAULT_RUN_DIR,
) -> None:
    """Run N replicas behind nginx; SIGHUP rolls them, SIGINT/SIGTERM stops everything.

    A dead replica restarts on its own port and nginx is never reloaded for it; see
    ``cluster restart`` and ``cluster scale``.
    """
    if ctx.invoked_subcommand is not None:
        return
    import asyncio
    import contextlib
    import logging

    from redline.exceptions import ClusterError, ConfigError, NginxError
    from redline.lb.cluster_options import ClusterOptions, HealthCheck
    from redline.lb.options import make_rate_limit
    from redline.lb.replica import ReplicaCommand, serve_command
    from redline.lb.status_server import ClusterStatusServer
    from redline.lb.supervisor import ClusterSupervisor

    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        options = ClusterOptions(
            replicas=replicas,
            max_replicas=max_replicas,
            base_port=base_port,
            listen=listen,
            strategy=strategy,  # type: ignore[arg-type]  # parsed in __post_init__
            weights=tuple(weight) if weight else None,
            rate_limit=make_rate_limit(rate, burst, nodelay),
            run_dir=run_dir,
            health=HealthCheck(
                interval=check_interval, timeout=check_timeout, fall=fall, rise=rise
            ),
            drain_seconds=drain,
            startup_timeout=startup_timeout,
        )
        command: ReplicaCommand
        if replica_command is not None:
            template = replica_command

            def command(index: int, port: int) -> list[str]:
                return shlex.split(template.format(index=index, port=port))

        else:
            command = serve_command(model=model, cache_url=cache_url, workers=workers)
        keys = _status_keys()
    except (ConfigError, ValueError) as exc:
        raise _fail(str(exc), 2) from None

    async def main() -> None:
        stop = asyncio.Event()
        async with contextlib.AsyncExitStack() as stack:
            supervisor = await stack.enter_async_context(
                ClusterSupervisor(
                    options,
                    command=command,
                    nginx_binary=nginx,
                    metrics_key=keys[0] if keys else None,
                )
            )
            typer.echo(f"redline cluster: nginx on http://{listen}, {replicas} replicas", err=True)
            if status_port is not None:
                page = await stack.enter_async_context(
                    ClusterStatusServer(
                        supervisor,
                        host=listen.rpartition(":")[0] or "127.0.0.1",
                        port=status_port,
                        api_keys=keys,
                    )
                )
                typer.echo(f"redline cluster: status page on {page.url}", err=True)
            await supervisor.serve(stop, handle_signals=True)

    try:
        asyncio.run(main())
    except NginxError as exc:
        raise _fail(str(exc)) from None
    except ClusterError as exc:
        raise _fail(str(exc)) from None


def _status_keys() -> tuple[str, ...]:
    """The API keys ``/metrics`` and the status page need: the replicas' ``REDLINE_API_KEYS``
    when ``REDLINE_METRICS_AUTH`` is on (they read the same environment), else none."""
    from redline.serve.settings import load_settings

    settings = load_settings()
    return settings.api_keys if settings.metrics_auth else ()


def cluster_status(run_dir: RunDirOption = DEFAULT_RUN_DIR) -> None:
    """Show the replicas of the cluster running in --run-dir."""
    import time

    from rich.console import Console
    from rich.table import Table

    from redline.exceptions import ClusterError
    from redline.lb.status import read_status

    try:
        status = read_status(run_dir)
    except ClusterError as exc:
        raise _fail(str(exc)) from None
    table = Table(
        title=f"redline cluster on {status.listen} ({status.strategy}), "
        f"{status.up}/{len(status.replicas)} up"
    )
    for column in ("replica", "port", "pid", "state", "restarts", "requests", "last check"):
        table.add_column(column)
    now = time.time()
    for r in status.replicas:
        table.add_row(
            str(r.index),
            str(r.port),
            str(r.pid or "-"),
            r.state,
            str(r.restarts),
            "-" if r.requests_served is None else str(r.requests_served),
            "-" if r.last_check is None else f"{now - r.last_check:.1f}s ago",
        )
    Console(width=120).print(table)


def cluster_restart(run_dir: RunDirOption = DEFAULT_RUN_DIR) -> None:
    """Rolling restart of the cluster running in --run-dir (SIGHUP to its supervisor).

    One replica at a time drains (closes its listener, finishes in-flight requests) and
    restarts; nginx retries elsewhere meanwhile, and is not reloaded.
    """
    import os
    import signal

    from redline.exceptions import ClusterError
    from redline.lb.status import read_supervisor_pid

    try:
        pid = read_supervisor_pid(run_dir)
        os.kill(pid, signal.SIGHUP)
    except ClusterError as exc:
        raise _fail(str(exc)) from None
    except ProcessLookupError:
        raise _fail(f"supervisor pid {pid} from {run_dir} is not running") from None
    typer.echo(f"rolling restart requested (supervisor pid {pid})")


def cluster_scale(
    replicas: Annotated[int, typer.Argument(help="How many replicas to run.")],
    run_dir: RunDirOption = DEFAULT_RUN_DIR,
) -> None:
    """Scale the cluster running in --run-dir (no nginx reload within --max-replicas)."""
    import os
    import signal

    from redline.exceptions import ClusterError
    from redline.lb.status import SCALE_REQUEST_FILE, read_supervisor_pid

    if replicas < 1:
        raise _fail(f"replicas must be >= 1, got {replicas}", 2)
    try:
        pid = read_supervisor_pid(run_dir)
        request = run_dir / SCALE_REQUEST_FILE
        request.with_suffix(".tmp").write_text(f"{replicas}\n", encoding="utf-8")
        os.replace(request.with_suffix(".tmp"), request)
        os.kill(pid, signal.SIGUSR1)
    except ClusterError as exc:
        raise _fail(str(exc)) from None
    except ProcessLookupError:
        raise _fail(f"supervisor pid {pid} from {run_dir} is not running") from None
    typer.echo(f"scale to {replicas} replicas requested (supervisor pid {pid})")

"""A randomized coherence checker (Jepsen-style, small) for TieredCache across processes.

Three worker processes (``tests/cache/_procs/coherence_worker.py``), eight tasks each, run
random get / get_many / set / delete / delete_pattern / invalidate_tags on eight keys over a
real Redis, then over the real Redis Cluster, while this harness freezes (SIGSTOP), kills and
restarts Redis and a fault proxy cuts the invalidation link of two of the workers (blackhole,
reset). Every operation is recorded with its start and end on the machine's monotonic clock;
values are unique per write. The invariants checked on the merged history:

(a) after quiescence plus the propagation bound, every process's L1 agrees with L2 for
    every key;
(b) while the link is up, no read returns a value older than a write (or delete) that
    completed, without an L2 error, in the same process before the read began;
(c) no read returns a value that was never written (or one written only after it returned).
"""

from __future__ import annotations

import asyncio
import bisect
import fnmatch
import json
import math
import os
import signal
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests._faultproxy import FaultProxy
from tests._services import HOST, RedisClusterServers, RedisServer

REPO = Path(__file__).resolve().parents[2]
PROCESSES = 3
TASKS = 8
KEYS = 8
#: After quiescence (faults healed, links up, publish queues drained): the time an
#: invalidation already sent needs to reach and be applied by every subscriber.
PROPAGATION_BOUND = 1.0
DELETES = ("delete", "delete_pattern", "invalidate_tags", "restart")


# -- the checker -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Op:
    pid: int
    op: str
    key: str
    value: str | None
    start: float
    end: float
    ok: bool
    up: bool

    def touches(self, key: str) -> bool:
        """Whether this write-like operation may have changed *key* in L2."""
        if self.op in ("set", "delete"):
            return self.key == key
        if self.op == "delete_pattern":
            return fnmatch.fnmatchcase(key, self.key)
        if self.op == "invalidate_tags":
            return self.key == f"t{int(key[1:]) % 2}"
        return self.op == "restart"  # Redis lost everything


@dataclass
class Verdict:
    ops: int = 0
    checked_reads: int = 0
    stale_reads: list[str] = field(default_factory=list)
    phantom_reads: list[str] = field(default_factory=list)
    l1_mismatches: list[str] = field(default_factory=list)
    #: Invariant (b) applied to the reads made while the link was down too: stricter than
    #: (b), and TieredCache's in-process rule does not depend on the link, so it counts.
    checked_offline_reads: int = 0
    offline_stale_reads: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (
            len(self.stale_reads)
            + len(self.offline_stale_reads)
            + len(self.phantom_reads)
            + len(self.l1_mismatches)
        )

    def summary(self) -> str:
        shown = (self.l1_mismatches + self.stale_reads + self.phantom_reads)[:8]
        return (
            f"{self.violations} violations in {self.ops} operations: "
            f"(a) {len(self.l1_mismatches)} L1/L2 mismatches, (b) {len(self.stale_reads)} "
            f"stale reads of {self.checked_reads} checked, (c) {len(self.phantom_reads)} "
            f"phantom reads; e.g. {shown}; link down: {len(self.offline_stale_reads)} stale "
            f"of {self.checked_offline_reads} checked {self.offline_stale_reads[:3]}"
        )


def check_history(
    ops: list[Op], mismatches: list[tuple[int, str, Any, Any]] | None = None
) -> Verdict:
    """Apply invariants (b) and (c) to *ops*, and report (a)'s final *mismatches*."""
    verdict = Verdict(ops=sum(1 for op in ops if op.op != "restart"))
    verdict.l1_mismatches = [
        f"pid {p} {k}: L1 {a!r} vs L2 {b!r}" for p, k, a, b in mismatches or ()
    ]
    writes = {op.value: op for op in ops if op.op == "set"}
    keys = sorted({op.key for op in ops if op.op in ("get", "set")})
    changes: dict[str, list[Op]] = {
        key: [op for op in ops if op.op != "get" and op.touches(key)] for key in keys
    }
    local: dict[tuple[int, str], list[Op]] = defaultdict(list)
    for key, found in changes.items():
        for op in found:
            if op.ok and op.op != "restart":
                local[op.pid, key].append(op)
    # Per (process, key): its completed changes by end time, with the running "latest start".
    ends: dict[tuple[int, str], list[float]] = {}
    latest_by_end: dict[tuple[int, str], list[Op]] = {}
    for slot, found in local.items():
        found.sort(key=lambda op: op.end)
        ends[slot] = [op.end for op in found]
        running: list[Op] = []
        for op in found:
            running.append(op if not running or op.start > running[-1].start else running[-1])
        latest_by_end[slot] = running
    # Per key: the deletes by start time, with the running "latest end" (inf: unknown end).
    delete_starts: dict[str, list[float]] = {}
    delete_reach: dict[str, list[float]] = {}
    for key, found in changes.items():
        deletes = sorted((op for op in found if op.op in DELETES), key=lambda op: op.start)
        delete_starts[key] = [op.start for op in deletes]
        reach, far = [], -math.inf
        for op in deletes:
            far = max(far, op.end if op.ok else math.inf)
            reach.append(far)
        delete_reach[key] = reach
    for read in (op for op in ops if op.op == "get"):
        if read.value is not None:
            source = writes.get(read.value)
            if source is None or source.key != read.key or source.start > read.end:
                verdict.phantom_reads.append(f"pid {read.pid} read {read.key}={read.value!r}")
                continue
        if not read.ok:
            continue
        slot = (read.pid, read.key)
        count = bisect.bisect_left(ends.get(slot, []), read.start)
        if not count:
            continue
        stale = verdict.stale_reads if read.up else verdict.offline_stale_reads
        if read.up:
            verdict.checked_reads += 1
        else:
            verdict.checked_offline_reads += 1
        latest = latest_by_end[slot][count - 1]  # the most constraining completed change
        if read.value is not None:
            source = writes[read.value]
            if source.ok and source.end < latest.start:
                stale.append(
                    f"pid {read.pid} read {read.key}={read.value!r} at {read.start:.3f}, "
                    f"after its own {latest.op} {latest.key} ended at {latest.end:.3f}"
                )
        elif latest.op == "set":
            begun = bisect.bisect_left(delete_starts[read.key], read.end)
            erased = begun > 0 and delete_reach[read.key][begun - 1] > latest.start
            if not erased:
                stale.append(
                    f"pid {read.pid} missed {read.key} at {read.start:.3f}, after its own "
                    f"set {latest.value!r} ended at {latest.end:.3f} and no delete since"
                )
    return verdict


def test_the_checker_flags_stale_missing_and_phantom_reads() -> None:
    def op(op: str, key: str, value: str | None, start: float, end: float, pid: int = 0) -> Op:
        return Op(pid, op, key, value, start, end, ok=True, up=True)

    history = [
        op("set", "k0", "1:1", 0.0, 0.1, pid=1),
        op("set", "k0", "0:1", 0.2, 0.3),
        op("get", "k0", "1:1", 0.4, 0.5),  # older than its own completed write: stale
        op("get", "k0", "0:1", 0.4, 0.5),  # fine
        op("get", "k0", None, 0.6, 0.7),  # missed without a delete: stale
        op("get", "k0", "9:9", 0.8, 0.9),  # never written: phantom
        op("set", "k2", "0:2", 1.0, 1.1),
        op("delete_pattern", "k[23]", None, 1.05, 1.3, pid=2),
        op("get", "k2", None, 1.4, 1.5),  # a concurrent delete may have won: fine
        op("set", "k4", "0:3", 2.0, 2.1),
        op("invalidate_tags", "t0", None, 2.05, 2.2, pid=1),  # overlaps the set of k4
        op("invalidate_tags", "t0", None, 2.3, 2.4),
        op("get", "k4", "0:3", 2.5, 2.6),  # survived a later invalidation of its tag: stale
    ]
    verdict = check_history(history, [(0, "k1", "0:7", "0:8")])
    assert len(verdict.stale_reads) == 3
    assert len(verdict.phantom_reads) == 1
    assert len(verdict.l1_mismatches) == 1
    assert verdict.checked_reads == 5
    assert check_history([history[0], history[1], history[3]]).violations == 0


# -- the harness ---------------------------------------------------------------------------


class Workers:
    """The worker processes and the commands the harness sends them."""

    def __init__(self, procs: list[asyncio.subprocess.Process], outs: list[Path]) -> None:
        self.procs = procs
        self.outs = outs

    @classmethod
    async def start(cls, configs: list[dict[str, Any]], tmp: Path) -> Workers:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
        procs, outs = [], []
        for cfg in configs:
            out = tmp / f"worker{cfg['pid']}.json"
            outs.append(out)
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.cache._procs.coherence_worker",
                    json.dumps({**cfg, "out": str(out)}),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                    env=env,
                    cwd=REPO,
                )
            )
        workers = cls(procs, outs)
        await workers.expect("ready", 60)
        return workers

    async def send(self, command: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(f"{command}\n".encode())
            await proc.stdin.drain()

    async def expect(self, word: str, timeout: float) -> list[list[str]]:
        async def one(proc: asyncio.subprocess.Process) -> list[str]:
            assert proc.stdout is not None
            line = (await proc.stdout.readline()).decode().split()
            if not line or line[0] != word:
                raise AssertionError(f"worker {proc.pid} said {line!r}, expected {word!r}")
            return line

        return await asyncio.wait_for(asyncio.gather(*(one(p) for p in self.procs)), timeout)

    async def stop(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    def reports(self) -> list[dict[str, Any]]:
        return [json.loads(out.read_text()) for out in self.outs]


class Faults:
    """The harness's fault schedule; kills and restarts are recorded as history events."""

    def __init__(self, proxies: list[FaultProxy]) -> None:
        self.proxies = proxies
        self.events: list[Op] = []
        self.log: list[str] = []

    async def proxy_mode(self, mode: str, seconds: float) -> None:
        self.log.append(f"{time.monotonic():.2f} proxies {mode} {seconds}s")
        for proxy in self.proxies:
            await asyncio.to_thread(proxy.set_mode, mode)
        await asyncio.sleep(seconds)
        for proxy in self.proxies:
            await asyncio.to_thread(proxy.set_mode, "pass")

    async def freeze(self, server: RedisServer, seconds: float) -> None:
        assert server.proc is not None
        self.log.append(f"{time.monotonic():.2f} SIGSTOP :{server.port} {seconds}s")
        os.kill(server.proc.pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(seconds)
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)

    async def restart(self, server: RedisServer, down: float) -> None:
        self.log.append(f"{time.monotonic():.2f} SIGKILL :{server.port} for {down}s")
        started = time.monotonic()
        await asyncio.to_thread(server.kill)
        await asyncio.sleep(down)
        await asyncio.to_thread(server.start)
        self.events.append(Op(-1, "restart", "*", None, started, time.monotonic(), False, False))


async def at(delay: float, action: Callable[[], Awaitable[None]]) -> None:
    await asyncio.sleep(delay)
    await action()


async def run_checker(
    configs: list[dict[str, Any]],
    tmp: Path,
    seconds: float,
    schedule: Callable[[], Awaitable[None]],
    faults: Faults,
) -> tuple[Verdict, list[dict[str, Any]]]:
    began = time.monotonic()
    workers = await Workers.start(configs, tmp)
    faults.log.append(f"workers ready after {time.monotonic() - began:.1f}s")
    try:
        await workers.send(f"run {seconds}")
        await asyncio.gather(schedule(), workers.expect("done", seconds + 60))
        faults.log.append(f"run done after {time.monotonic() - began:.1f}s")
        await workers.send("settle")
        await workers.expect("settled", 60)
        faults.log.append(f"settled after {time.monotonic() - began:.1f}s")
        await asyncio.sleep(PROPAGATION_BOUND)
        await workers.send("check")
        await workers.expect("checked", 60)
        faults.log.append(f"checked after {time.monotonic() - began:.1f}s")
    finally:
        await workers.stop()
    reports = workers.reports()
    ops = list(faults.events)
    mismatches = []
    for report in reports:
        ops += [Op(report["pid"], *record) for record in report["history"]]
        mismatches += [(report["pid"], *found) for found in report["mismatches"]]
    return check_history(ops, mismatches), reports


def describe(verdict: Verdict, reports: list[dict[str, Any]], faults: Faults) -> str:
    stalls = ", ".join(f"{r['max_write_s'] * 1000:.0f}" for r in reports)
    events = [r["events"] for r in reports]
    return (
        f"{verdict.summary()}\nlongest write per process (ms): {stalls}\n"
        f"events: {events}\nfaults: {faults.log}"
    )


def config(pid: int, seed: str, channel: str, **extra: Any) -> dict[str, Any]:
    return {"pid": pid, "seed": seed, "channel": channel, "tasks": TASKS, "keys": KEYS, **extra}


@pytest.fixture
async def proxies() -> AsyncIterator[list[FaultProxy]]:
    made: list[FaultProxy] = []
    yield made
    for proxy in made:
        await asyncio.to_thread(proxy.stop)


SECONDS = float(os.environ.get("REDLINE_COHERENCE_SECONDS", "18"))


async def test_coherence_over_redis_with_freezes_kills_and_a_cut_link(
    fresh_redis: RedisServer, proxies: list[FaultProxy], tmp_path: Path
) -> None:
    namespace = f"co{uuid.uuid4().hex[:8]}"
    channel = f"{namespace}:inv"
    proxy = await asyncio.to_thread(FaultProxy((HOST, fresh_redis.port)).start)
    proxies.append(proxy)
    seed = os.environ.get("REDLINE_COHERENCE_SEED", uuid.uuid4().hex[:8])
    l2_url = f"{fresh_redis.url}/0?namespace={namespace}"
    configs = [
        config(0, seed, channel, tiered_url=f"{l2_url}&tiered=1&channel={channel}"),
        *(config(pid, seed, channel, l2_url=l2_url, inv_nodes=[proxy.address]) for pid in (1, 2)),
    ]
    faults = Faults([proxy])
    unit = SECONDS / 10

    async def schedule() -> None:
        await asyncio.gather(
            at(1.5 * unit, lambda: faults.proxy_mode("blackhole", 3.0 * unit)),
            at(5.0 * unit, lambda: faults.freeze(fresh_redis, 1.5 * unit)),
            at(7.0 * unit, lambda: faults.restart(fresh_redis, 0.3 * unit)),
            at(8.5 * unit, lambda: faults.proxy_mode("reset", 0.3 * unit)),
        )

    verdict, reports = await run_checker(configs, tmp_path, SECONDS, schedule, faults)
    report = describe(verdict, reports, faults)
    print(f"seed {seed}: {report}")
    assert verdict.violations == 0, f"seed {seed}: {report}"
    assert verdict.checked_reads > 1000, report


async def test_coherence_over_redis_cluster_with_a_frozen_master_and_a_cut_link(
    redis_cluster: RedisClusterServers, proxies: list[FaultProxy], tmp_path: Path
) -> None:
    namespace = f"co{uuid.uuid4().hex[:8]}"
    channel = f"{namespace}:inv"
    nodes = redis_cluster.startup_nodes
    for node in nodes[:3]:
        proxies.append(await asyncio.to_thread(FaultProxy(node).start))
    seed = os.environ.get("REDLINE_COHERENCE_SEED", uuid.uuid4().hex[:8])
    l2_url = f"{redis_cluster.url}?namespace={namespace}"
    configs = [
        config(0, seed, channel, tiered_url=f"{l2_url}&tiered=1&channel={channel}"),
        *(
            config(pid, seed, channel, l2_url=l2_url, inv_nodes=[p.address for p in proxies])
            for pid in (1, 2)
        ),
    ]
    faults = Faults(proxies)
    unit = SECONDS / 10
    # Below the cluster's node timeout (2 s): a freeze, not a failover, of the shared cluster.
    frozen = redis_cluster.nodes[0]

    async def schedule() -> None:
        await asyncio.gather(
            at(1.5 * unit, lambda: faults.proxy_mode("blackhole", 3.0 * unit)),
            at(5.5 * unit, lambda: faults.freeze(frozen, min(0.8, 1.0 * unit))),
            at(8.0 * unit, lambda: faults.proxy_mode("reset", 0.3 * unit)),
        )

    try:
        verdict, reports = await run_checker(configs, tmp_path, SECONDS, schedule, faults)
    finally:
        # the shared cluster is back to ok with 3 masters before the next test uses it
        await asyncio.to_thread(redis_cluster.wait_until_ok)
    report = describe(verdict, reports, faults)
    print(f"seed {seed}: {report}")
    assert verdict.violations == 0, f"seed {seed}: {report}"
    assert verdict.checked_reads > 1000, report

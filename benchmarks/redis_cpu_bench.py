"""Client CPU per RedisCache operation, standalone Redis and Redis Cluster side by side.

    python benchmarks/redis_cpu_bench.py [--ops 500] [--json PATH]

It starts its own redis-server and a 6-node Redis Cluster on free loopback ports, then runs
each operation of the coherence checker's mix ``--ops`` times on each backend, one at a time,
and reports the client's CPU time per operation (``time.process_time``: the figure that sets
the op rate of a CPU-bound run on a small shared box, unlike wall time). A last pair of rows
sends one GET through redis-py's ``ClusterPipeline`` and through the node's own pipeline
(what :class:`RedisCache` does on a Cluster) to show the gap the cache avoids. Best of three.
It prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from redis.asyncio.cluster import PipelineCommand, RedisCluster

from redline._services import RedisClusterServers, RedisServer
from redline.cache.redis import RedisCache

ROOT = Path(__file__).resolve().parents[1]

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "redis_cpu_bench.json"
KEYS = [f"k{i}" for i in range(8)]


async def cpu_per_op(op: Callable[[int], Awaitable[object]], ops: int) -> float:
    """Microseconds of this process's CPU per call of *op*, best of three runs."""
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for i in range(ops):
            await op(i)
        best = min(best, (time.process_time() - started) / ops * 1e6)
    return best


async def measure(cache: RedisCache, ops: int) -> dict[str, float]:
    await cache.set_many({key: 1 for key in KEYS})
    mix: dict[str, Callable[[int], Awaitable[object]]] = {
        "get (8 concurrent, per get)": lambda i: asyncio.gather(*(cache.get(k) for k in KEYS)),
        "set": lambda i: cache.set(KEYS[i % 8], i),
        "set with a tag": lambda i: cache.set(KEYS[i % 8], i, tags=[f"t{i % 2}"]),
        "delete": lambda i: cache.delete(KEYS[i % 8]),
        "delete_pattern": lambda i: cache.delete_pattern("k[23]"),
        "invalidate_tags": lambda i: cache.invalidate_tags(f"t{i % 2}"),
    }
    figures = {name: await cpu_per_op(op, ops) for name, op in mix.items()}
    figures["get (8 concurrent, per get)"] /= len(KEYS)
    await cache.clear()
    return figures


async def raw_get(client: RedisCluster, ops: int) -> dict[str, float]:
    key = "bench:raw"
    node = client.get_node_from_key(key)

    async def cluster_pipeline(_: int) -> object:
        pipe = client.pipeline(transaction=False)
        pipe.get(key)
        return await pipe.execute()

    async def node_pipeline(_: int) -> object:
        return await node.execute_pipeline([PipelineCommand(0, "GET", key)])

    return {
        "1 GET, redis-py ClusterPipeline": await cpu_per_op(cluster_pipeline, ops),
        "1 GET, the node's own pipeline": await cpu_per_op(node_pipeline, ops),
    }


async def run(ops: int) -> dict[str, dict[str, float]]:
    server = RedisServer().start()
    cluster = RedisClusterServers().start()
    try:
        standalone = RedisCache.from_url(server.url, namespace="bench")
        clustered = RedisCache.from_cluster_nodes(cluster.startup_nodes, namespace="bench")
        async with standalone, clustered:
            results = {"redis": await measure(standalone, ops)}
            results["cluster"] = await measure(clustered, ops)
            assert isinstance(clustered.client, RedisCluster)
            results["cluster"].update(await raw_get(clustered.client, ops))
        return results
    finally:
        cluster.stop()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=500)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args()
    results = asyncio.run(run(args.ops))
    print(f"{'client CPU per operation (us)':36} {'redis':>8} {'cluster':>8} {'ratio':>6}")
    for name, cluster_us in results["cluster"].items():
        redis_us = results["redis"].get(name)
        if redis_us is None:
            print(f"{name:36} {'':>8} {cluster_us:8.0f}")
        else:
            print(f"{name:36} {redis_us:8.0f} {cluster_us:8.0f} {cluster_us / redis_us:6.2f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"ops": args.ops, "cpu_us_per_op": results}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()

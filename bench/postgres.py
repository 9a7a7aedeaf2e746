"""PostgreSQL beside SQLite, side by side in one run:

1. ingest req/s and p99 at 10 and 64 connections: the bare aiohttp app, the gateway on
   SQLite, the gateway on PostgreSQL (a local server, fsync on, synchronous_commit on), and
   two gateway processes on the same PostgreSQL database (one wrk per process, half the
   connections each; req/s summed, p99 the worse of the two);
2. fan-out deliveries/s to a local sink with 1 and with 2 replicas on PostgreSQL, and the
   POST-to-arrival latency of a paced load (the LISTEN/NOTIFY wake-up across replicas:
   events are posted to replica A only, and B takes its share of the deliveries).

The servers are not pinned (two replicas and PostgreSQL must share the cores); wrk is
pinned to CPU 1. The PostgreSQL server is started here from Debian's binaries, as the
tests do (tests/support/postgres.py).

    python bench/postgres.py [--seconds 8] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import yaml
from common import (
    IDLE_DESTINATIONS,
    LOAD_CPU,
    ROOT,
    Server,
    WrkResult,
    bench_rules,
    dump,
    free_port,
    gateway_config,
    machine,
    pinned,
    run_wrk,
    start_baseline,
    summary,
    wait_healthy,
)
from fanout import sink_count, sink_dump, start_sink

sys.path.insert(0, str(ROOT))
from tests.support.postgres import PostgresServer, find_bindir

LEVELS = (10, 64)


def start_server_process(config_path: Path, name: str) -> Server:
    config = yaml.safe_load(config_path.read_text())
    port = config["server"]["port"]
    log = open(config_path.parent / f"{name}.log", "ab")  # noqa: SIM115 - lives with the process
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "-c", str(config_path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    wait_healthy(f"http://127.0.0.1:{port}/healthz")
    return Server(process, port, config.get("server", {}).get("path", "/webhooks/idwise"))


def postgres_config(
    tmp: Path, name: str, dsn: str, destinations: dict[str, Any], rules: list[Any]
) -> Path:
    folder = tmp / name
    folder.mkdir()
    storage = {"backend": "postgres", "dsn": dsn, "pool": {"min": 4, "max": 16}}
    return gateway_config(folder, destinations, rules, storage=storage)


def fresh_database(server: PostgresServer) -> str:
    return server.create_database()


def wrk_parallel(servers: list[Server], connections: int, seconds: int) -> WrkResult:
    """One wrk per server, the connections split between them, at the same time."""
    results: list[WrkResult] = []
    share = max(1, connections // len(servers))

    def one(server: Server) -> None:
        results.append(run_wrk(server.port, server.path, share, seconds, uuid.uuid4().hex[:8]))

    threads = [threading.Thread(target=one, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return WrkResult(
        sum(r.requests_per_s for r in results),
        max(r.p50_ms for r in results),
        max(r.p99_ms for r in results),
        sum(r.non_2xx for r in results),
        sum(r.errors for r in results),
        sum(r.requests for r in results),
    )


def ingest(pg: PostgresServer, seconds: int, rounds: int) -> dict[str, dict[int, list[WrkResult]]]:
    setups = ("baseline", "sqlite", "postgres", "postgres x2")
    results: dict[str, dict[int, list[WrkResult]]] = {s: {c: [] for c in LEVELS} for s in setups}
    for round_number in range(rounds):
        for connections in LEVELS:
            for setup in setups:
                with tempfile.TemporaryDirectory() as tmp_name:
                    tmp = Path(tmp_name)
                    servers: list[Server] = []
                    try:
                        if setup == "baseline":
                            servers = [start_baseline()]
                        elif setup == "sqlite":
                            config = gateway_config(tmp, IDLE_DESTINATIONS, bench_rules(20))
                            servers = [start_server_process(config, "gateway")]
                        else:
                            dsn = fresh_database(pg)
                            count = 2 if setup == "postgres x2" else 1
                            servers = [
                                start_server_process(
                                    postgres_config(
                                        tmp, f"r{n}", dsn, IDLE_DESTINATIONS, bench_rules(20)
                                    ),
                                    f"r{n}",
                                )
                                for n in range(count)
                            ]
                        result = wrk_parallel(servers, connections, seconds)
                        results[setup][connections].append(result)
                    finally:
                        for server in servers:
                            server.stop()
            line = ", ".join(
                f"{s} {results[s][connections][-1].requests_per_s:,.0f}" for s in setups
            )
            print(f"round {round_number + 1} c={connections}: {line} req/s", flush=True)
    return results


def fanout_round(pg: PostgresServer, replicas: int, seconds: int, rate: int) -> dict[str, float]:
    sink, sink_port = start_sink()
    servers: list[Server] = []
    try:
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            dsn = fresh_database(pg)
            destinations = {
                "d0": {
                    "type": "http",
                    "url": f"http://127.0.0.1:{sink_port}/d0",
                    "delivery": {"concurrency": 32},
                }
            }
            rules = [{"name": "all", "to": ["d0"]}]
            servers = [
                start_server_process(
                    postgres_config(tmp, f"r{n}", dsn, destinations, rules), f"r{n}"
                )
                for n in range(replicas)
            ]
            # throughput: wrk on replica A only; every replica delivers
            started = time.time()
            result = run_wrk(servers[0].port, servers[0].path, 64, seconds, uuid.uuid4().hex[:8])
            expected = result.requests - result.non_2xx
            deadline = time.monotonic() + 300
            while sink_count(sink_port) < expected and time.monotonic() < deadline:
                time.sleep(0.2)
            arrivals = sink_dump(sink_port, tmp / "arrivals.json")
            last = max(a[0] for a in arrivals)
            throughput = len(arrivals) / (last - started)
            distinct = len({(a[1], a[2]) for a in arrivals})
            owners = asyncio.run(_owners(dsn))
            # latency: a paced load on replica A; POST -> arrival, whoever delivers
            before = len(arrivals)
            loader = subprocess.run(
                pinned(
                    LOAD_CPU,
                    [sys.executable, str(ROOT / "bench" / "fanout.py"), "--paced-load",
                     f"http://127.0.0.1:{servers[0].port}{servers[0].path}", str(rate), "5"],
                ),
                capture_output=True,
                text=True,
                check=True,
            )  # fmt: skip
            sent = int(loader.stdout.strip())
            deadline = time.monotonic() + 120
            while sink_count(sink_port) < before + sent and time.monotonic() < deadline:
                time.sleep(0.2)
            paced = sink_dump(sink_port, tmp / "paced.json")[before:]
            received = asyncio.run(_received(dsn))
            lags = sorted(a[0] - received[a[1]] for a in paced if a[1] in received)
            return {
                "deliveries_per_s": throughput,
                "ingest_rps": result.requests_per_s,
                "deliveries": float(len(arrivals)),
                "expected": float(expected),
                "duplicates": float(len(arrivals) - distinct),
                "replicas_delivering": float(owners),
                "paced_p50_ms": 1000 * lags[len(lags) // 2],
                "paced_p99_ms": 1000 * lags[int(len(lags) * 0.99) - 1],
            }
    finally:
        for server in servers:
            server.stop()
        sink.terminate()
        sink.wait()


async def _owners(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval("SELECT count(DISTINCT claim_owner) FROM attempts")
        return count
    finally:
        await conn.close()


async def _received(dsn: str) -> dict[str, float]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT dedupe_key, received_at FROM events")
        return {r["dedupe_key"]: r["received_at"] for r in rows}
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=int, default=200, help="paced events/s (latency)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="idwise-bench-pg-"))
    pg = PostgresServer(find_bindir(), root, fsync=True).init().start()
    try:
        results = ingest(pg, args.seconds, args.rounds)
        fan: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for replicas in (1, 2):
                fan[replicas].append(fanout_round(pg, replicas, args.seconds, args.rate))
                f = fan[replicas][-1]
                print(
                    f"fan-out {replicas} replica(s): {f['deliveries_per_s']:,.0f} deliveries/s,"
                    f" paced p99 {f['paced_p99_ms']:.1f} ms",
                    flush=True,
                )
    finally:
        pg.stop()
        subprocess.run(["rm", "-rf", str(root)], check=False)
    print()
    print(f"machine: {machine()}")
    report: dict[str, Any] = {"machine": machine(), "ingest": {}, "fanout": {}}
    print(
        f"{'setup':<12} {'conns':>5}  {'req/s (median, spread)':>34}  {'x sqlite':>8}  {'p99':>8}  non-2xx"
    )
    for connections in LEVELS:
        sqlite_rps = statistics.median(r.requests_per_s for r in results["sqlite"][connections])
        for setup, runs in results.items():
            rps = [r.requests_per_s for r in runs[connections]]
            p99 = statistics.median(r.p99_ms for r in runs[connections])
            bad = sum(r.non_2xx + r.errors for r in runs[connections])
            ratio = statistics.median(rps) / sqlite_rps
            print(
                f"{setup:<12} {connections:>5}  {summary(rps):>34}  {ratio:>7.2f}x  {p99:>6.1f}ms  {bad}"
            )
            report["ingest"].setdefault(setup, {})[connections] = {
                "rps": rps, "p99_ms": p99, "x_sqlite": ratio, "non_2xx": bad,
            }  # fmt: skip
    for replicas, runs in fan.items():
        rates = [r["deliveries_per_s"] for r in runs]
        p50 = statistics.median(r["paced_p50_ms"] for r in runs)
        p99 = statistics.median(r["paced_p99_ms"] for r in runs)
        dups = sum(r["duplicates"] for r in runs)
        missing = sum(max(0.0, r["expected"] - r["deliveries"]) for r in runs)
        sending = min(r["replicas_delivering"] for r in runs)
        print(
            f"fan-out, {replicas} replica(s): {summary(rates)} deliveries/s; paced {args.rate}/s"
            f" POST->arrival p50 {p50:.1f} ms p99 {p99:.1f} ms; replicas delivering {sending:.0f};"
            f" missing {missing:.0f}, duplicates {dups:.0f}"
        )
        report["fanout"][replicas] = {"deliveries_per_s": rates, "paced_p50_ms": p50,
                                      "paced_p99_ms": p99, "rounds": runs}  # fmt: skip
    dump("postgres", report)
    _ = free_port


if __name__ == "__main__":
    main()

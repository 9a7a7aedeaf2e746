"""Ingest: authenticated, durably committed (synchronous=FULL), de-duplicated webhooks with
unique eventIds and ~20 rules, at 1, 10 and 64 connections, against the baseline app in
the same run. Server pinned to CPU 0, wrk to CPU 1.

    python bench/ingest.py [--seconds 10] [--rounds 3] [--connections 1,10,64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from common import (
    IDLE_DESTINATIONS,
    bench_rules,
    dump,
    fsync_commits_per_s,
    gateway_config,
    machine,
    run_wrk,
    start_baseline,
    start_gateway,
    summary,
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,10,64")
    args = parser.parse_args()
    levels = [int(c) for c in args.connections.split(",")]
    results: dict[str, dict[int, list]] = {
        "baseline": {c: [] for c in levels},
        "gateway": {c: [] for c in levels},
    }
    fsync_rates: dict[int, list[float]] = {c: [] for c in levels}
    for round_number in range(args.rounds):
        for connections in levels:
            baseline = start_baseline()
            try:
                results["baseline"][connections].append(
                    run_wrk(
                        baseline.port,
                        baseline.path,
                        connections,
                        args.seconds,
                        uuid.uuid4().hex[:8],
                        server=baseline,
                    )
                )
            finally:
                baseline.stop()
            with tempfile.TemporaryDirectory() as tmp:
                fsync_rates[connections].append(fsync_commits_per_s(Path(tmp)))
                config = gateway_config(Path(tmp), IDLE_DESTINATIONS, bench_rules(20))
                gateway = start_gateway(config)
                try:
                    results["gateway"][connections].append(
                        run_wrk(
                            gateway.port,
                            gateway.path,
                            connections,
                            args.seconds,
                            uuid.uuid4().hex[:8],
                            server=gateway,
                        )
                    )
                finally:
                    gateway.stop()
            print(
                f"round {round_number + 1}/{args.rounds} c={connections}: "
                f"baseline {results['baseline'][connections][-1].requests_per_s:,.0f} req/s, "
                f"gateway {results['gateway'][connections][-1].requests_per_s:,.0f} req/s",
                flush=True,
            )
    print()
    print(f"machine: {machine()}")
    print(
        f"{'conns':>5}  {'baseline req/s':>34}  {'gateway req/s':>34}  {'ratio':>6}  {'gw p50':>7}  {'gw p99':>7}  {'base p99':>8}  {'base CPU':>9}  {'gw CPU':>9}  non-2xx"
    )
    report = {"machine": machine(), "levels": {}}
    for c in levels:
        base = [r.requests_per_s for r in results["baseline"][c]]
        gw = [r.requests_per_s for r in results["gateway"][c]]
        ratio = statistics.median(gw) / statistics.median(base)
        p50 = statistics.median(r.p50_ms for r in results["gateway"][c])
        p99 = statistics.median(r.p99_ms for r in results["gateway"][c])
        bp99 = statistics.median(r.p99_ms for r in results["baseline"][c])
        non2xx = sum(r.non_2xx + r.errors for r in results["gateway"][c])
        base_cpu = statistics.median(r.cpu_us_per_request for r in results["baseline"][c])
        gw_cpu = statistics.median(r.cpu_us_per_request for r in results["gateway"][c])
        print(
            f"{c:>5}  {summary(base):>34}  {summary(gw):>34}  {ratio:>5.2f}x  {p50:>5.2f}ms  {p99:>5.2f}ms  {bp99:>6.2f}ms  {base_cpu:>7.0f}us  {gw_cpu:>7.0f}us  {non2xx}"
        )
        report["levels"][c] = {
            "baseline_rps": base,
            "gateway_rps": gw,
            "ratio": ratio,
            "gateway_p50_ms": p50,
            "gateway_p99_ms": p99,
            "baseline_p99_ms": bp99,
            "gateway_non_2xx": non2xx,
            "baseline_cpu_us_per_request": base_cpu,
            "gateway_cpu_us_per_webhook": gw_cpu,
        }
    print()
    print("the fsync limit: tiny commits/s on the same file system (WAL, synchronous=FULL),")
    print("beside the gateway's group commits/s; with c connections a batch holds at most c")
    print(
        f"{'conns':>5}  {'probe commits/s':>15}  {'gw commits/s':>12}  {'of probe':>8}  {'jobs/commit':>11}  {'c x probe':>9}"
    )
    for c in levels:
        probe = statistics.median(fsync_rates[c])
        runs = results["gateway"][c]
        commits = statistics.median(r.commits / r.seconds for r in runs if r.seconds)
        per = statistics.median(r.jobs / r.commits for r in runs if r.commits)
        print(
            f"{c:>5}  {probe:>15,.0f}  {commits:>12,.0f}  {commits / probe:>7.0%}  {per:>11.1f}  {c * probe:>9,.0f}"
        )
        report["levels"][c].update(
            fsync_probe_commits_per_s=probe, gateway_commits_per_s=commits, jobs_per_commit=per
        )
    dump("ingest", report)
    _ = time


if __name__ == "__main__":
    main()

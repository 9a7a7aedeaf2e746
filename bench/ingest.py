"""Ingest: authenticated, durably committed (synchronous=FULL), de-duplicated webhooks with
unique eventIds and ~20 rules, at 1, 10 and 64 connections, against the baseline app in
the same run. Server pinned to CPU 0, wrk to CPU 1.

    python bench/ingest.py [--seconds 10] [--rounds 3] [--connections 1,10,64] [--before DIR]
                           [--process]

`--before DIR`: another checkout of the gateway (e.g. `git worktree add DIR main`) measured
in the same rounds, interleaved, so a change is judged against its "before" on the same
machine at the same moment. Each level also probes tiny commits/s on the same file system
(WAL, synchronous=FULL): the limit one fsync per group commit sets.

`--process`: also this checkout with `storage.durability: process` (synchronous=NORMAL: a
200 survives a crash of the gateway, not a power loss), as the row "process".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import uuid
from pathlib import Path

import yaml
from common import (
    IDLE_DESTINATIONS,
    WrkResult,
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


def durability(config_path: Path, value: str) -> None:
    config = yaml.safe_load(config_path.read_text())
    config["storage"]["durability"] = value
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="1,10,64")
    parser.add_argument("--before", type=Path, help="another checkout, measured as 'before'")
    parser.add_argument("--process", action="store_true", help="also durability: process")
    args = parser.parse_args()
    levels = [int(c) for c in args.connections.split(",")]
    gateways: dict[str, Path | None] = {"gateway": None}
    if args.before:
        gateways = {"before": args.before.resolve(), "gateway": None}
    if args.process:
        gateways["process"] = None
    results: dict[str, dict[int, list[WrkResult]]] = {
        name: {c: [] for c in levels} for name in ("baseline", *gateways)
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
            for name, root in gateways.items():
                with tempfile.TemporaryDirectory() as tmp:
                    if name == "gateway":
                        fsync_rates[connections].append(fsync_commits_per_s(Path(tmp)))
                    config = gateway_config(Path(tmp), IDLE_DESTINATIONS, bench_rules(20))
                    if name == "process":
                        durability(config, "process")
                    gateway = start_gateway(config, root=root)
                    try:
                        results[name][connections].append(
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
            shown = ", ".join(
                f"{name} {results[name][connections][-1].requests_per_s:,.0f} req/s "
                f"({results[name][connections][-1].cpu_us_per_request:.0f} us CPU)"
                for name in results
            )
            print(f"round {round_number + 1}/{args.rounds} c={connections}: {shown}", flush=True)
    print()
    print(f"machine: {machine()}")
    print(
        f"{'':>8}{'conns':>5}  {'req/s':>34}  {'ratio':>6}  {'p50':>7}  {'p99':>8}  {'CPU/req':>8}  non-2xx"
    )
    report: dict[str, object] = {"machine": machine(), "levels": {}}
    levels_report: dict[int, dict[str, object]] = {}
    for c in levels:
        base_rps = statistics.median(r.requests_per_s for r in results["baseline"][c])
        levels_report[c] = {}
        for name, runs in results.items():
            rps = [r.requests_per_s for r in runs[c]]
            ratio = statistics.median(rps) / base_rps
            p50 = statistics.median(r.p50_ms for r in runs[c])
            p99 = statistics.median(r.p99_ms for r in runs[c])
            cpu = statistics.median(r.cpu_us_per_request for r in runs[c])
            non2xx = sum(r.non_2xx + r.errors for r in runs[c])
            print(
                f"{name:>8}{c:>5}  {summary(rps):>34}  {ratio:>5.2f}x  {p50:>5.2f}ms  {p99:>6.2f}ms  {cpu:>6.0f}us  {non2xx}"
            )
            levels_report[c][name] = {
                "rps": rps,
                "ratio": ratio,
                "p50_ms": p50,
                "p99_ms": p99,
                "cpu_us_per_request": cpu,
                "non_2xx": non2xx,
            }
    print()
    print("the fsync limit: tiny commits/s on the same file system (WAL, synchronous=FULL),")
    print("beside the gateway's group commits/s; with c connections a batch holds at most c")
    print(
        f"{'':>8}{'conns':>5}  {'probe commits/s':>15}  {'commits/s':>9}  {'of probe':>8}  {'jobs/commit':>11}  {'c x probe':>9}"
    )
    for c in levels:
        probe = statistics.median(fsync_rates[c])
        for name in gateways:
            runs = results[name][c]
            commits = statistics.median(r.commits / r.seconds for r in runs if r.seconds)
            per = statistics.median(r.jobs / r.commits for r in runs if r.commits)
            print(
                f"{name:>8}{c:>5}  {probe:>15,.0f}  {commits:>9,.0f}  {commits / probe:>7.0%}  {per:>11.1f}  {c * probe:>9,.0f}"
            )
            levels_report[c][name].update(  # type: ignore[attr-defined]
                fsync_probe_commits_per_s=probe, commits_per_s=commits, jobs_per_commit=per
            )
    report["levels"] = levels_report
    dump("ingest", report)


if __name__ == "__main__":
    main()

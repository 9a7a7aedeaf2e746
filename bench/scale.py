"""Scale: ingest rate and RSS with 0, 100k and 1M events already stored (history generated
through the store API), each level measured beside the baseline app in the same run.

    python bench/scale.py [--seconds 10] [--rounds 3] [--levels 0,100000,1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    IDLE_DESTINATIONS,
    bench_rules,
    dump,
    gateway_config,
    machine,
    run_wrk,
    start_baseline,
    start_gateway,
    summary,
)

from gateway.events import parse_event
from gateway.store.sqlite import SqliteStore


async def generate(db: Path, count: int) -> float:
    store = SqliteStore(db)
    await store.open()
    start = time.perf_counter()
    chunk = 20000
    try:
        for offset in range(0, count, chunk):
            events = []
            for i in range(offset, min(count, offset + chunk)):
                raw = json.dumps(
                    {
                        "event": "Finished Journey",
                        "body": {
                            "eventId": f"hist-{i}",
                            "journeyId": f"{i % 50000:024x}",
                            "referenceNo": f"R{i}",
                            "systemDecision": "Complete",
                        },
                    }
                ).encode()
                events.append(parse_event(raw))
            await store.import_events(events, time.time() - 86400, destination="sink")
    finally:
        await store.close()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--levels", default="0,100000,1000000")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    work = Path(tempfile.mkdtemp(prefix="idwise-scale-"))
    rows: dict[int, dict[str, list[float]]] = {}
    try:
        for level in levels:
            seed = work / f"seed-{level}.db"
            took = asyncio.run(generate(seed, level)) if level else 0.0
            print(
                f"generated {level:,} events in {took:.1f}s ({seed.stat().st_size / 1e6 if seed.exists() else 0:.0f} MB)",
                flush=True,
            )
            rows[level] = {"baseline": [], "gateway": [], "rss": [], "p99": [], "cpu": []}
            for _ in range(args.rounds):
                baseline = start_baseline()
                try:
                    rows[level]["baseline"].append(
                        run_wrk(
                            baseline.port, baseline.path, 64, args.seconds, uuid.uuid4().hex[:8]
                        ).requests_per_s
                    )
                finally:
                    baseline.stop()
                tmp = work / "run"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                if level:
                    shutil.copy(seed, tmp / "gateway.db")
                gateway = start_gateway(gateway_config(tmp, IDLE_DESTINATIONS, bench_rules(20)))
                try:
                    result = run_wrk(
                        gateway.port, gateway.path, 64, args.seconds, uuid.uuid4().hex[:8], gateway
                    )
                    rows[level]["gateway"].append(result.requests_per_s)
                    rows[level]["cpu"].append(result.cpu_us_per_request)
                    rows[level]["p99"].append(result.p99_ms)
                    rows[level]["rss"].append(gateway.rss_mb())
                finally:
                    gateway.stop()
            print(
                f"{level:>9,} stored: gateway {summary(rows[level]['gateway'])} req/s, baseline {summary(rows[level]['baseline'])}",
                flush=True,
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"machine: {machine()}")
    zero = statistics.median(rows[levels[0]]["gateway"]) / statistics.median(
        rows[levels[0]]["baseline"]
    )
    print(
        f"{'stored':>9}  {'gateway req/s':>30}  {'x baseline':>10}  {'vs empty':>8}  {'p99':>8}  {'RSS MB':>7}  {'CPU/webhook':>11}  {'vs empty':>8}"
    )
    zero_cpu = statistics.median(rows[levels[0]]["cpu"])
    for level in levels:
        ratio = statistics.median(rows[level]["gateway"]) / statistics.median(
            rows[level]["baseline"]
        )
        print(
            f"{level:>9,}  {summary(rows[level]['gateway']):>30}  {ratio:>9.2f}x  {ratio / zero:>7.2f}x  "
            f"{statistics.median(rows[level]['p99']):>6.2f}ms  {max(rows[level]['rss']):>7.1f}  "
            f"{statistics.median(rows[level]['cpu']):>9.0f}us  "
            f"{statistics.median(rows[level]['cpu']) / zero_cpu:>7.2f}x"
        )
    dump("scale", {"machine": machine(), "levels": rows})


if __name__ == "__main__":
    main()

"""Fan-out: end-to-end deliveries/s from POST to arrival at a local HTTP sink, with 1 and 3
destinations per event, and the POST-to-arrival latency, beside the ingest baseline measured
in the same run (the minimal aiohttp app's requests/s at 64 connections).

Phase 1 (throughput): wrk posts for --seconds at 64 connections; we then wait until every
delivery has arrived; rate = deliveries / (last arrival - load start).
Phase 2 (latency): a paced Python load generator posts --rate events/s for --seconds; we
report p50/p99 of (arrival at the sink - receive time stored by the gateway).

    python bench/fanout.py [--seconds 10] [--rounds 3] [--rate 300] [--before DIR]

CPU per delivery: the gateway process's own CPU time over the throughput phase (ingest
included) per delivery, and over the drain phase alone (load over, delivery only).
`--before DIR`: another checkout measured in the same rounds (see ingest.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from common import (
    LOAD_CPU,
    TOKEN,
    dump,
    free_port,
    gateway_config,
    machine,
    pinned,
    run_wrk,
    start_baseline,
    start_gateway,
    summary,
    wait_healthy,
)

ROOT = Path(__file__).resolve().parent


def start_sink() -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        pinned(LOAD_CPU, [sys.executable, str(ROOT / "sink_app.py"), str(port)])
    )
    wait_healthy(f"http://127.0.0.1:{port}/healthz")
    return process, port


def sink_count(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=5) as response:
        count: int = json.loads(response.read())["count"]
        return count


def sink_dump(port: int, path: Path) -> list[tuple[float, str, str]]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/dump",
        data=json.dumps({"path": str(path)}).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=30).read()
    return [tuple(a) for a in json.loads(path.read_text())]  # type: ignore[misc]


def config_for(tmp: Path, sink_port: int, destinations: int) -> Path:
    dests = {
        f"d{i}": {
            "type": "http",
            "url": f"http://127.0.0.1:{sink_port}/d{i}",
            "delivery": {"concurrency": 32},
        }
        for i in range(destinations)
    }
    rules = [{"name": "all", "to": list(dests)}]
    return gateway_config(tmp, dests, rules)


def wait_drained(sink_port: int, expected: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while sink_count(sink_port) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {sink_count(sink_port)} of {expected} deliveries arrived")
        time.sleep(0.2)


def throughput_round(destinations: int, seconds: int, root: Path | None = None) -> dict[str, float]:
    sink, sink_port = start_sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = config_for(Path(tmp), sink_port, destinations)
            gateway = start_gateway(config, root=root)
            try:
                started = time.time()
                cpu_start = gateway.cpu_seconds()
                result = run_wrk(gateway.port, gateway.path, 64, seconds, uuid.uuid4().hex[:8])
                accepted = result.requests - result.non_2xx
                expected = accepted * destinations
                # the drain phase (load over, deliveries still going) is delivery work alone
                cpu_drain = gateway.cpu_seconds()
                count_drain = sink_count(sink_port)
                wait_drained(sink_port, expected)
                cpu_end = gateway.cpu_seconds()
                arrivals = sink_dump(sink_port, Path(tmp) / "arrivals.json")
                last = max(a[0] for a in arrivals)
                conn = sqlite3.connect(Path(tmp) / "gateway.db")
                received = dict(conn.execute("SELECT dedupe_key, received_at FROM events"))
                conn.close()
                lags = sorted(a[0] - received[a[1]] for a in arrivals if a[1] in received)
                distinct = len({(a[1], a[2]) for a in arrivals})
                return {
                    "duplicates": float(len(arrivals) - distinct),
                    "deliveries_per_s": len(arrivals) / (last - started),
                    "ingest_rps": result.requests_per_s,
                    "deliveries": float(len(arrivals)),
                    "expected": float(expected),
                    "saturated_p99_s": lags[int(len(lags) * 0.99) - 1] if lags else float("nan"),
                    "rss_mb": gateway.rss_mb(),
                    # whole window: ingest and delivery, per delivery
                    "cpu_us_per_delivery": (cpu_end - cpu_start) * 1e6 / max(len(arrivals), 1),
                    "drain_cpu_us_per_delivery": (cpu_end - cpu_drain)
                    * 1e6
                    / max(expected - count_drain, 1),
                    "drain_deliveries": float(expected - count_drain),
                }
            finally:
                gateway.stop()
    finally:
        sink.terminate()
        sink.wait()


async def paced_load(url: str, rate: int, seconds: int) -> int:
    import aiohttp

    sent = 0
    prefix = uuid.uuid4().hex[:8]
    interval = 1.0 / rate
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        tasks = []

        async def one(i: int) -> None:
            body = json.dumps(
                {
                    "event": "Finished Journey",
                    "body": {
                        "eventId": f"{prefix}-{i}",
                        "journeyId": f"j{i % 500:023d}",
                        "referenceNo": f"R{i}",
                        "systemDecision": "Complete",
                    },
                }
            )
            async with session.post(
                url, data=body, headers={"Authorization": f"Bearer {TOKEN}"}
            ) as response:
                await response.read()

        while time.perf_counter() - start < seconds:
            tasks.append(asyncio.create_task(one(sent)))
            sent += 1
            await asyncio.sleep(max(0.0, start + sent * interval - time.perf_counter()))
        await asyncio.gather(*tasks)
    return sent


def latency_round(
    destinations: int, seconds: int, rate: int, root: Path | None = None
) -> dict[str, float]:
    sink, sink_port = start_sink()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            config = config_for(Path(tmp), sink_port, destinations)
            gateway = start_gateway(config, root=root)
            try:
                loader = subprocess.run(
                    pinned(
                        LOAD_CPU,
                        [
                            sys.executable,
                            __file__,
                            "--paced-load",
                            f"http://127.0.0.1:{gateway.port}{gateway.path}",
                            str(rate),
                            str(seconds),
                        ],
                    ),
                    capture_output=True,
                    text=True,
                    check=True,
                )
                sent = int(loader.stdout.strip())
                wait_drained(sink_port, sent * destinations)
                arrivals = sink_dump(sink_port, Path(tmp) / "arrivals.json")
                conn = sqlite3.connect(Path(tmp) / "gateway.db")
                received = dict(conn.execute("SELECT dedupe_key, received_at FROM events"))
                conn.close()
                lags = sorted(a[0] - received[a[1]] for a in arrivals if a[1] in received)
                return {
                    "p50_ms": 1000 * lags[len(lags) // 2],
                    "p99_ms": 1000 * lags[int(len(lags) * 0.99) - 1],
                }
            finally:
                gateway.stop()
    finally:
        sink.terminate()
        sink.wait()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--paced-load":
        print(asyncio.run(paced_load(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--rate", type=int, default=300, help="paced events/s for the latency phase"
    )
    parser.add_argument("--before", type=Path, help="another checkout, measured as 'before'")
    args = parser.parse_args()
    gateways: dict[str, Path | None] = {"gateway": None}
    if args.before:
        gateways = {"before": args.before.resolve(), "gateway": None}
    baseline_rps: list[float] = []
    baseline_cpu: list[float] = []
    through: dict[tuple[str, int], list[dict[str, float]]] = {
        (name, d): [] for name in gateways for d in (1, 3)
    }
    latency: dict[tuple[str, int], list[dict[str, float]]] = {
        (name, d): [] for name in gateways for d in (1, 3)
    }
    for round_number in range(args.rounds):
        baseline = start_baseline()
        try:
            measured = run_wrk(
                baseline.port, baseline.path, 64, args.seconds, uuid.uuid4().hex[:8], baseline
            )
            baseline_rps.append(measured.requests_per_s)
            baseline_cpu.append(measured.cpu_us_per_request)
        finally:
            baseline.stop()
        for destinations in (1, 3):
            for name, root in gateways.items():
                key = (name, destinations)
                through[key].append(throughput_round(destinations, args.seconds, root))
                latency[key].append(latency_round(destinations, args.seconds, args.rate, root))
                t = through[key][-1]
                print(
                    f"round {round_number + 1}: baseline {baseline_rps[-1]:,.0f} req/s; {name}, "
                    f"{destinations} dest: {t['deliveries_per_s']:,.0f} deliveries/s "
                    f"(ingest {t['ingest_rps']:,.0f} req/s, {t['cpu_us_per_delivery']:.0f} us CPU"
                    f" per delivery), paced p99 {latency[key][-1]['p99_ms']:.1f} ms",
                    flush=True,
                )
    print()
    print(f"machine: {machine()}")
    base = statistics.median(baseline_rps)
    print(
        f"baseline (minimal aiohttp app, 64 connections): {summary(baseline_rps)} req/s, "
        f"CPU {statistics.median(baseline_cpu):.0f} us per request"
    )
    report: dict[str, object] = {
        "machine": machine(),
        "baseline_rps": baseline_rps,
        "baseline_cpu_us_per_request": statistics.median(baseline_cpu),
    }
    for name in gateways:
        per_destination: dict[int, object] = {}
        for destinations in (1, 3):
            key = (name, destinations)
            rates = [t["deliveries_per_s"] for t in through[key]]
            ratio = statistics.median(rates) / base
            p50 = statistics.median(x["p50_ms"] for x in latency[key])
            p99 = statistics.median(x["p99_ms"] for x in latency[key])
            lost = sum(max(0.0, t["expected"] - t["deliveries"]) for t in through[key])
            duplicates = sum(t["duplicates"] for t in through[key])
            cpu = statistics.median(t["cpu_us_per_delivery"] for t in through[key])
            drain_cpu = statistics.median(t["drain_cpu_us_per_delivery"] for t in through[key])
            print(
                f"{name}, {destinations} destination(s): {summary(rates)} deliveries/s = "
                f"{ratio:.2f}x baseline; CPU {cpu:.0f} us per delivery (ingest included), "
                f"{drain_cpu:.0f} us in the drain phase (delivery alone); paced {args.rate}/s "
                f"POST->arrival p50 {p50:.1f} ms p99 {p99:.1f} ms; "
                f"missing {lost:.0f}, duplicates {duplicates:.0f}"
            )
            per_destination[destinations] = {
                "deliveries_per_s": rates,
                "ratio": ratio,
                "paced_p50_ms": p50,
                "paced_p99_ms": p99,
                "cpu_us_per_delivery": cpu,
                "drain_cpu_us_per_delivery": drain_cpu,
                "rounds": through[key],
            }
        report[name] = per_destination
    dump("fanout", report)


if __name__ == "__main__":
    main()

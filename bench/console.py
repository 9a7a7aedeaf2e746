"""The console's events list at 1 M stored events, beside the same query through the CLI.

History is generated through the store API (`import_events`), 1 M events over 30 days; a
real gateway process serves the console; each page is fetched signed in, rendered, over
HTTP. The CLI figure is the whole `idwise-gateway events list` process (start-up included,
which is what an operator waits for), and the store query alone is timed in-process too.

    python bench/console.py [--events 1000000] [--runs 15]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
from common import ROOT, dump, free_port, gateway_config, machine, start_gateway

from gateway.events import parse_event
from gateway.store import EventFilter
from gateway.store.sqlite import SqliteStore

TOKEN = "bench-console-operator-token"
TYPES = (
    "Finished Journey",
    "Finished Step",
    "Updated Journey",
    "AML Monitor Update",
    "Manually Reviewed",
)
DAYS = 30


async def generate(db: Path, count: int) -> float:
    store = SqliteStore(db)
    await store.open()
    start = time.perf_counter()
    chunk = 20000
    now = time.time()
    try:
        for offset in range(0, count, chunk):
            events = []
            for i in range(offset, min(count, offset + chunk)):
                raw = json.dumps(
                    {
                        "event": TYPES[i % len(TYPES)],
                        "body": {
                            "eventId": f"hist-{i}",
                            "journeyId": f"{i % 50000:024x}",
                            "referenceNo": f"R{i}",
                            "systemDecision": "Complete" if i % 7 else "Refer",
                        },
                    }
                ).encode()
                events.append(parse_event(raw))
            received = now - DAYS * 86400 * (1 - offset / count)
            await store.import_events(events, received, destination="sink")
    finally:
        await store.close()
    return time.perf_counter() - start


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


class Console:
    def __init__(self, port: int) -> None:
        self.port = port
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        body = urllib.parse.urlencode({"token": TOKEN, "next": "/"})
        connection.request(
            "POST", "/sign-in", body, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        response = connection.getresponse()
        response.read()
        assert response.status == 303, response.status
        self.cookie = response.getheader("Set-Cookie", "").split(";", 1)[0]
        self.connection = connection

    def get(self, path: str) -> tuple[float, int, bytes]:
        start = time.perf_counter()
        self.connection.request("GET", path, headers={"Cookie": self.cookie})
        response = self.connection.getresponse()
        body = response.read()
        return time.perf_counter() - start, response.status, body


def time_page(console: Console, path: str, runs: int) -> tuple[list[float], int]:
    for _ in range(2):
        console.get(path)
    samples = []
    rows = 0
    for _ in range(runs):
        took, status, body = console.get(path)
        assert status == 200, (path, status, body[:300])
        samples.append(took)
        rows = body.count(b'<tr class="event"')
    return samples, rows


def time_cli(config: Path, args: list[str], runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "gateway", "events", "list", "-c", str(config), *args],
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        samples.append(time.perf_counter() - start)
    return samples


async def time_store(
    db: Path, queries: dict[str, dict[str, Any]], runs: int
) -> dict[str, list[float]]:
    store = SqliteStore(db)
    await store.open()
    out: dict[str, list[float]] = {}
    try:
        for name, spec in queries.items():
            samples = []
            for _ in range(runs + 2):
                start = time.perf_counter()
                await store.page_events(
                    EventFilter(**spec["filter"]),
                    before=spec.get("before"),
                    limit=50,
                    window=spec.get("window"),
                )
                samples.append(time.perf_counter() - start)
            out[name] = samples[2:]
    finally:
        await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    from gateway.web.console.events import SCAN_WINDOW, TEXT_WINDOW

    work = Path(tempfile.mkdtemp(prefix="idwise-console-"))
    try:
        db = work / "gateway.db"
        took = asyncio.run(generate(db, args.events))
        print(
            f"generated {args.events:,} events in {took:.0f}s ({db.stat().st_size / 1e6:.0f} MB)",
            flush=True,
        )
        n = args.events
        journey = f"{(n - 12345) % 50000:024x}"
        since_at, until_at = time.time() - 20 * 86400, time.time() - 19 * 86400
        since = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(since_at))
        until = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(until_at))
        cases: list[tuple[str, str, list[str] | None, dict[str, Any]]] = [
            ("newest page", "/events", ["--limit", "50"], {"filter": {}}),
            ("page 10,000 (cursor)", f"/events?before={n // 2}", None, {"filter": {}, "before": n // 2}),
            ("journey id", f"/events?journey={journey}", ["--limit", "50", "--journey", journey], {"filter": {"journey": journey}}),
            ("reference number", f"/events?reference=R{n - 777}", None, {"filter": {"reference": f"R{n - 777}"}}),
            ("received between (a day, 20 days ago)", f"/events?since={since}&until={until}", None, {"filter": {"since": since_at, "until": until_at}}),
            ("event type", "/events?type=Updated+Journey", ["--limit", "50", "--event", "Updated Journey"], {"filter": {"event_type": "Updated Journey"}, "window": SCAN_WINDOW}),
            (f"event type none has (scans {SCAN_WINDOW:,})", "/events?type=Finished+Spot+Check", ["--limit", "50", "--event", "Finished Spot Check"], {"filter": {"event_type": "Finished Spot Check"}, "window": SCAN_WINDOW}),
            ("outcome dead", "/events?outcome=dead", None, {"filter": {"outcome": "dead"}}),
            (f"outcome unrouted, none (scans {SCAN_WINDOW:,})", "/events?outcome=unrouted", None, {"filter": {"outcome": "unrouted"}, "window": SCAN_WINDOW}),
            (f"text, no match (scans {TEXT_WINDOW:,})", "/events?q=no-such-text", None, {"filter": {"text": "no-such-text"}, "window": TEXT_WINDOW}),
        ]  # fmt: skip
        admin = {
            "host": "127.0.0.1",
            "port": free_port(),
            "tokens": [{"token": TOKEN, "role": "operator"}],
        }
        config = gateway_config(work, {}, [], admin=admin)
        gateway = start_gateway(config)
        results: list[dict[str, Any]] = []
        try:
            console = Console(yaml.safe_load(config.read_text())["admin"]["port"])
            # the overview refreshes itself every 5 s in every open browser: its cost matters
            overview, _ = time_page(console, "/", args.runs)
            print(f"{'overview':<40} console {median_ms(overview):>9}", flush=True)
            for name, path, cli, _ in cases:
                samples, rows = time_page(console, path, args.runs)
                cli_samples = time_cli(config, cli, max(3, args.runs // 3)) if cli else None
                results.append(
                    {
                        "query": name,
                        "path": path,
                        "rows": rows,
                        "console": samples,
                        "cli": cli_samples,
                    }
                )
                print(f"{name:<40} console {median_ms(samples):>9} ({rows} rows)"
                      + (f"   CLI process {median_ms(cli_samples)}" if cli_samples else ""), flush=True)  # fmt: skip
        finally:
            gateway.stop()
        store_times = asyncio.run(
            time_store(db, {name: spec for name, _, _, spec in cases}, args.runs)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"machine: {machine()}")
    print(f"{'query':<40} {'console page':>13} {'store query':>12} {'CLI process':>12}")
    print(f"{'overview':<40} {median_ms(overview):>13} {'-':>12} {'-':>12}")
    for result in results:
        store = median_ms(store_times[result["query"]])
        cli = median_ms(result["cli"]) if result["cli"] else "-"
        print(f"{result['query']:<40} {median_ms(result['console']):>13} {store:>12} {cli:>12}")
    dump(
        "console",
        {
            "machine": machine(),
            "events": args.events,
            "overview": overview,
            "results": results,
            "store": store_times,
        },
    )


if __name__ == "__main__":
    main()

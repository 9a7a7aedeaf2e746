"""Shared benchmark plumbing: pinned server processes, wrk runs, statistics.

Every figure is measured side by side with its baseline in the same run, interleaved round
by round, because these machines are noisy: we report medians over rounds, the spread and
the ratio to the baseline.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SERVER_CPU = "0"
LOAD_CPU = "1"
TOKEN = "bench-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found; installing the Debian package", file=sys.stderr)
    subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


def pinned(cpu: str, argv: list[str]) -> list[str]:
    if shutil.which("taskset") and os.cpu_count() and os.cpu_count() > 1:  # type: ignore[operator]
        return ["taskset", "-c", cpu, *argv]
    return argv


def wait_healthy(url: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    path: str
    admin_port: int | None = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.process.pid)

    def rss_mb(self) -> float:
        try:
            with open(f"/proc/{self.process.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return float("nan")


def start_baseline() -> Server:
    port = free_port()
    process = subprocess.Popen(
        pinned(SERVER_CPU, [sys.executable, str(ROOT / "bench" / "baseline_app.py"), str(port)]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_healthy(f"http://127.0.0.1:{port}/healthz")
    return Server(process, port, "/webhooks/idwise")


def bench_rules(count: int = 20, to: str = "sink") -> list[dict[str, Any]]:
    """A realistic rule set: event filters, decision conditions, a couple of catch-alls."""
    kinds = [
        ("Finished Journey", "body.systemDecision == 'Refer' || body.finalDecision == 'Rejected'"),
        ("Finished Journey", "body.systemDecision == 'Complete'"),
        ("Updated Journey", "body.action == 'Manual Review'"),
        ("Updated Journey", "body.finalDecision == 'Rejected'"),
        ("Verification Update Required", "body.trigger == 'KYC Renewal'"),
        ("KYC Renewal Deadline Exceeded", None),
        ("AML Monitor Update", "body.systemDecision != body.previousSystemDecision"),
        ("Finished Spot Check", "body.systemDecision != 'Complete'"),
        ("Manually Reviewed", "body.manualDecision == 'Rejected'"),
        ("Finished User Steps", "body.systemDecision == 'Refer'"),
    ]
    rules = []
    for i in range(count):
        event, when = kinds[i % len(kinds)]
        rule: dict[str, Any] = {"name": f"rule-{i}", "events": [event], "to": [to]}
        if when:
            rule["when"] = when if i < len(kinds) else f"({when}) && body.referenceNo != 'x{i}'"
        rules.append(rule)
    return rules


#: deliveries are queued for this destination, but its rate limit keeps the engine idle, so
#: ingest figures measure ingest alone (bench/fanout.py measures delivery)
IDLE_DESTINATIONS = {
    "sink": {
        "type": "http",
        "url": "http://127.0.0.1:9/none",
        "delivery": {"rate_limit": "1/h", "concurrency": 1},
    }
}


def gateway_config(
    tmp: Path, destinations: dict[str, Any], rules: list[dict[str, Any]], **extra: Any
) -> Path:
    config: dict[str, Any] = {
        "server": {
            "host": "127.0.0.1",
            "port": free_port(),
            "max_body_bytes": 65536,
            "shutdown_grace": "1s",
        },
        "admin": {"host": "127.0.0.1", "port": free_port()},
        "storage": {"path": str(tmp / "gateway.db")},
        "auth": {"bearer": [TOKEN]},
        "logging": {"level": "info"},
        "destinations": destinations,
        "rules": rules,
        **extra,
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def start_gateway(
    config_path: Path, log_level_env: dict[str, str] | None = None, root: Path | None = None
) -> Server:
    """The gateway of this checkout, or of the checkout at `root` (a "before" to compare)."""
    config = yaml.safe_load(config_path.read_text())
    port = config["server"]["port"]
    log = open(config_path.parent / "gateway.log", "ab")  # noqa: SIM115 - lives with the process
    env = {**os.environ, **(log_level_env or {})}
    if root is not None:
        env["PYTHONPATH"] = str(root)  # ahead of this checkout's editable install
    process = subprocess.Popen(
        pinned(SERVER_CPU, [sys.executable, "-m", "gateway", "serve", "-c", str(config_path)]),
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=root or ROOT,
        env=env,
    )
    wait_healthy(f"http://127.0.0.1:{port}/healthz")
    return Server(
        process,
        port,
        config.get("server", {}).get("path", "/webhooks/idwise"),
        config.get("admin", {}).get("port"),
    )


def writer_stats(server: Server) -> tuple[int, int]:
    """The gateway's group commits and committed jobs so far (its /metrics counters)."""
    if server.admin_port is None:
        return 0, 0
    url = f"http://127.0.0.1:{server.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    found = dict(re.findall(r"^idwise_gateway_store_(commits|jobs)_total (\S+)$", text, re.M))
    return int(float(found.get("commits", 0))), int(float(found.get("jobs", 0)))


def fsync_commits_per_s(directory: Path, seconds: float = 2.0) -> float:
    """The limit one fsync per commit sets: tiny commits in a loop, WAL and synchronous=FULL
    like the gateway's store, on the same file system as its database."""
    import sqlite3

    path = directory / "fsync-probe.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, v BLOB)")
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO t (v) VALUES (x'00')")
        conn.execute("COMMIT")
        count += 1
    elapsed = time.perf_counter() - start
    conn.close()
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            os.unlink(f"{path}{suffix}")
    return count / elapsed


WRK_SCRIPT = r"""
local counter = 0
local thread_id = 0
local prefix = "%(prefix)s"
local threads = {}
local types = {
  {"Finished Journey", ',"systemDecision":"Complete"'},
  {"Finished Journey", ',"systemDecision":"Refer","finalDecision":"Refer"'},
  {"Finished Step", ',"stepId":"0","stepType":"Document"'},
  {"Updated Journey", ',"systemDecision":"Complete","manualDecision":"Rejected","finalDecision":"Rejected","action":"Manual Review"'},
  {"AML Monitor Update", ',"systemDecision":"Refer","previousSystemDecision":"Complete","updatedAMLVersionNumber":2'},
}
function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end
function init(args)
  thread_id = id
end
request = function()
  counter = counter + 1
  local t = types[(counter %% #types) + 1]
  local journey = string.format("%%06d%%018d", thread_id, counter %% 997)
  local body = string.format('{"event":"%%s","body":{"eventId":"%%s-%%d-%%d","journeyId":"%%s","referenceNo":"REF-%%d"%%s}}',
    t[1], prefix, thread_id, counter, journey, counter, t[2])
  return wrk.format("POST", "%(path)s", {["Authorization"] = "Bearer %(token)s", ["Content-Type"] = "application/json"}, body)
end
"""


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its threads so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int
    requests: int
    #: the server's own CPU time per answered 2xx request over the measured window: the
    #: figure that holds on a busy machine (wall-clock rates move with the neighbours)
    cpu_us_per_request: float = float("nan")
    #: the store's group commits and committed jobs over the window (gateway only)
    commits: int = 0
    jobs: int = 0
    seconds: float = 0.0


def _ms(text: str) -> float:
    match = re.match(r"([\d.]+)(us|ms|s)", text)
    if not match:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def run_wrk(
    port: int,
    path: str,
    connections: int,
    seconds: int,
    prefix: str,
    server: Server | None = None,
) -> WrkResult:
    wrk = ensure_wrk()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % {"prefix": prefix, "path": path, "token": TOKEN})
    threads = min(connections, 2)
    argv = pinned(
        LOAD_CPU,
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            script.name,
            f"http://127.0.0.1:{port}{path}",
        ],
    )
    stats_before = writer_stats(server) if server else (0, 0)
    cpu_before = server.cpu_seconds() if server else 0.0
    started = time.monotonic()
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    elapsed = time.monotonic() - started
    cpu = server.cpu_seconds() - cpu_before if server else float("nan")
    stats_after = writer_stats(server) if server else (0, 0)
    os.unlink(script.name)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))  # type: ignore[union-attr]
    non = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non_2xx = int(non.group(1)) if non else 0
    errors = sum(int(g) for g in errs.groups()) if errs else 0
    answered = max(total - non_2xx, 1)
    return WrkResult(
        rps,
        p50,
        p99,
        non_2xx,
        errors,
        total,
        cpu * 1e6 / answered,
        stats_after[0] - stats_before[0],
        stats_after[1] - stats_before[1],
        elapsed,
    )


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    med = statistics.median(values)
    return f"{med:,.0f} (spread {min(values):,.0f}-{max(values):,.0f})"


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def dump(name: str, data: dict[str, Any]) -> None:
    out = ROOT / "bench" / "out"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(data, indent=2))

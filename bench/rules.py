"""Rules: match time per event with 10, 100 and 1,000 rules, and reload (full config load:
parse, validate, compile, render templates against samples) time with 1,000 rules.

Baseline in the same run: the same rules evaluated with jmespath's own tree interpreter
(what a straightforward implementation would do), so the ratio shows what compiling the
expressions buys.

    python bench/rules.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jmespath

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import bench_rules, dump, gateway_config, machine

from gateway import idwise
from gateway.config.load import load_config
from gateway.jmes import compile_expression, truthy
from gateway.rules import match_rules


def reference_match(rules: list[dict], event_type: str, document: dict) -> list[str]:
    chosen: dict[str, None] = {}
    for rule in rules:
        if event_type not in rule["events"]:
            continue
        if "when" in rule and not truthy(jmespath.search(rule["when"], document)):
            continue
        chosen.update(dict.fromkeys(rule["to"]))
    return list(chosen)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    documents = [(t, idwise.sample(t)) for t in idwise.EVENT_TYPES]
    report: dict = {"machine": machine(), "match": {}, "reload": {}}
    print(f"machine: {machine()}")
    print(
        f"{'rules':>6}  {'gateway us/event':>22}  {'jmespath interpreter us/event':>30}  {'speed-up':>8}"
    )
    for count in (10, 100, 1000):
        raw_rules = bench_rules(count)
        with tempfile.TemporaryDirectory() as tmp:
            config = load_config(
                gateway_config(
                    Path(tmp), {"sink": {"type": "http", "url": "http://127.0.0.1:9/x"}}, raw_rules
                )
            )
        ours, theirs = [], []
        iterations = max(200, 20000 // count)
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(iterations):
                for event_type, document in documents:
                    match_rules(config.rules, config.unmatched, event_type, document)
            ours.append((time.perf_counter() - start) / (iterations * len(documents)) * 1e6)
            start = time.perf_counter()
            for _ in range(iterations):
                for event_type, document in documents:
                    reference_match(raw_rules, event_type, document)
            theirs.append((time.perf_counter() - start) / (iterations * len(documents)) * 1e6)
        speedup = statistics.median(theirs) / statistics.median(ours)
        print(
            f"{count:>6}  {statistics.median(ours):>12.2f} ({min(ours):.2f}-{max(ours):.2f})  "
            f"{statistics.median(theirs):>20.2f} ({min(theirs):.2f}-{max(theirs):.2f})  {speedup:>7.1f}x"
        )
        report["match"][count] = {"gateway_us": ours, "interpreter_us": theirs, "speedup": speedup}
    with tempfile.TemporaryDirectory() as tmp:
        path = gateway_config(
            Path(tmp), {"sink": {"type": "http", "url": "http://127.0.0.1:9/x"}}, bench_rules(1000)
        )
        times = []
        for _ in range(args.rounds):
            compile_expression.cache_clear()  # a reload compiles changed expressions afresh
            start = time.perf_counter()
            load_config(path)
            times.append((time.perf_counter() - start) * 1000)
        print(
            f"reload (full load_config) with 1,000 rules: {statistics.median(times):.0f} ms "
            f"(spread {min(times):.0f}-{max(times):.0f} ms)"
        )
        report["reload"] = {"rules": 1000, "ms": times}
    dump("rules", report)


if __name__ == "__main__":
    main()

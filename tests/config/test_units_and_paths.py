"""Durations, sizes, rates (pure and through the loader) and paths relative to the config."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config.load import check_config, load_config
from gateway.units import parse_duration, parse_rate, parse_size
from tests.support.config import base_config, write_config


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("15m", 900.0),
        ("24h", 86400.0),
        ("30d", 2592000.0),
        ("1.5s", 1.5),
        (" 5s ", 5.0),
        ("10", 10.0),
        ("0", 0.0),
        (0, 0.0),
        (10, 10.0),
        (2.5, 2.5),
    ],
)
def test_parse_duration(value: Any, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "value", ["5 minutes", "-5s", -1, -0.5, True, False, "", "5x", "1h30m", "s", None, [], "5S"]
)
def test_parse_duration_rejects_with_a_hint(value: Any) -> None:
    with pytest.raises(ValueError) as caught:
        parse_duration(value)
    message = str(caught.value)
    assert "duration" in message


def test_duration_hint_lists_every_unit() -> None:
    with pytest.raises(ValueError, match=r"500ms, 5s, 15m, 24h, 30d or a number of seconds"):
        parse_duration("soon")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (512, 512),
        (0, 0),
        ("512", 512),
        ("100b", 100),
        ("64KiB", 65536),
        ("64kb", 64000),
        ("10MiB", 10 * 1024**2),
        ("1GB", 10**9),
        ("2 GiB", 2 * 1024**3),
    ],
)
def test_parse_size(value: Any, size: int) -> None:
    assert parse_size(value) == size


@pytest.mark.parametrize("value", [-1, "1.5MB", True, "64 kilobytes", 1.5, None, "KB", "-5"])
def test_parse_size_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(value)


@pytest.mark.parametrize(
    ("value", "rate"),
    [
        ("1/s", (1.0, 1.0)),
        ("30/m", (30.0, 60.0)),
        ("5/10s", (5.0, 10.0)),
        ("0.5/s", (0.5, 1.0)),
        ("100/h", (100.0, 3600.0)),
        ("2/500ms", (2.0, 0.5)),
        ("1 / d", (1.0, 86400.0)),
    ],
)
def test_parse_rate(value: str, rate: tuple[float, float]) -> None:
    assert parse_rate(value) == pytest.approx(rate)


@pytest.mark.parametrize("value", ["fast", "0/s", "1/0s", "1", "1/x", "/s", 5, None, "1/s/s"])
def test_parse_rate_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match=r"is not a rate; write e.g. 1/s, 30/m or 5/10s"):
        parse_rate(value)


ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.from_regex(r"\s*-?\d{0,4}(\.\d{0,3})?\s*(ms|s|m|h|d|kb|KiB|gb|/s|/10m)?\s*", fullmatch=True),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(ANYTHING)
def test_unit_parsers_only_raise_value_error(value: Any) -> None:
    for parse in (parse_duration, parse_size, parse_rate):
        try:
            result = parse(value)
        except ValueError:
            continue
        if parse is parse_duration:
            assert result >= 0
        elif parse is parse_size:
            assert isinstance(result, int) and result >= 0
        else:
            assert result[0] > 0 and result[1] > 0


# ------------------------------------------------------------------- through the loader
def test_durations_sizes_and_rates_in_a_config(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        server={"max_body_bytes": "64KiB", "shutdown_grace": "15m"},
        storage={"retention": "30d", "busy_timeout": "500ms", "max_size": "1GB"},
        delivery={
            "backoff": {"initial": "500ms", "max": "1h", "multiplier": 3, "jitter": 0.1},
            "max_age": "24h",
            "timeout": 15,
            "rate_limit": "30/m",
        },
        destinations={
            "slack-default": {"type": "slack", "url": "https://hooks.slack.com/services/a"},
            "slack-faster": {
                "type": "slack",
                "url": "https://hooks.slack.com/services/b",
                "delivery": {"rate_limit": "5/10s", "timeout": "2s"},
            },
            "slack-unlimited": {
                "type": "slack",
                "url": "https://hooks.slack.com/services/c",
                "delivery": {"rate_limit": None},
            },
            "api": {"type": "http", "url": "http://127.0.0.1:9/x"},
            "job": {"type": "script", "command": ["/bin/true"], "timeout": "30s"},
        },
    )
    loaded = load_config(write_config(tmp_path, config), environ={})
    assert loaded.server.max_body_bytes == 65536
    assert loaded.server.shutdown_grace == 900
    assert loaded.storage.retention == 30 * 86400
    assert loaded.storage.busy_timeout == 0.5
    assert loaded.storage.max_size == 10**9
    policy = loaded.delivery
    assert (policy.backoff.initial, policy.backoff.max) == (0.5, 3600)
    assert (policy.backoff.multiplier, policy.backoff.jitter) == (3, 0.1)
    assert (policy.max_age, policy.timeout, policy.rate_limit) == (86400, 15, (30, 60))
    destinations = loaded.destinations
    assert destinations["slack-default"].policy.rate_limit == (1, 1)  # Slack's own default
    assert destinations["slack-faster"].policy.rate_limit == (5, 10)
    assert destinations["slack-faster"].policy.timeout == 2
    assert destinations["slack-faster"].policy.backoff.initial == 0.5  # inherited
    assert destinations["slack-unlimited"].policy.rate_limit is None
    assert destinations["api"].policy.rate_limit == (30, 60)
    assert destinations["job"].timeout == 30  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("section", "key", "value", "path"),
    [
        ("storage", "retention", "a month", "storage.retention"),
        ("storage", "busy_timeout", "-1s", "storage.busy_timeout"),
        ("server", "shutdown_grace", "10 s s", "server.shutdown_grace"),
        ("delivery", "max_age", "1w", "delivery.max_age"),
    ],
)
def test_bad_durations_name_their_key(
    tmp_path: Path, section: str, key: str, value: str, path: str
) -> None:
    config = base_config(tmp_path, **{section: {key: value}})
    _, problems = check_config(write_config(tmp_path, config), environ={})
    assert [(p.path, "is not a duration" in p.message) for p in problems] == [(path, True)]


def test_bad_backoff_and_script_timeout_name_their_key(tmp_path: Path) -> None:
    config = base_config(
        tmp_path,
        delivery={"backoff": {"initial": "soon"}},
        destinations={"job": {"type": "script", "command": ["/bin/true"], "timeout": "later"}},
    )
    _, problems = check_config(write_config(tmp_path, config), environ={})
    assert sorted(p.path for p in problems) == [
        "delivery.backoff.initial",
        "destinations.job.timeout",
    ]


# ------------------------------------------------------------------------------- paths
def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "deploy"
    (folder / "rules").mkdir(parents=True)
    (folder / "bin").mkdir()
    script = folder / "bin" / "notify.sh"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    (folder / "rules" / "a.yaml").write_text("rules:\n  - {name: from-file, to: [job]}\n")
    config = base_config(
        tmp_path,
        storage={"path": "data/gateway.db"},
        destinations={"job": {"type": "script", "command": ["./bin/notify.sh", "data/out.jsonl"]}},
        rules_files=["rules/*.yaml"],
    )
    path = write_config(folder, config)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = load_config(Path(os.path.relpath(path, elsewhere)), environ={})
    assert loaded.storage.path == folder.resolve() / "data" / "gateway.db"
    job = loaded.destinations["job"]
    assert job.command == (str(folder.resolve() / "bin" / "notify.sh"), "data/out.jsonl")  # type: ignore[attr-defined]
    assert job.cwd == folder.resolve()  # type: ignore[attr-defined]
    assert [r.name for r in loaded.rules] == ["from-file"]
    assert folder.resolve() / "rules" / "a.yaml" in {p.resolve() for p in loaded.files}


def test_absolute_storage_path_is_kept(tmp_path: Path) -> None:
    config = base_config(tmp_path)
    config["storage"] = {"path": str(tmp_path / "abs" / "x.db")}
    loaded = load_config(write_config(tmp_path, config), environ={})
    assert loaded.storage.path == tmp_path / "abs" / "x.db"


def test_program_names_without_a_slash_are_left_to_path_lookup(tmp_path: Path) -> None:
    config = base_config(tmp_path, destinations={"job": {"type": "script", "command": ["true"]}})
    loaded = load_config(write_config(tmp_path, config), environ={})
    assert loaded.destinations["job"].command == ("true",)  # type: ignore[attr-defined]

"""Log lines: the logfmt text format (quoting, one line, escapes), field names that fit ECS,
and the access log keeping probes and scrapes out unless they fail (real gateway process)."""

from __future__ import annotations

import io
import json
import logging
import shlex
import signal
from pathlib import Path

import pytest

from gateway.logs import TextFormatter, logfmt_value, one_line, setup_logging
from gateway.secret import MASK, Redactor
from tests.support.config import AUTH, base_config, write_config
from tests.support.payloads import payload
from tests.support.process import gateway_process, get, post


def logfmt_pairs(line: str) -> dict[str, str]:
    """A logfmt line parsed the way logfmt readers do (shell-like quoting)."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split = True
    lexer.escapedquotes = '"'
    lexer.quotes = '"'
    lexer.escape = "\\"
    pairs = {}
    for token in lexer:
        key, _, value = token.partition("=")
        pairs[key] = value
    return pairs


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("plain", "plain"),
        ("two words", '"two words"'),
        ("", '""'),
        ('say "hi"', '"say \\"hi\\""'),
        ("a=b", '"a=b"'),
        ("back\\slash", '"back\\\\slash"'),
        ("line\nbreak", '"line\\nbreak"'),
        ("esc\x1b[31mred", '"esc\\x1b[31mred"'),
        ("csi\x9bm", '"csi\\x9bm"'),
        ("rtl\u202eoverride", '"rtl\\u202eoverride"'),
        (3, "3"),
        (1.5, "1.5"),
        (True, "true"),
        (["a", "b"], '"[\\"a\\",\\"b\\"]"'),
    ],
)
def test_logfmt_values_are_quoted_and_escaped_where_needed(value: object, written: str) -> None:
    assert logfmt_value(value) == written


def test_a_text_line_is_one_logfmt_line_with_secrets_masked() -> None:
    redactor = Redactor()
    redactor.register('se"cret-value-1')
    formatter = TextFormatter(redactor)
    line = formatter.format_fields(
        0.25,
        logging.INFO,
        "gateway",
        "webhook received",
        {
            "msg_kind": "webhook",
            "event_type": "Finished\nJourney",
            "note": 'token se"cret-value-1 here',
            "rules": ["a b", "c"],
            "journeyId": None,
            "duration_ms": 1.5,
        },
    )
    assert "\n" not in line
    pairs = logfmt_pairs(line)
    assert pairs["time"] == "1970-01-01T00:00:00.250Z"
    assert pairs["level"] == "info"
    assert pairs["msg"] == "webhook received"
    assert pairs["event_type"] == "Finished\\nJourney"  # the newline stays an escape
    assert pairs["note"] == f"token {MASK} here"
    assert json.loads(pairs["rules"]) == ["a b", "c"]
    assert pairs["duration_ms"] == "1.5"
    assert "journeyId" not in pairs and "msg_kind" not in pairs


def test_a_traceback_stays_on_the_line() -> None:
    stream = io.StringIO()
    setup_logging(Redactor(), fmt="text", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("gateway.test").exception("it failed")
    finally:
        setup_logging(Redactor(), stream=io.StringIO())
    (line,) = stream.getvalue().splitlines()
    assert "ValueError: boom" in logfmt_pairs(line)["error"]


def test_one_line_escapes_what_a_terminal_would_act_on() -> None:
    assert one_line("a\tb\r\nc\x00\x7f\u2028") == "a\\tb\\r\\nc\\x00\\x7f\\u2028"
    assert one_line("café ✓") == "café ✓"


@pytest.mark.slow
def test_probes_and_scrapes_are_logged_only_when_they_fail(tmp_path: Path) -> None:
    config = base_config(tmp_path, admin={"token": "admin-token-0123456789"})
    path = write_config(tmp_path, config)
    with gateway_process(path) as gateway:
        for _ in range(3):
            assert get(gateway.base + "/healthz")[0] == 200
            assert get(gateway.base + "/readyz")[0] == 200
        bearer = {"Authorization": "Bearer admin-token-0123456789"}
        assert get(gateway.admin + "/metrics", bearer)[0] == 200
        assert get(gateway.admin + "/metrics")[0] == 401  # a failed scrape is logged
        assert get(gateway.base + "/nowhere")[0] == 404
        assert post(gateway.url, payload("Finished Step"), AUTH)[0] == 200
        gateway.signal(signal.SIGTERM)  # a clean stop writes the last batch of lines
        assert gateway.wait() == 0
        lines = gateway.log_lines()
    access = [(e["path"], e["status"]) for e in lines if e.get("msg") == "http request"]
    assert ("/metrics", 401) in access
    assert ("/nowhere", 404) in access
    assert not [path for path, status in access if status < 400]
    (received,) = [e for e in lines if e.get("msg") == "webhook received"]
    assert received["event_type"] == "Finished Step"
    assert "event" not in received  # ECS's `event` is an object; ours would collide
    assert all(isinstance(e["duration_ms"], int | float) for e in lines if "duration_ms" in e)

"""YAML alias expansion is bounded (issue 13): a sub-kilobyte file must not take gigabytes
on `check`, start or reload, whichever parser PyYAML uses, in the config and in rules files.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config.source import MAX_ALIAS_NODES, YamlProblem, parse_yaml
from tests.support.config import base_config, write_config

LOADERS = [
    pytest.param(yaml.SafeLoader, id="pure-python"),
    pytest.param(
        getattr(yaml, "CSafeLoader", None),
        id="libyaml",
        marks=pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml"),
    ),
]


def laughs(levels: int = 9, indent: str = "") -> str:
    """The billion laughs: each level aliases the one before nine times (9^levels)."""
    lines = [f'{indent}x-l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels):
        lines.append(f"{indent}x-l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def merge_bomb(levels: int = 30) -> str:
    """Merge keys double a mapping per level before any duplicate key can be noticed."""
    lines = ["x-m0: &m0 {a: 1}"]
    for n in range(1, levels):
        lines.append(f"x-m{n}: &m{n} {{<<: [*m{n - 1}, *m{n - 1}]}}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (laughs(), 5, "YAML aliases expand to more than"),
        (merge_bomb(), 12, "YAML aliases expand to more than"),
        ("a: &a [1, *a]\n", 1, "recursive YAML alias"),
        ("a: &a {b: {c: *a}}\n", 1, "recursive YAML alias"),
    ],
    ids=["billion-laughs", "merge-keys", "recursive-sequence", "recursive-mapping"],
)
def test_alias_bombs_are_refused_with_a_line(
    loader: Any, text: str, line: int, message: str
) -> None:
    with pytest.raises(YamlProblem) as caught:
        parse_yaml(text, "bomb.yaml", loader)
    assert message in str(caught.value)
    assert caught.value.line == line


@pytest.mark.parametrize("loader", LOADERS)
def test_ordinary_anchors_and_merges_still_work(loader: Any) -> None:
    text = (
        "x-policy: &policy {max_attempts: 3, backoff: {initial: 1s, max: 5s}}\n"
        "x-to: &to [a, b]\n" + "".join(f"r{i}: {{<<: *policy, to: *to}}\n" for i in range(500))
    )
    data = parse_yaml(text, "ok.yaml", loader).data
    assert data["r499"] == {
        "max_attempts": 3,
        "backoff": {"initial": "1s", "max": "5s"},
        "to": ["a", "b"],
    }
    budget = "x-big: &big [" + ", ".join(["x"] * 100) + "]\n"
    uses = "".join(f"u{i}: *big\n" for i in range(MAX_ALIAS_NODES // 101 - 1))
    assert len(parse_yaml(budget + uses, "edge.yaml", loader).data) > 100  # just inside


def _limited() -> None:
    limit = 1024 * 1024 * 1024  # 1 GiB: the unbounded expansion needs many times that
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


@pytest.mark.parametrize("where", ["config", "rules file"])
def test_check_refuses_an_alias_bomb_quickly_and_in_bounded_memory(
    tmp_path: Path, where: str
) -> None:
    config = base_config(tmp_path)
    if where == "rules file":
        (tmp_path / "rules").mkdir()
        (tmp_path / "rules" / "bomb.yaml").write_text("rules: []\n" + laughs())
        config["rules_files"] = ["rules/*.yaml"]
        expected = "rules/bomb.yaml:6: <root>: YAML aliases expand to more than"
    path = write_config(tmp_path, config)
    if where == "config":
        path.write_text(path.read_text() + laughs())
        lines = path.read_text().splitlines()
        number = next(i for i, text in enumerate(lines, 1) if text.startswith("x-l4:"))
        expected = f"config.yaml:{number}: <root>: YAML aliases expand to more than"
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=_limited,
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert any(
        line.endswith(expected) or expected in line for line in result.stdout.splitlines()
    ), result.stdout

"""YAML text -> plain data plus the line of every key path. Pure (the caller reads the file).

PyYAML's composer keeps node positions; constructing from the node tree ourselves lets every
later error name the exact line. Duplicate keys are errors, not silent overwrites.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NoReturn

import yaml

Path = tuple[str | int, ...]

#: libyaml's parser when PyYAML has it: ~5x faster on big rule sets (reload of 1,000 rules)
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


@dataclass(slots=True)
class Source:
    """One parsed file: its data and where each key path sits."""

    file: str
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), 1)


class YamlProblem(ValueError):
    def __init__(self, line: int, path: Path, message: str) -> None:
        self.line = line
        self.path = path
        super().__init__(message)


#: nodes that aliases may add to a file beyond what it writes out. Anchors shared by many
#: rules or destinations stay far below; a sub-kilobyte "billion laughs" file (each level
#: aliasing the one before nine times) would otherwise build gigabytes on check or reload.
MAX_ALIAS_NODES = 20_000


def parse_yaml(text: str, file: str, loader_class: Any = None) -> Source:
    """Parse one YAML document. Raises YamlProblem with a line for syntax errors, recursive
    aliases and alias expansion beyond MAX_ALIAS_NODES. `loader_class` is libyaml's loader
    when PyYAML has it, else the pure-Python one (tests run both)."""
    loader = (loader_class or _Loader)(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError:
        loader.dispose()
        _raise_problem(text)  # the pure-Python parser words syntax errors better
    except RecursionError:
        loader.dispose()
        raise YamlProblem(1, (), "invalid YAML: nested too deeply") from None
    source = Source(file=file, data=None)
    if node is None:
        loader.dispose()
        source.lines[()] = 1
        source.data = {}
        return source
    try:
        _check_aliases(node)
        source.data = _build(loader, node, (), source.lines)
    except RecursionError:
        raise YamlProblem(1, (), "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    return source


def _check_aliases(root: yaml.Node) -> None:
    """Refuse, before anything is built, a node graph whose aliases would expand beyond
    MAX_ALIAS_NODES, or that contains itself. An alias is the very node its anchor named, so
    sizes are memoized per node: the check costs one visit per distinct node."""
    sizes: dict[int, int] = {}
    building: set[int] = set()
    added = 0

    def size(node: yaml.Node, line: int) -> int:
        nonlocal added
        key = id(node)
        if key in sizes:  # an alias: its whole subtree is built once more
            added += sizes[key]
            if added > MAX_ALIAS_NODES:
                raise YamlProblem(
                    line,
                    (),
                    f"YAML aliases expand to more than {MAX_ALIAS_NODES} extra nodes "
                    "(an alias bomb?); write the values out or use fewer aliases",
                )
            return sizes[key]
        if key in building:
            raise YamlProblem(line, (), "recursive YAML alias: an anchor is used inside itself")
        building.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                at = key_node.start_mark.line + 1
                total += size(key_node, at) + size(value_node, at)
        elif isinstance(node, yaml.SequenceNode):
            at = node.start_mark.line + 1
            for item in node.value:
                total += size(item, at)
        building.discard(key)
        sizes[key] = total
        return total

    size(root, root.start_mark.line + 1)


def _raise_problem(text: str) -> NoReturn:
    loader = yaml.SafeLoader(text)
    try:
        loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = f"invalid YAML: {exc.problem or exc}"
        if exc.context and exc.context_mark and exc.context_mark is not mark:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        raise YamlProblem(line, (), message) from None
    except yaml.YAMLError as exc:
        raise YamlProblem(1, (), f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    raise YamlProblem(1, (), "invalid YAML")


def _build(loader: Any, node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<: *anchor` merges
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            if key in result:
                raise YamlProblem(
                    key_node.start_mark.line + 1, (*path, key), f"duplicate key '{key}'"
                )
            child = (*path, key)
            result[key] = _build(loader, value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*path, i), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)

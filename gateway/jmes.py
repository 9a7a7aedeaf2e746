"""The one expression language (JMESPath) shared by rules and templates. Pure.

Holds the truthiness rule (JMESPath's, not Python's), a search that never raises on odd
payloads, and the lexer-based helpers `check` and `route` use to explain expressions.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from numbers import Number
from typing import Any

import jmespath
from jmespath import visitor as _visitor
from jmespath.exceptions import JMESPathError
from jmespath.lexer import Lexer


class Expression:
    """A compiled JMESPath expression.

    The common node types of routing conditions (fields, sub-expressions, literals,
    comparisons, `||`, `&&`) become one generated Python function (`_Generator`), `!` and
    orderings plain closures, several times faster than walking the AST for every event;
    every other node is evaluated by jmespath's own interpreter, so results are always
    jmespath's (a property test checks this).
    """

    __slots__ = ("_evaluate", "parsed", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        self.parsed: dict[str, Any] = jmespath.compile(source).parsed
        self._evaluate = _Generator().function(self.parsed)

    def search(self, document: Any) -> Any:
        return self._evaluate(document)

    def holds(self, document: Any) -> bool:
        """`truthy(search(self, document))` with two calls fewer: the routing hot path asks
        this of every candidate rule, and a short condition costs about as much as they
        did."""
        try:
            return truthy(self._evaluate(document))
        except _SEARCH_ERRORS:
            return False


_INTERPRETER = _visitor.TreeInterpreter()
_COMPARATORS = _visitor.TreeInterpreter.COMPARATOR_FUNC
Evaluate = Callable[[Any], Any]


# These three predicates restate jmespath 1.x's private `TreeInterpreter._is_false`,
# `visitor._is_actual_number` and `visitor._is_comparable` rather than calling them: a
# jmespath release may rename or change private helpers without notice, and the closures
# must keep their meaning. The property test in tests/test_jmes.py compares every closure
# with jmespath's own interpreter, so a change in jmespath's semantics fails a test instead.
def _is_false(value: Any) -> bool:
    """JMESPath falsiness, exactly as jmespath's interpreter tests it (equality, not
    Python truthiness: 0 is not false)."""
    return value == "" or value == [] or value == {} or value is None or value is False


def _is_number(value: Any) -> bool:
    """A JSON number: any `numbers.Number` except bool (which is an int to Python)."""
    return not isinstance(value, bool) and isinstance(value, Number)


def _is_comparable(value: Any) -> bool:
    """What `<`, `<=`, `>`, `>=` accept: numbers, and strings (jmespath's extension)."""
    return _is_number(value) or isinstance(value, str)


def _compile_node(node: dict[str, Any]) -> Evaluate:
    """One AST node -> a closure evaluating it.

    Longer than 60 lines on purpose: one branch per node kind, each a few lines, read top
    to bottom as the table of what the fast path supports; split into functions it would
    only add a dispatch table to follow. The last line hands any other node to jmespath.
    """
    kind = node["type"]
    children = [_compile_node(c) for c in node.get("children", ()) if isinstance(c, dict)]
    if kind == "field":
        name = node["value"]
        return lambda v: v.get(name) if isinstance(v, dict) else None
    if kind == "subexpression" and len(children) == len(node["children"]):
        first, rest = children[0], children[1:]

        def subexpression(v: Any) -> Any:
            v = first(v)
            for step in rest:
                v = step(v)
            return v

        return subexpression
    if kind == "literal":
        constant = node["value"]
        return lambda v: constant
    if kind == "current":
        return lambda v: v
    if kind == "comparator" and len(children) == 2:
        left, right = children
        compare = _COMPARATORS[node["value"]]
        literal = _string_literal(node["children"])
        if literal is not None and node["value"] in ("eq", "ne"):
            # against a string or null literal JMESPath equality is Python equality (the 0/1
            # versus true/false special case needs a number on one side)
            side, constant = literal
            other = children[1 - side]
            if node["value"] == "eq":
                return lambda v: other(v) == constant
            return lambda v: other(v) != constant
        if node["value"] in ("eq", "ne"):
            return lambda v: compare(left(v), right(v))

        def ordering(v: Any) -> Any:
            a, b = left(v), right(v)
            if not (_is_comparable(a) and _is_comparable(b)):
                return None
            return compare(a, b)

        return ordering
    if kind == "or_expression" and len(children) == 2:
        left, right = children

        def either(v: Any) -> Any:
            matched = left(v)
            return right(v) if _is_false(matched) else matched

        return either
    if kind == "and_expression" and len(children) == 2:
        left, right = children

        def both(v: Any) -> Any:
            matched = left(v)
            return matched if _is_false(matched) else right(v)

        return both
    if kind == "not_expression" and len(children) == 1:
        (child,) = children

        def negate(v: Any) -> Any:
            result = child(v)
            if _is_number(result) and result == 0:
                return False  # !0 is false: 0 is not falsy in JMESPath
            return not result

        return negate
    return lambda v: _INTERPRETER.visit(node, v)


def _falsy(name: str, value: str) -> str:
    """Python source that binds `value` to `name` and is `_is_false(name)`, inline (a call per
    `||` and `&&` costs more); the binding comes first, `or` evaluates left to right."""
    return (
        f'(({name} := {value}) is None or {name} is False or {name} == "" or {name} == []'
        f" or {name} == {{}})"
    )


class _Generator:
    """One expression -> one Python function, its nodes inlined as Python expressions.

    The closures of `_compile_node` cost a call per node; routing conditions are mostly
    fields, comparisons with literals, `||` and `&&`, which this writes out as plain
    Python source (a field is `v.get(name) if isinstance(v, dict) else None`) in one
    function: about twice as fast again. Any other node, or a node whose input is not a
    plain name, is a call to its `_compile_node` closure, so every result stays jmespath's
    (the property test in tests/test_jmes.py compares them). Source is built from the
    parsed tree only: names and literals go in as constants, never as text.
    """

    def __init__(self) -> None:
        self.names: dict[str, Any] = {"isinstance": isinstance, "dict": dict}
        self._count = 0

    def function(self, node: dict[str, Any]) -> Evaluate:
        try:
            body = self.expression(node, "v")
            # source made from the parsed tree only; names and literals are constants
            evaluate: Evaluate = eval(f"lambda v: {body}", self.names)
        except (RecursionError, MemoryError, SyntaxError):
            # nested deeper than Python's parser takes ("too many nested parentheses")
            return _compile_node(node)
        return evaluate

    def _name(self, prefix: str, value: Any = None) -> str:
        self._count += 1
        name = f"_{prefix}{self._count}"
        if prefix != "t":
            self.names[name] = value
        return name

    def _closure(self, node: dict[str, Any], argument: str) -> str:
        return f"{self._name('c', _compile_node(node))}({argument})"

    def expression(self, node: dict[str, Any], argument: str, plain: bool = True) -> str:
        """Source evaluating `node` on `argument`: a plain name unless `plain` is False (then
        it is evaluated exactly once)."""
        kind = node["type"]
        children = node.get("children", [])
        if kind == "field":
            key = self._name("k", node["value"])
            if plain:
                return f"({argument}.get({key}) if isinstance({argument}, dict) else None)"
            t = self._name("t")
            return f"({t}.get({key}) if isinstance(({t} := {argument}), dict) else None)"
        if kind == "current":
            return argument
        if not plain:
            return self._closure(node, argument)
        if kind == "literal":
            return self._name("k", node["value"])
        if kind == "subexpression" and children and all(isinstance(c, dict) for c in children):
            source = self.expression(children[0], argument)
            for child in children[1:]:
                source = self.expression(child, source, plain=False)
            return source
        if kind == "comparator" and len(children) == 2 and node["value"] in ("eq", "ne"):
            operator = "==" if node["value"] == "eq" else "!="
            literal = _string_literal(children)
            if literal is not None:
                # a string or null literal: JMESPath equality is Python equality
                side, constant = literal
                other = self.expression(children[1 - side], argument)
                return f"({other} {operator} {self._name('k', constant)})"
        if kind in ("or_expression", "and_expression") and len(children) == 2:
            left = self.expression(children[0], argument)
            right = self.expression(children[1], argument)
            t = self._name("t")
            if kind == "or_expression":
                return f"({right} if {_falsy(t, left)} else {t})"
            return f"({t} if {_falsy(t, left)} else {right})"
        return self._closure(node, argument)


def _string_literal(children: list[Any]) -> tuple[int, Any] | None:
    for side, child in enumerate(children):
        if child.get("type") == "literal" and (
            child["value"] is None or isinstance(child["value"], str)
        ):
            return side, child["value"]
    return None


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Expression:
    """Compile once; raises jmespath's ParseError/LexerError (both JMESPathError)."""
    return Expression(source)


#: what evaluating a well-formed expression can raise on an odd payload (e.g. comparing a
#: string with <, floor() of 1e999): the result is then null
_SEARCH_ERRORS = (
    JMESPathError,
    TypeError,
    ValueError,
    AttributeError,
    RecursionError,
    ArithmeticError,
)


def search(expression: Expression, document: Any) -> Any:
    """Evaluate; a runtime type error (e.g. comparing a string with <) yields null."""
    try:
        return expression.search(document)
    except _SEARCH_ERRORS:
        return None


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false is exactly null, false, "", [] and {}; 0 is true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


def describe_error(exc: JMESPathError) -> str:
    """jmespath's multi-line message (with its caret diagram) as one line."""
    lines = [line.strip() for line in str(exc).strip().splitlines()]
    return " ".join(line for line in lines if line and set(line) != {"^"})


def _tokens(source: str) -> list[dict[str, Any]]:
    try:
        return [t for t in Lexer().tokenize(source) if t["type"] != "eof"]
    except JMESPathError:
        return []


def split_top_level(source: str) -> tuple[str, list[str]]:
    """Split an expression at its top-level `||` (else `&&`) operators.

    Returns ("or"|"and"|"", parts). Used by `route` to say which part of a condition was false.
    """
    tokens = _tokens(source)
    depth = 0
    for token in tokens:
        kind = token["type"]
        depth += kind in ("lparen", "lbracket", "lbrace", "filter")
        depth -= kind in ("rparen", "rbracket", "rbrace")
        if kind == "pipe" and depth == 0:
            return "", [source]  # `a | b && c` is `a | (b && c)`: no top-level split
    for operator in ("or", "and"):
        depth = 0
        cuts: list[tuple[int, int]] = []
        for token in tokens:
            kind = token["type"]
            if kind in ("lparen", "lbracket", "lbrace", "filter"):
                depth += 1
            elif kind in ("rparen", "rbracket", "rbrace"):
                depth -= 1
            elif kind == operator and depth == 0:
                cuts.append((token["start"], token["start"] + len(token["value"])))
        if cuts:
            parts: list[str] = []
            position = 0
            for start, end in cuts:
                parts.append(source[position:start].strip())
                position = end
            parts.append(source[position:].strip())
            return operator, parts
    return "", [source]


def body_fields(source: str) -> list[str]:
    """Names read as `body.<field>` in an expression (for unknown-field warnings)."""
    tokens = _tokens(source)
    fields: list[str] = []
    for first, dot, name in zip(tokens, tokens[1:], tokens[2:], strict=False):
        if (
            first["type"] == "unquoted_identifier"
            and first["value"] == "body"
            and dot["type"] == "dot"
            and name["type"] in ("unquoted_identifier", "quoted_identifier")
        ):
            fields.append(str(name["value"]))
    return fields

"""The one expression language (JMESPath) shared by rules and templates. Pure.

Holds the truthiness rule (JMESPath's, not Python's), a search that never raises on odd
payloads, and the lexer-based helpers `check` and `route` use to explain expressions.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import jmespath
from jmespath.exceptions import JMESPathError
from jmespath.lexer import Lexer


@lru_cache(maxsize=4096)
def compile_expression(source: str) -> Any:
    """Compile once; raises jmespath's ParseError/LexerError (both JMESPathError)."""
    return jmespath.compile(source)


def search(expression: Any, document: Any) -> Any:
    """Evaluate; a runtime type error (e.g. comparing a string with <) yields null."""
    try:
        return expression.search(document)
    except (JMESPathError, TypeError, ValueError, AttributeError, RecursionError):
        return None


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false is exactly null, false, "", [] and {}; 0 is true."""
    if value is None or value is False:
        return False
    if isinstance(value, str | list | dict):
        return len(value) > 0
    return True


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

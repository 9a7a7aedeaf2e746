"""`{{ jmespath }}` templates over a payload. Pure; no I/O.

Templates are compiled once at config load. A string that is exactly one placeholder
renders to the JSON value itself (so HTTP bodies keep their types); anything else renders
to text, with missing values as "". An optional escape function applies to inserted values
only, never to the template's own text (Slack mrkdwn escaping).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jmespath.exceptions import JMESPathError

from gateway.jmes import compile_expression, describe_error, search

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.S)

Escape = Callable[[str], str]


class TemplateError(ValueError):
    pass


class MixedText(str):
    """A string made of template text and verbatim data (values from `${...}` in the
    config): only the template text can hold `{{ placeholders }}`."""

    segments: tuple[tuple[str, bool], ...]  # (text, is_data)

    def __new__(cls, segments: list[tuple[str, bool]]) -> MixedText:
        text = super().__new__(cls, "".join(part for part, _ in segments))
        text.segments = tuple(segments)
        return text


@dataclass(frozen=True, slots=True)
class Placeholder:
    source: str
    expression: Any  # a compiled jmespath expression


@dataclass(frozen=True, slots=True)
class TextTemplate:
    parts: tuple[str | Placeholder, ...]

    @property
    def single(self) -> Placeholder | None:
        if len(self.parts) == 1 and isinstance(self.parts[0], Placeholder):
            return self.parts[0]
        return None

    @property
    def expressions(self) -> tuple[str, ...]:
        return tuple(p.source for p in self.parts if isinstance(p, Placeholder))


Template = Any  # a TextTemplate, or dict/list/scalar structures containing them


def compile_text(text: str) -> TextTemplate | str:
    """Compile one string; returns the string itself when it holds no placeholder."""
    if isinstance(text, MixedText):
        return _compile_mixed(text)
    if "{{" not in text:
        if "}}" in text:
            raise TemplateError("'}}' without a matching '{{'")
        return text
    parts: list[str | Placeholder] = []
    position = 0
    for match in _PLACEHOLDER.finditer(text):
        literal = text[position : match.start()]
        if "{{" in literal or "}}" in literal:
            raise TemplateError("unbalanced '{{' / '}}'")
        if literal:
            parts.append(literal)
        source = match.group(1).strip()
        if not source:
            raise TemplateError("empty placeholder '{{ }}'")
        try:
            parts.append(Placeholder(source, compile_expression(source)))
        except JMESPathError as exc:
            raise TemplateError(
                f"invalid expression {{{{ {source} }}}}: {describe_error(exc)}"
            ) from None
        position = match.end()
    tail = text[position:]
    if "{{" in tail or "}}" in tail:
        raise TemplateError("unbalanced '{{' / '}}'")
    if tail:
        parts.append(tail)
    return TextTemplate(tuple(parts))


def _compile_mixed(text: MixedText) -> TextTemplate | str:
    parts: list[str | Placeholder] = []
    for segment, is_data in text.segments:
        compiled = segment if is_data else compile_text(segment)
        pieces = compiled.parts if isinstance(compiled, TextTemplate) else (compiled,)
        for piece in pieces:
            if isinstance(piece, str) and parts and isinstance(parts[-1], str):
                parts[-1] += piece
            elif piece != "":
                parts.append(piece)
    if not any(isinstance(part, Placeholder) for part in parts):
        return str.__str__(text)
    return TextTemplate(tuple(parts))


def compile_template(value: Any) -> Template:
    """Compile every string inside a (possibly nested) structure."""
    if isinstance(value, str):
        return compile_text(value)
    if isinstance(value, dict):
        return {key: compile_template(item) for key, item in value.items()}
    if isinstance(value, list):
        return [compile_template(item) for item in value]
    return value


#: every character that starts a new line somewhere: CR, LF, VT, FF, NEL and the Unicode
#: line and paragraph separators
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\x0b\x0c\x85\u2028\u2029]")


def one_line(text: str) -> str:
    """An inserted value kept on the template's line: line breaks become the visible text
    `\\n`, so a payload value cannot forge a line ("Decision: Approved") of its own in a
    Slack message or a plain-text email."""
    return _LINE_BREAKS.sub(r"\\n", text) if _LINE_BREAKS.search(text) else text


def as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True)


def render_text(template: TextTemplate | str, document: Any, escape: Escape | None = None) -> str:
    if isinstance(template, str):
        return template
    out: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
        else:
            text = as_text(search(part.expression, document))
            out.append(escape(text) if escape else text)
    return "".join(out)


def render(template: Template, document: Any, escape: Escape | None = None) -> Any:
    """Render a compiled template; exactly-one-placeholder strings keep the JSON type."""
    if isinstance(template, TextTemplate):
        single = template.single
        if single is not None:
            value = search(single.expression, document)
            if isinstance(value, str) and escape:
                return escape(value)
            if isinstance(value, dict | list) and escape:
                return _escape_strings(value, escape)
            return value
        return render_text(template, document, escape)
    if isinstance(template, dict):
        return {key: render(item, document, escape) for key, item in template.items()}
    if isinstance(template, list):
        return [render(item, document, escape) for item in template]
    return template


def _escape_strings(value: Any, escape: Escape) -> Any:
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: _escape_strings(v, escape) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_strings(v, escape) for v in value]
    return value


def template_expressions(template: Template) -> list[str]:
    """Every placeholder source inside a compiled template (for `check` field warnings)."""
    if isinstance(template, TextTemplate):
        return list(template.expressions)
    if isinstance(template, dict):
        return [e for item in template.values() for e in template_expressions(item)]
    if isinstance(template, list):
        return [e for item in template for e in template_expressions(item)]
    return []


__all__ = [
    "TemplateError",
    "TextTemplate",
    "as_text",
    "compile_template",
    "compile_text",
    "one_line",
    "render",
    "render_text",
    "template_expressions",
]

"""`${VAR}` interpolation inside string values, after YAML parsing. Pure but for the
injected environment and file reader.

Forms: `${VAR}`, `${VAR:-default}`, `${VAR:?message}`, `${file:/path}` and `$$` for a
literal dollar. Substitution happens on parsed strings, so a value can never inject YAML.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

_TOKEN = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class InterpolationError(ValueError):
    pass


def interpolate(
    text: str,
    environ: Mapping[str, str],
    read_file: Callable[[str], str],
) -> tuple[str, list[str]]:
    """Returns the resolved text and the substituted values (to be treated as secrets)."""
    if "$" not in text:
        return text, []
    substituted: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        if match.group("bare") is not None:
            return match.group(0)  # a lone `$name` is literal text; only ${...} interpolates
        value = _resolve(match.group("body"), environ, read_file)
        substituted.append(value)
        return value

    return _TOKEN.sub(replace, text), substituted


def _resolve(body: str, environ: Mapping[str, str], read_file: Callable[[str], str]) -> str:
    if body.startswith("file:"):
        path = body[5:].strip()
        if not path:
            raise InterpolationError("${file:} needs a path, e.g. ${file:/run/secrets/token}")
        try:
            content = read_file(path)
        except OSError as exc:
            raise InterpolationError(
                f"cannot read secret file {path}: {exc.strerror or exc}"
            ) from None
        return content[:-1] if content.endswith("\n") else content
    for separator in (":-", ":?"):
        if separator in body:
            name, _, argument = body.partition(separator)
            _check_name(name)
            value = environ.get(name, "")
            if value:
                return value
            if separator == ":-":
                return argument
            raise InterpolationError(
                f"environment variable {name} is required: {argument or 'set it'}"
            )
    _check_name(body)
    if body not in environ:
        raise InterpolationError(
            f"environment variable {body} is not set; set it, or write ${{{body}:-default}}"
        )
    return environ[body]


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InterpolationError(
            f"'${{{name}}}' is not a variable reference; write $$ for a literal dollar"
        )

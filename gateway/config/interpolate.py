"""`${VAR}` interpolation inside string values, after YAML parsing. Pure but for the
injected environment and file reader.

Forms: `${VAR}`, `${VAR:-default}`, `${VAR:?message}`, `${file:/path}` and `$$` for a
literal dollar. Substitution happens on parsed strings, so a value can never inject YAML.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from gateway.render import MixedText

_TOKEN = re.compile(r"\$\$|\$\{(?P<body>[^}]*)\}|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


class InterpolationError(ValueError):
    pass


def interpolate(
    text: str,
    environ: Mapping[str, str],
    read_file: Callable[[str], str],
    allowed: frozenset[str] | None = None,
) -> tuple[str, list[str]]:
    """Returns the resolved text and the substituted values (to be treated as secrets).

    `allowed` (rules files): only these variables may be read, and no file at all; rules
    files are what ops people edit, and must not reach every secret the gateway holds.

    When anything was substituted, the result is a `MixedText` that remembers which parts
    are data, so a value like an API key containing `{{` is never read as template syntax.
    """
    if "$" not in text:
        return text, []
    segments: list[tuple[str, bool]] = []
    substituted: list[str] = []
    position = 0
    for match in _TOKEN.finditer(text):
        segments.append((text[position : match.start()], False))
        position = match.end()
        if match.group(0) == "$$":
            segments.append(("$", False))
        elif match.group("bare") is not None:
            segments.append((match.group(0), False))  # a lone `$name` is literal text
        else:
            value = _resolve(match.group("body"), environ, read_file, allowed)
            substituted.append(value)
            segments.append((value, True))
    segments.append((text[position:], False))
    if not substituted:
        return "".join(part for part, _ in segments), []
    return MixedText(segments), substituted


def _resolve(
    body: str,
    environ: Mapping[str, str],
    read_file: Callable[[str], str],
    allowed: frozenset[str] | None,
) -> str:
    if body.startswith("file:") and allowed is not None:
        raise InterpolationError(
            "rules files cannot read files with ${file:...}; put the value in the main config"
        )
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
        except UnicodeDecodeError:
            raise InterpolationError(f"secret file {path} is not UTF-8 text") from None
        except ValueError:  # a NUL byte in the path
            raise InterpolationError("the secret file path contains a NUL byte") from None
        return content[:-1] if content.endswith("\n") else content
    for separator in (":-", ":?"):
        if separator in body:
            name, _, argument = body.partition(separator)
            _check_name(name, allowed)
            value = environ.get(name, "")
            if value:
                return value
            if separator == ":-":
                return argument
            raise InterpolationError(
                f"environment variable {name} is required: {argument or 'set it'}"
            )
    _check_name(body, allowed)
    if body not in environ:
        raise InterpolationError(
            f"environment variable {body} is not set; set it, or write ${{{body}:-default}}"
        )
    return environ[body]


def _check_name(name: str, allowed: frozenset[str] | None = None) -> None:
    if not _NAME.match(name):
        # the text is not quoted: it may be part of a literal password
        raise InterpolationError(
            "this '${...}' is not a variable reference; write $$ for a literal dollar"
        )
    if allowed is not None and name not in allowed:
        raise InterpolationError(
            f"rules files may only use the environment variables listed in the main "
            f"config's rules_env; {name} is not listed there"
        )

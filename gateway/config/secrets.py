"""Which values of a config file are credentials, registered with the redaction point
(`gateway.secret`) as the file is interpolated.

Pure but for that process-wide registry. Each destination type declares its own secret
settings (`SECRETS` in its module, listed in `destinations.REGISTRY`); the gateway's own
(admin token, inbound credentials) are declared here. Only where the schema gives a key no
fixed meaning (x- extension blocks, free-form templates, a destination of unknown type) is
a value judged by its key's name, erring on the side of masking.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.config.source import Path as KeyPath
from gateway.destinations import REGISTRY
from gateway.destinations.base import SecretKeys
from gateway.secret import Redactor

#: names that say a value is a credential where the shape is not declared
CREDENTIAL_KEYS = frozenset({"password", "token", "secret", "value", "url"})
_CREDENTIAL_NAME = re.compile(r"auth|token|key|secret|pass|sign|credential|cookie", re.I)
#: a literal this long in a script's env is likely a credential whatever its name
LONG_VALUE = 12

#: the gateway's own credential settings; "*" stands for any list index
GATEWAY_SECRETS: tuple[KeyPath, ...] = (
    ("admin", "token"),
    ("admin", "tokens", "*", "token"),
    ("admin", "session_key"),
    ("auth", "basic", "*", "password"),
    ("auth", "bearer", "*"),
    ("auth", "headers", "*", "value"),
    ("storage", "dsn"),  # postgresql://user:PASSWORD@host/db
)
#: top-level keys whose shape the schema fixes: only declared settings hold secrets there
SECTIONS = frozenset(
    {
        "server",
        "admin",
        "storage",
        "auth",
        "logging",
        "delivery",
        "destinations",
        "rules_files",
        "rules_env",
        "rules",
        "unmatched",
    }
)

#: settings that are never credentials, whatever the environment puts in them
PLAIN_KEYS = frozenset(
    {
        "host",
        "port",
        "path",
        "from",
        "to",
        "cc",
        "method",
        "security",
        "level",
        "format",
        "name",
        "type",
        "retention",
        "busy_timeout",
        "max_size",
        "min_free",
        "durability",
        "idle_timeout",
        "max_connections",
        "timeout",
        "ca_file",
        "cwd",
        "max_body_bytes",
        "shutdown_grace",
        "allow_ips",
        "trusted_proxies",
        "rules_files",
        "unmatched",
        "rate_limit",
        "backend",
        "connect_timeout",
        "lease_margin",
    }
)


def register_value(
    redactor: Redactor, path: KeyPath, written: str, text: str, substituted: list[str], data: Any
) -> None:
    """Register the credentials in one string value: `written` as in the file, `text` after
    interpolation, `substituted` the values `${...}` put in; `data` is the whole file."""
    if is_secret(path, text, data) or written.lstrip().startswith("${file:"):
        redactor.register(text, *substituted, *_url_password(text))
    # values from the environment or files are secret wherever they are used (a script
    # argument, a body template), except under keys that never hold one (a host name
    # masked in every log line helps nobody); defaults written in the file are not
    if _last_key(path) not in PLAIN_KEYS:
        redactor.register(*(item for item in substituted if item not in written and len(item) >= 6))


def is_secret(path: KeyPath, value: str, data: Any) -> bool:
    """Whether the string at `path` is a credential. `data` is the file's data, where a
    destination's type is found."""
    if not path or path[0] not in SECTIONS:
        return looks_secret(path, value)  # an x- block (YAML anchors): any shape
    if path[0] == "destinations" and len(path) >= 2:
        return _destination_secret(path, value, data)
    return any(_matches(pattern, path) for pattern in GATEWAY_SECRETS)


def _destination_secret(path: KeyPath, value: str, data: Any) -> bool:
    destinations = data.get("destinations") if isinstance(data, dict) else None
    settings = destinations.get(path[1]) if isinstance(destinations, dict) else None
    kind = settings.get("type") if isinstance(settings, dict) else None
    entry = REGISTRY.get(kind) if isinstance(kind, str) else None
    if entry is None:
        return looks_secret(path, value)  # no type to ask; the schema reports it
    return _declared(entry.secrets, path[2:], path, value)


def _declared(keys: SecretKeys, setting: KeyPath, path: KeyPath, value: str) -> bool:
    if not setting:
        return False
    head = str(setting[0])
    # list items count as their setting: "sign.secret" covers sign.secret[1]
    if ".".join(str(part) for part in setting if not isinstance(part, int)) in keys.whole:
        return True
    if len(setting) == 2 and head in keys.named and _names_credential(str(setting[1])):
        return True
    if len(setting) == 2 and head in keys.long and len(value) >= LONG_VALUE:
        return True
    return head in keys.free_form and looks_secret(path, value)


def looks_secret(path: KeyPath, value: str) -> bool:
    """The guess by key names, for values whose shape nothing declares."""
    if path and path[-1] in CREDENTIAL_KEYS:
        return True
    if len(path) >= 2 and path[-2] == "bearer":
        return True
    if len(path) >= 2 and path[-2] in ("headers", "env") and _names_credential(str(path[-1])):
        return True
    return len(path) >= 2 and path[-2] == "env" and len(value) >= LONG_VALUE


def _names_credential(name: str) -> bool:
    # HTTP headers and script env: secret when the name says so (Authorization, X-Api-Key,
    # SIGNING_SECRET...), not `Content-Type: application/json` or `LEVEL: info`
    return name in CREDENTIAL_KEYS or bool(_CREDENTIAL_NAME.search(name))


def _matches(pattern: KeyPath, path: KeyPath) -> bool:
    return len(pattern) == len(path) and all(
        want == got or (want == "*" and isinstance(got, int))
        for want, got in zip(pattern, path, strict=True)
    )


def _url_password(text: str) -> tuple[str, ...]:
    """The password inside a URL (a DSN): masked alone too, wherever it is printed apart
    from the rest (a driver's message, a URL rebuilt with another host)."""
    match = re.match(r"^[a-z][a-z0-9+.-]*://[^:/@]*:([^@/]+)@", text.strip(), re.I)
    return (match.group(1),) if match else ()


def _last_key(path: KeyPath) -> str:
    return next((part for part in reversed(path) if isinstance(part, str)), "")

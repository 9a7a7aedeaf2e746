"""Schema-valid config data -> the model's sections: server, admin, storage, logging, auth,
delivery policies, destinations (each type builds its own) and rules with compiled
JMESPath. Pure: every problem goes to the `Report`, nothing raises.

Values the schema cannot judge are checked here: durations, sizes, rates, addresses, a
backoff whose start exceeds its ceiling, duplicate rule names, conditions that do not
compile. References between parts (rule -> destination) are `lint`'s job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from jmespath.exceptions import JMESPathError

from gateway.auth import AuthConfig, BasicCredential, HeaderCredential, IPNetwork
from gateway.config.model import AdminConfig, LoggingConfig, ServerConfig, StorageConfig
from gateway.config.report import Report, split_key
from gateway.config.source import Path as KeyPath
from gateway.config.source import Source
from gateway.destinations import REGISTRY
from gateway.destinations.base import BuildContext, Destination
from gateway.jmes import Expression, compile_expression, describe_error
from gateway.retry import Backoff, DeliveryPolicy
from gateway.rules import Rule
from gateway.secret import Redactor, Secret
from gateway.units import parse_duration, parse_rate, parse_size

SERVER_DEFAULTS = ServerConfig()
ADMIN_DEFAULTS = AdminConfig()
STORAGE_DEFAULTS = StorageConfig()
#: characters of `admin.session_key` at least (32 random bytes in base64 are 44)
MIN_SESSION_KEY = 32

#: request headers that cannot carry a custom credential
_RESERVED_HEADERS = ("authorization", "x-forwarded-for", "host", "content-length")


class RulesPart(NamedTuple):
    """The rules of one file: (the file, the path of its rule list, the raw rule items)."""

    source: Source
    path: KeyPath
    items: list[Any]


class RuleItem(NamedTuple):
    """A built rule with where it was written (for the cross-reference checks)."""

    source: Source
    path: KeyPath
    item: dict[str, Any]
    rule: Rule


@dataclass
class Builder:
    report: Report
    base_dir: Path  # relative paths in the config are relative to its folder
    redactor: Redactor  # destinations mask what they show (previews, script output) with it

    # ---- values ----------------------------------------------------------------------------
    def duration(
        self, source: Source, data: Mapping[str, Any], path: KeyPath, key: str, default: float
    ) -> float:
        if key not in data or data[key] is None:
            return default
        try:
            return parse_duration(data[key])
        except ValueError as exc:
            self.report.error(source, (*path, key), str(exc))
            return default

    def size(self, source: Source, data: Mapping[str, Any], path: KeyPath, default: int) -> int:
        key = str(path[-1])
        if key not in data:
            return default
        try:
            return parse_size(data[key])
        except ValueError as exc:
            self.report.error(source, path, str(exc))
            return default

    def networks(self, source: Source, values: list[str], path: KeyPath) -> tuple[IPNetwork, ...]:
        out: list[IPNetwork] = []
        for i, value in enumerate(values):
            try:
                out.append(ipaddress.ip_network(value.strip(), strict=False))
            except ValueError:
                self.report.error(
                    source,
                    (*path, i),
                    f"'{value}' is not an IP address or CIDR range (e.g. 203.0.113.0/24)",
                )
        return tuple(out)

    # ---- sections --------------------------------------------------------------------------
    def server(self, source: Source, raw: Mapping[str, Any]) -> ServerConfig:
        return ServerConfig(
            host=str(raw.get("host", SERVER_DEFAULTS.host)),
            port=int(raw.get("port", SERVER_DEFAULTS.port)),
            path=str(raw.get("path", SERVER_DEFAULTS.path)),
            max_body_bytes=self.size(
                source, raw, ("server", "max_body_bytes"), SERVER_DEFAULTS.max_body_bytes
            ),
            shutdown_grace=self.duration(
                source, raw, ("server",), "shutdown_grace", SERVER_DEFAULTS.shutdown_grace
            ),
            idle_timeout=self.duration(
                source, raw, ("server",), "idle_timeout", SERVER_DEFAULTS.idle_timeout
            ),
            max_connections=int(raw.get("max_connections", SERVER_DEFAULTS.max_connections)),
        )

    def admin(self, source: Source, raw: Mapping[str, Any], server: ServerConfig) -> AdminConfig:
        admin = AdminConfig(
            host=str(raw.get("host", ADMIN_DEFAULTS.host)),
            port=int(raw.get("port", ADMIN_DEFAULTS.port)),
            token=Secret(raw["token"]) if raw.get("token") else None,
            # empty entries (an unset `${VAR:-}`) are ignored, as with auth.bearer
            tokens=tuple(
                (Secret(entry["token"]), str(entry["role"]))
                for entry in raw.get("tokens") or ()
                if entry.get("token")
            ),
            session_key=Secret(raw["session_key"]) if raw.get("session_key") else None,
        )
        if admin.session_key is not None and len(admin.session_key.reveal()) < MIN_SESSION_KEY:
            # the value is a secret: say what is wrong with it, never what it is
            self.report.error(
                source,
                ("admin", "session_key"),
                f"too short to sign sessions: use at least {MIN_SESSION_KEY} random "
                "characters (openssl rand -base64 32)",
            )
        if (
            admin.token is None
            and not admin.tokens
            and admin.host not in ("127.0.0.1", "::1", "localhost")
        ):
            self.report.warn(
                source,
                ("admin", "host"),
                "the admin listener (metrics, reload) is reachable beyond this host without a "
                "token; set admin.token",
            )
        if admin.port == server.port and admin.port != 0:
            self.report.error(
                source,
                ("admin", "port"),
                "the admin listener needs its own port (never the public one)",
            )
        return admin

    def storage(self, source: Source, raw: Mapping[str, Any]) -> StorageConfig:
        path = Path(str(raw.get("path", STORAGE_DEFAULTS.path)))
        if not path.is_absolute():
            path = self.base_dir / path
        max_size = None
        if raw.get("max_size") is not None:
            max_size = self.size(source, raw, ("storage", "max_size"), 0) or None
        return StorageConfig(
            path=path,
            retention=self.duration(
                source, raw, ("storage",), "retention", STORAGE_DEFAULTS.retention
            ),
            busy_timeout=self.duration(
                source, raw, ("storage",), "busy_timeout", STORAGE_DEFAULTS.busy_timeout
            ),
            max_size=max_size,
            durability=self.durability(source, raw),
            **self.postgres(source, raw),
            min_free=self.size(source, raw, ("storage", "min_free"), STORAGE_DEFAULTS.min_free),
        )

    def durability(self, source: Source, raw: Mapping[str, Any]) -> str:
        durability = str(raw.get("durability", STORAGE_DEFAULTS.durability))
        if durability != "full" and raw.get("backend", STORAGE_DEFAULTS.backend) == "postgres":
            self.report.error(
                source,
                ("storage", "durability"),
                "applies to the sqlite backend only; with postgres the database's own "
                "synchronous_commit decides (remove this key)",
            )
        return durability

    def postgres(self, source: Source, raw: Mapping[str, Any]) -> dict[str, Any]:
        """The PostgreSQL settings of `storage` (several replicas on one database)."""
        backend = str(raw.get("backend", STORAGE_DEFAULTS.backend))
        dsn = str(raw.get("dsn") or "")
        pool = raw.get("pool") or {}
        pool_min = int(pool.get("min", STORAGE_DEFAULTS.pool_min))
        pool_max = int(pool.get("max", STORAGE_DEFAULTS.pool_max))
        if backend == "postgres" and not dsn:
            self.report.error(
                source,
                ("storage", "backend"),
                'backend postgres needs storage.dsn (e.g. "${DATABASE_URL}" or'
                ' "${file:/run/secrets/db-url}")',
            )
        elif backend == "postgres" and not dsn.startswith(("postgres://", "postgresql://")):
            # the value is a secret: say what is wrong with it, never what it is
            self.report.error(
                source, ("storage", "dsn"), "must be a postgresql://user:password@host/db URL"
            )
        if backend != "postgres":
            for key in ("dsn", "pool"):
                if key in raw:
                    self.report.error(
                        source, ("storage", key), "only used with storage.backend: postgres"
                    )
        if "min" in pool and "max" in pool and pool_min > pool_max:
            self.report.error(
                source, ("storage", "pool", "min"), f"must not exceed pool.max ({pool_max})"
            )
        return {
            "backend": backend,
            "dsn": Secret(dsn) if dsn else None,
            "pool_min": min(pool_min, pool_max),
            "pool_max": pool_max,
            "connect_timeout": self.duration(
                source, raw, ("storage",), "connect_timeout", STORAGE_DEFAULTS.connect_timeout
            ),
            "lease_margin": self.duration(
                source, raw, ("storage",), "lease_margin", STORAGE_DEFAULTS.lease_margin
            ),
        }

    def logging(self, raw: Mapping[str, Any]) -> LoggingConfig:
        return LoggingConfig(
            format=str(raw.get("format", "json")),
            level=str(raw.get("level", "info")),
        )

    def auth(self, source: Source, raw: Mapping[str, Any]) -> AuthConfig:
        basic = tuple(
            BasicCredential(Secret(c["username"]), Secret(c["password"]))
            for c in raw.get("basic") or []
            if c.get("username") and c.get("password")
        )
        for i, credential in enumerate(raw.get("basic") or []):
            if ":" in credential.get("username", ""):
                self.report.error(
                    source,
                    ("auth", "basic", i, "username"),
                    "a basic-auth username cannot contain ':'",
                )
        # empty entries are the normal state of rotation slots like "${IDWISE_TOKEN_NEXT:-}"
        bearer = tuple(Secret(t) for t in raw.get("bearer") or [] if t)
        headers = tuple(
            HeaderCredential(h["name"], Secret(h["value"]))
            for h in raw.get("headers") or []
            if h.get("value")
        )
        for i, header in enumerate(raw.get("headers") or []):
            if header.get("name", "").lower() in _RESERVED_HEADERS:
                self.report.error(
                    source,
                    ("auth", "headers", i, "name"),
                    f"'{header['name']}' cannot carry a custom credential",
                )
        self._warn_non_ascii(source, raw)
        config = AuthConfig(
            basic=basic,
            bearer=bearer,
            headers=headers,
            allow_ips=self.networks(source, raw.get("allow_ips") or [], ("auth", "allow_ips")),
            trusted_proxies=self.networks(
                source, raw.get("trusted_proxies") or [], ("auth", "trusted_proxies")
            ),
            allow_unauthenticated=bool(raw.get("allow_unauthenticated", False)),
        )
        if (
            not config.has_credentials
            and not config.allow_unauthenticated
            and "auth" not in self.report.broken_sections
            and not any(path and path[0] == "auth" for _, path in self.report.unresolved)
        ):
            self.report.error(
                source,
                ("auth",),
                "no credential is configured (all empty?); configure basic, bearer or headers, "
                "or set allow_unauthenticated: true to accept anyone",
            )
        return config

    def _warn_non_ascii(self, source: Source, raw: Mapping[str, Any]) -> None:
        """Credentials are compared on their UTF-8 bytes; a sender that does not encode
        non-ASCII as UTF-8 (many HTTP clients send latin-1 or refuse) can never match."""
        values: list[tuple[KeyPath, Any]] = [
            (("auth", "bearer", i), token) for i, token in enumerate(raw.get("bearer") or [])
        ]
        values += [
            (("auth", "headers", i, "value"), header.get("value"))
            for i, header in enumerate(raw.get("headers") or [])
        ]
        values += [
            (("auth", "basic", i, key), credential.get(key))
            for i, credential in enumerate(raw.get("basic") or [])
            for key in ("username", "password")
        ]
        for path, value in values:
            if isinstance(value, str) and not value.isascii():
                self.report.warn(
                    source,
                    path,
                    "holds non-ASCII characters: it matches only a sender that encodes it as "
                    "UTF-8; prefer an ASCII credential",
                )

    def policy(
        self,
        source: Source,
        raw: Mapping[str, Any],
        path: KeyPath,
        base: DeliveryPolicy,
        defaults: Mapping[str, Any] | None = None,
    ) -> DeliveryPolicy:
        """`raw` over the type's `defaults` over `base` (the top-level delivery policy)."""
        merged = {**(defaults or {}), **raw}
        backoff_raw = merged.get("backoff") or {}
        bp = (*path, "backoff")
        backoff = Backoff(
            initial=self.duration(source, backoff_raw, bp, "initial", base.backoff.initial),
            max=self.duration(source, backoff_raw, bp, "max", base.backoff.max),
            multiplier=float(backoff_raw.get("multiplier", base.backoff.multiplier)),
            jitter=float(backoff_raw.get("jitter", base.backoff.jitter)),
        )
        if backoff.initial > backoff.max:
            self.report.error(
                source, (*bp, "initial"), "backoff.initial is larger than backoff.max"
            )
        rate = base.rate_limit
        if "rate_limit" in merged:
            rate = None
            if merged["rate_limit"] is not None:
                try:
                    rate = parse_rate(merged["rate_limit"])
                except ValueError as exc:
                    self.report.error(source, (*path, "rate_limit"), str(exc))
        return DeliveryPolicy(
            max_attempts=int(merged.get("max_attempts", base.max_attempts)),
            backoff=backoff,
            max_age=self.duration(source, merged, path, "max_age", base.max_age),
            timeout=self.duration(source, merged, path, "timeout", base.timeout),
            concurrency=int(merged.get("concurrency", base.concurrency)),
            rate_limit=rate,
            ordered=bool(merged.get("ordered", base.ordered)),
        )

    def destinations(
        self, source: Source, raw: Mapping[str, Any], base: DeliveryPolicy
    ) -> dict[str, Destination]:
        built: dict[str, Destination] = {}
        for name, settings in raw.items():
            path: KeyPath = ("destinations", name)

            def make_policy(
                override: dict[str, Any], defaults: dict[str, Any], path: KeyPath = path
            ) -> DeliveryPolicy:
                return self.policy(source, override, (*path, "delivery"), base, defaults)

            context = BuildContext(
                base_dir=self.base_dir,
                default_policy=base,
                make_policy=make_policy,
                redactor=self.redactor,
            )
            try:
                built[name] = REGISTRY[settings["type"]].build(name, settings, context)
            except (KeyError, ValueError, TypeError) as exc:  # schema-valid but unusable
                self.report.error(source, path, f"cannot build destination: {exc}")
            for problem in context.problems:
                key_path: KeyPath = (*path, *split_key(problem.key))
                self.report.error(source, key_path, str(problem))
            for warning in context.warnings:
                self.report.warn(source, (*path, *split_key(warning.key)), str(warning))
        return built

    # ---- rules -----------------------------------------------------------------------------
    def rules(self, parts: list[RulesPart]) -> list[RuleItem]:
        built: list[RuleItem] = []
        seen: dict[str, str] = {}
        for source, base_path, items in parts:
            for i, item in enumerate(items):
                if (source.file, i) in self.report.broken_rules:
                    continue
                path = (*base_path, i)
                name = str(item["name"])
                if name in seen:
                    self.report.error(
                        source,
                        (*path, "name"),
                        f"duplicate rule name '{name}' (first at {seen[name]})",
                    )
                seen.setdefault(name, f"{source.file}:{source.line_of(path)}")
                when, when_source = self.condition(source, (*path, "when"), item.get("when"))
                events = item.get("events")
                if isinstance(events, str):
                    events = [events]
                to = item["to"]
                if isinstance(to, str):
                    to = [to]
                if not to:
                    self.report.error(
                        source, (*path, "to"), "names no destination; list at least one"
                    )
                rule = Rule(
                    name=name,
                    to=tuple(to),
                    events=frozenset(events) if events is not None else None,
                    when=when,
                    when_source=when_source,
                    description=str(item.get("description", "")),
                    stop=bool(item.get("stop", False)),
                    file=source.file,
                    line=source.line_of(path),
                )
                built.append(RuleItem(source, path, item, rule))
        return built

    def condition(
        self, source: Source, path: KeyPath, when_source: str | None
    ) -> tuple[Expression | None, str | None]:
        """A rule's `when`, compiled; (None, None) for an empty one (reported)."""
        if when_source is None:
            return None, None
        if not when_source.strip():
            self.report.error(source, path, "empty condition; remove `when` to match always")
            return None, None
        try:
            return compile_expression(when_source), when_source
        except JMESPathError as exc:
            self.report.error(source, path, f"invalid JMESPath: {describe_error(exc)}")
            return None, when_source


def unmatched(data: Mapping[str, Any]) -> tuple[str, ...]:
    """`unmatched`: one destination name or a list of them."""
    raw = data.get("unmatched") or []
    return tuple([raw] if isinstance(raw, str) else raw)

"""Config file -> `Config`. Reads files and the environment; otherwise pure.

Steps, each collecting every problem instead of stopping at the first:
  1. YAML -> data with the line of every key (config file, then each rules file)
  2. `${...}` interpolation inside string values (values become known secrets)
  3. JSON Schema (gateway/config/schema.json): unknown keys, types, required keys
  4. the model: durations, addresses, destinations (each type builds its own), rules with
     compiled JMESPath and templates, then cross-references (rule -> destination)
  5. warnings: unknown event types, fields no routed event carries, templates rendered
     against every sample they can receive
Only if no error was found is a `Config` returned; otherwise ConfigError lists them all.
"""

from __future__ import annotations

import glob
import hashlib
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from jmespath.exceptions import JMESPathError

from gateway import idwise
from gateway.auth import AuthConfig, BasicCredential, HeaderCredential, IPNetwork
from gateway.config.interpolate import InterpolationError, interpolate
from gateway.config.model import (
    AdminConfig,
    Config,
    LoggingConfig,
    ServerConfig,
    StorageConfig,
)
from gateway.config.report import Report, nearest, split_key
from gateway.config.schema import config_schema, rules_file_schema, validate
from gateway.config.secrets import register_value
from gateway.config.source import Path as KeyPath
from gateway.config.source import Source, YamlProblem, parse_yaml
from gateway.destinations import REGISTRY
from gateway.destinations.base import BuildContext, Destination
from gateway.errors import ConfigError, Problem
from gateway.events import parse_event
from gateway.jmes import body_fields, compile_expression, describe_error
from gateway.render import template_expressions
from gateway.retry import Backoff, DeliveryPolicy
from gateway.rules import Rule, RuleSet
from gateway.secret import Secret
from gateway.units import parse_duration, parse_rate, parse_size

DEFAULT_CONFIG = "config.yaml"
SERVER_DEFAULTS = ServerConfig()
ADMIN_DEFAULTS = AdminConfig()
STORAGE_DEFAULTS = StorageConfig()
ENV_CONFIG = "IDWISE_GATEWAY_CONFIG"


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(cli_value or environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


@dataclass
class _Loader:
    path: Path
    environ: Mapping[str, str]
    report: Report = field(default_factory=Report)
    sources: list[Source] = field(default_factory=list)
    digest: Any = field(default_factory=hashlib.sha256)
    rule_items: list[tuple[Source, KeyPath, dict[str, Any], Rule]] = field(default_factory=list)

    def error(self, source: Source, path: KeyPath, message: str) -> None:
        self.report.error(source, path, message)

    def warn(self, source: Source, path: KeyPath, message: str) -> None:
        self.report.warn(source, path, message)

    # ---- step 1 + 2 ------------------------------------------------------------------------
    def read(self, path: Path) -> Source | None:
        display = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            self.report.file_problem(display, 0, (), f"file not found (cwd {os.getcwd()})")
            return None
        except (OSError, UnicodeDecodeError) as exc:
            self.report.file_problem(display, 0, (), f"cannot read: {exc}")
            return None
        self.digest.update(display.encode() + b"\0" + text.encode() + b"\0")
        try:
            source = parse_yaml(text, display)
        except YamlProblem as exc:
            self.report.file_problem(display, exc.line, exc.path, str(exc))
            return None
        if not isinstance(source.data, dict):
            self.error(source, (), "the file must hold a mapping (key: value) at the top")
            return None
        source.data = self.interpolate(source, source.data, ())
        self.sources.append(source)
        return source

    def interpolate(self, source: Source, value: Any, path: KeyPath) -> Any:
        if isinstance(value, dict):
            return {k: self.interpolate(source, v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(source, v, (*path, i)) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        try:
            text, substituted = interpolate(
                value, self.environ, _read_secret_file(Path(os.path.abspath(self.path)).parent)
            )
        except InterpolationError as exc:
            self.error(source, path, str(exc))
            self.report.unresolved.add((source.file, path))
            return value
        register_value(path, value, text, substituted, source.data)
        for item in substituted:
            self.digest.update(item.encode() + b"\0")
        return text

    # ---- step 4 ----------------------------------------------------------------------------
    def duration(
        self, source: Source, data: Mapping[str, Any], path: KeyPath, key: str, default: float
    ) -> float:
        if key not in data or data[key] is None:
            return default
        try:
            return parse_duration(data[key])
        except ValueError as exc:
            self.error(source, (*path, key), str(exc))
            return default

    def networks(self, source: Source, values: list[str], path: KeyPath) -> tuple[IPNetwork, ...]:
        out: list[IPNetwork] = []
        for i, value in enumerate(values):
            try:
                out.append(ipaddress.ip_network(value.strip(), strict=False))
            except ValueError:
                self.error(
                    source,
                    (*path, i),
                    f"'{value}' is not an IP address or CIDR range (e.g. 203.0.113.0/24)",
                )
        return tuple(out)

    def policy(
        self,
        source: Source,
        raw: Mapping[str, Any],
        path: KeyPath,
        base: DeliveryPolicy,
        defaults: Mapping[str, Any] | None = None,
    ) -> DeliveryPolicy:
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
            self.error(source, (*bp, "initial"), "backoff.initial is larger than backoff.max")
        rate = base.rate_limit
        if "rate_limit" in merged:
            rate = None
            if merged["rate_limit"] is not None:
                try:
                    rate = parse_rate(merged["rate_limit"])
                except ValueError as exc:
                    self.error(source, (*path, "rate_limit"), str(exc))
        return DeliveryPolicy(
            max_attempts=int(merged.get("max_attempts", base.max_attempts)),
            backoff=backoff,
            max_age=self.duration(source, merged, path, "max_age", base.max_age),
            timeout=self.duration(source, merged, path, "timeout", base.timeout),
            concurrency=int(merged.get("concurrency", base.concurrency)),
            rate_limit=rate,
            ordered=bool(merged.get("ordered", base.ordered)),
        )

    def build(self) -> Config | None:
        main = self.read(self.path)
        if main is None:
            return None
        valid = validate(main, config_schema(), self.report)
        data = main.data
        base_dir = Path(os.path.abspath(self.path)).parent

        rule_sources: list[tuple[Source, KeyPath, list[Any]]] = [
            (main, ("rules",), data.get("rules") or [])
        ]
        patterns: list[str] = []
        for i, pattern in enumerate(data.get("rules_files") or []):
            if not isinstance(pattern, str):
                continue
            full = pattern if os.path.isabs(pattern) else str(base_dir / pattern)
            patterns.append(full)
            matches = sorted(glob.glob(full))
            if not matches and not glob.has_magic(pattern):
                self.error(main, ("rules_files", i), f"no such file: {full}")
            for match in matches:
                rules_source = self.read(Path(match))
                if rules_source is None:
                    continue
                if validate(rules_source, rules_file_schema(), self.report):
                    rule_sources.append(
                        (rules_source, ("rules",), rules_source.data.get("rules") or [])
                    )
        if not valid:
            return None

        server_raw = data.get("server") or {}
        server = ServerConfig(
            host=str(server_raw.get("host", SERVER_DEFAULTS.host)),
            port=int(server_raw.get("port", SERVER_DEFAULTS.port)),
            path=str(server_raw.get("path", SERVER_DEFAULTS.path)),
            max_body_bytes=self.size(
                main, server_raw, ("server", "max_body_bytes"), SERVER_DEFAULTS.max_body_bytes
            ),
            shutdown_grace=self.duration(
                main, server_raw, ("server",), "shutdown_grace", SERVER_DEFAULTS.shutdown_grace
            ),
        )
        admin_raw = data.get("admin") or {}
        admin = AdminConfig(
            host=str(admin_raw.get("host", ADMIN_DEFAULTS.host)),
            port=int(admin_raw.get("port", ADMIN_DEFAULTS.port)),
            token=Secret(admin_raw["token"]) if admin_raw.get("token") else None,
        )
        if admin.token is None and admin.host not in ("127.0.0.1", "::1", "localhost"):
            self.warn(
                main,
                ("admin", "host"),
                "the admin listener (metrics, reload) is reachable beyond this host without a "
                "token; set admin.token",
            )
        if admin.port == server.port and admin.port != 0:
            self.error(
                main,
                ("admin", "port"),
                "the admin listener needs its own port (never the public one)",
            )
        storage_raw = data.get("storage") or {}
        storage_path = Path(str(storage_raw.get("path", STORAGE_DEFAULTS.path)))
        if not storage_path.is_absolute():
            storage_path = base_dir / storage_path
        max_size = None
        if storage_raw.get("max_size") is not None:
            max_size = self.size(main, storage_raw, ("storage", "max_size"), 0) or None
        storage = StorageConfig(
            path=storage_path,
            retention=self.duration(
                main, storage_raw, ("storage",), "retention", STORAGE_DEFAULTS.retention
            ),
            busy_timeout=self.duration(
                main, storage_raw, ("storage",), "busy_timeout", STORAGE_DEFAULTS.busy_timeout
            ),
            max_size=max_size,
        )
        logging_raw = data.get("logging") or {}
        logging_config = LoggingConfig(
            format=str(logging_raw.get("format", "json")),
            level=str(logging_raw.get("level", "info")),
        )
        auth = self.auth(main, data.get("auth") or {})
        delivery = self.policy(main, data.get("delivery") or {}, ("delivery",), DeliveryPolicy())
        destinations = self.destinations(main, data.get("destinations") or {}, delivery, base_dir)
        rules = self.rules(rule_sources)
        unmatched_raw = data.get("unmatched") or []
        unmatched = tuple([unmatched_raw] if isinstance(unmatched_raw, str) else unmatched_raw)
        for i, name in enumerate(unmatched):
            if name not in destinations and name not in self.report.broken_destinations:
                self.error(main, ("unmatched", i), self.undefined(name, destinations))
        self.cross_check(rule_sources, rules, destinations)
        if self.report.has_errors:
            return None
        return Config(
            file=self.path,
            server=server,
            admin=admin,
            storage=storage,
            auth=auth,
            logging=logging_config,
            delivery=delivery,
            destinations=destinations,
            rules=RuleSet(rules),
            unmatched=unmatched,
            files=tuple(Path(s.file) for s in self.sources),
            rules_patterns=tuple(patterns),
            digest=self.digest.hexdigest(),
        )

    def size(self, source: Source, data: Mapping[str, Any], path: KeyPath, default: int) -> int:
        key = str(path[-1])
        if key not in data:
            return default
        try:
            return parse_size(data[key])
        except ValueError as exc:
            self.error(source, path, str(exc))
            return default

    def auth(self, source: Source, raw: Mapping[str, Any]) -> AuthConfig:
        basic = tuple(
            BasicCredential(Secret(c["username"]), Secret(c["password"]))
            for c in raw.get("basic") or []
            if c.get("username") and c.get("password")
        )
        for i, credential in enumerate(raw.get("basic") or []):
            if ":" in credential.get("username", ""):
                self.error(
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
            if header.get("name", "").lower() in (
                "authorization",
                "x-forwarded-for",
                "host",
                "content-length",
            ):
                self.error(
                    source,
                    ("auth", "headers", i, "name"),
                    f"'{header['name']}' cannot carry a custom credential",
                )
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
            self.error(
                source,
                ("auth",),
                "no credential is configured (all empty?); configure basic, bearer or headers, "
                "or set allow_unauthenticated: true to accept anyone",
            )
        return config

    def destinations(
        self, source: Source, raw: Mapping[str, Any], base: DeliveryPolicy, base_dir: Path
    ) -> dict[str, Destination]:
        built: dict[str, Destination] = {}
        for name, settings in raw.items():
            path: KeyPath = ("destinations", name)

            def make_policy(
                override: dict[str, Any], defaults: dict[str, Any], path: KeyPath = path
            ) -> DeliveryPolicy:
                return self.policy(source, override, (*path, "delivery"), base, defaults)

            context = BuildContext(base_dir=base_dir, default_policy=base, make_policy=make_policy)
            try:
                built[name] = REGISTRY[settings["type"]].build(name, settings, context)
            except (KeyError, ValueError, TypeError) as exc:  # schema-valid but unusable
                self.error(source, path, f"cannot build destination: {exc}")
            for problem in context.problems:
                key_path: KeyPath = (*path, *split_key(problem.key))
                self.error(source, key_path, str(problem))
        return built

    def rules(self, sources: list[tuple[Source, KeyPath, list[Any]]]) -> list[Rule]:
        rules: list[Rule] = []
        seen: dict[str, str] = {}
        for source, base_path, items in sources:
            for i, item in enumerate(items):
                if (source.file, i) in self.report.broken_rules:
                    continue
                path = (*base_path, i)
                name = str(item["name"])
                where = f"{source.file}:{source.line_of(path)}"
                if name in seen:
                    self.error(
                        source,
                        (*path, "name"),
                        f"duplicate rule name '{name}' (first at {seen[name]})",
                    )
                seen.setdefault(name, where)
                when = None
                when_source = item.get("when")
                if when_source is not None:
                    if not when_source.strip():
                        self.error(
                            source,
                            (*path, "when"),
                            "empty condition; remove `when` to match always",
                        )
                        when_source = None
                    else:
                        try:
                            when = compile_expression(when_source)
                        except JMESPathError as exc:
                            self.error(
                                source, (*path, "when"), f"invalid JMESPath: {describe_error(exc)}"
                            )
                events = item.get("events")
                if isinstance(events, str):
                    events = [events]
                to = item["to"]
                if isinstance(to, str):
                    to = [to]
                if not to:
                    self.error(source, (*path, "to"), "names no destination; list at least one")
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
                rules.append(rule)
                self.rule_items.append((source, path, item, rule))
        return rules

    def undefined(self, name: str, destinations: Mapping[str, Any]) -> str:
        hint = nearest(name, list(destinations))
        defined = ", ".join(sorted(destinations)) or "none"
        return f"destination '{name}' is not defined{hint} (defined: {defined})"

    def cross_check(
        self,
        sources: list[tuple[Source, KeyPath, list[Any]]],
        rules: list[Rule],
        destinations: Mapping[str, Destination],
    ) -> None:
        for source, path, item, rule in self.rule_items:
            for j, name in enumerate(rule.to):
                if name not in destinations and name not in self.report.broken_destinations:
                    to_path = (*path, "to", j) if isinstance(item["to"], list) else (*path, "to")
                    self.error(source, to_path, self.undefined(name, destinations))
            if rule.events is not None:
                raw_events = (
                    item["events"] if isinstance(item["events"], list) else [item["events"]]
                )
                for j, event_type in enumerate(raw_events):
                    if event_type not in idwise.EVENT_FIELDS:
                        hint = nearest(event_type, list(idwise.EVENT_TYPES))
                        self.warn(
                            source,
                            (*path, "events", j),
                            f"'{event_type}' is not a known IDWise event type{hint}",
                        )
            known = idwise.fields_of(
                tuple(e for e in (rule.events or ()) if e in idwise.EVENT_FIELDS) or None
            )
            if rule.when_source:
                scope = "the event types of this rule" if rule.events else None
                self.check_fields(source, (*path, "when"), [rule.when_source], known, scope)
        self.check_templates(sources, rules, destinations)

    def check_fields(
        self,
        source: Source,
        path: KeyPath,
        expressions: list[str],
        known: frozenset[str],
        scope: str | None,
    ) -> None:
        for expression in expressions:
            for name in body_fields(expression):
                if name not in known:
                    hint = nearest(name, sorted(known), prefix="body.")
                    self.warn(
                        source,
                        path,
                        f"body.{name} is not carried by {scope or 'any IDWise event'}{hint}",
                    )

    def check_templates(
        self,
        sources: list[tuple[Source, KeyPath, list[Any]]],
        rules: list[Rule],
        destinations: Mapping[str, Destination],
    ) -> None:
        """Render each destination against the sample of every event type it can receive."""
        main = sources[0][0]
        receives: dict[str, set[str] | None] = {}
        for rule in rules:
            for name in rule.to:
                if rule.events is None:
                    receives[name] = None
                elif receives.get(name, set()) is not None:
                    receives.setdefault(name, set()).update(rule.events)  # type: ignore[union-attr]
        for name, destination in destinations.items():
            types = receives.get(name, set()) if name in receives else set()
            event_types = (
                tuple(idwise.EVENT_TYPES)
                if types is None
                else tuple(t for t in sorted(types) if t in idwise.EVENT_FIELDS)
            )
            known = idwise.fields_of(event_types or None)
            written = main.data.get("destinations", {}).get(name, {})
            for key, template in destination.templates().items():
                if key.split(".")[0] not in written:
                    continue  # built-in default templates are written for every event type
                self.check_fields(
                    main,
                    ("destinations", name, *split_key(key)),
                    template_expressions(template),
                    known,
                    "the events routed here" if types else None,
                )
            for event_type in event_types or idwise.EVENT_TYPES:
                event = parse_event(idwise.sample_bytes(event_type))
                try:
                    destination.preview(event)
                except Exception as exc:  # a template that fails on real data fails `check`
                    self.error(
                        main,
                        ("destinations", name),
                        f"rendering the '{event_type}' sample fails: {exc}",
                    )


def _read_secret_file(base_dir: Path) -> Any:
    def read(path: str) -> str:
        full = Path(path) if os.path.isabs(path) else base_dir / path
        return full.read_text(encoding="utf-8")

    return read


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    """Build the whole config or raise ConfigError with every problem (warnings included)."""
    loader = _Loader(path=path, environ=os.environ if environ is None else environ)
    config = loader.build()
    if config is None:
        raise ConfigError(loader.report.problems)
    return replace(config, warnings=loader.report.warnings())


def check_config(
    path: Path, environ: Mapping[str, str] | None = None
) -> tuple[Config | None, list[Problem]]:
    """For `check`: the config (if valid) and every problem, warnings included."""
    loader = _Loader(path=path, environ=os.environ if environ is None else environ)
    config = loader.build()
    return config, loader.report.problems

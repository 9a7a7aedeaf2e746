"""Config file -> `Config`: runs the loading steps in order. Reads the config file, the
rules files it names and `${file:...}` secrets, and reads the environment; otherwise pure.

Steps, each collecting every problem in one `Report` instead of stopping at the first:
  1. read: YAML -> data with the line of every key (`source`), `${...}` interpolation
     (`interpolate`), credentials registered for redaction as they appear (`secrets`)
  2. `schema`: unknown keys, types, required keys (config file, then each rules file)
  3. `build`: the model's sections, destinations (each type builds its own) and rules
  4. `lint`: cross-references (rule -> destination) and event-type and field warnings
  5. `preview`: templates rendered against every sample they can receive
Only if no error was found is a `Config` returned; otherwise ConfigError lists them all.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import hmac
import os
import secrets
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway.config import lint, preview
from gateway.config.build import Builder, RulesPart, unmatched
from gateway.config.interpolate import InterpolationError, interpolate
from gateway.config.model import Config
from gateway.config.report import Report
from gateway.config.schema import config_schema, rules_file_schema, validate
from gateway.config.secrets import register_value
from gateway.config.source import Path as KeyPath
from gateway.config.source import Source, YamlProblem, parse_yaml
from gateway.errors import ConfigError, Problem
from gateway.retry import DeliveryPolicy
from gateway.rules import RuleSet
from gateway.secret import Redactor

#: the key of every config digest of this process: digests compare within a process (did a
#: reload change anything?) and mean nothing outside it
DIGEST_KEY = secrets.token_bytes(32)
DEFAULT_CONFIG = "config.yaml"
ENV_CONFIG = "IDWISE_GATEWAY_CONFIG"


def resolve_config_path(cli_value: str | None, environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(cli_value or environ.get(ENV_CONFIG) or DEFAULT_CONFIG)


def load_config(
    path: Path, environ: Mapping[str, str] | None = None, redactor: Redactor | None = None
) -> Config:
    """Build the whole config or raise ConfigError with every problem (warnings included).
    Credentials are registered with `redactor` (a fresh one if None), which the config
    keeps: pass one in to mask the problems of a config that does not load."""
    config, report = _load(path, os.environ if environ is None else environ, redactor)
    if config is None:
        raise ConfigError(report.problems)
    return replace(config, warnings=report.warnings())


def check_config(
    path: Path, environ: Mapping[str, str] | None = None, redactor: Redactor | None = None
) -> tuple[Config | None, list[Problem]]:
    """For `check`: the config (if valid) and every problem, warnings included."""
    config, report = _load(path, os.environ if environ is None else environ, redactor)
    return config, report.problems


def _load(
    path: Path, environ: Mapping[str, str], redactor: Redactor | None
) -> tuple[Config | None, Report]:
    reader = _Reader(path, environ, redactor or Redactor())
    main = reader.read(path)
    if main is None:
        return None, reader.report
    valid = validate(main, config_schema(), reader.report)
    rule_parts, patterns = reader.read_rules_files(main)
    if not valid:
        return None, reader.report
    return _assemble(reader, main, rule_parts, patterns), reader.report


def _assemble(
    reader: _Reader, main: Source, rule_parts: list[RulesPart], patterns: list[str]
) -> Config | None:
    """Steps 3 to 5 over schema-valid data; None if any error was found."""
    report, data = reader.report, main.data
    build = Builder(report, reader.base_dir, reader.redactor)
    server = build.server(main, data.get("server") or {})
    admin = build.admin(main, data.get("admin") or {}, server)
    storage = build.storage(main, data.get("storage") or {})
    logging_config = build.logging(data.get("logging") or {})
    auth = build.auth(main, data.get("auth") or {})
    delivery = build.policy(main, data.get("delivery") or {}, ("delivery",), DeliveryPolicy())
    destinations = build.destinations(main, data.get("destinations") or {}, delivery)
    rule_items = build.rules(rule_parts)
    rules = [item.rule for item in rule_items]
    fallback = unmatched(data)
    lint.check_unmatched(report, main, fallback, destinations)
    lint.check_rules(report, rule_items, destinations)
    preview.check_templates(report, main, rules, destinations)
    if report.has_errors:
        return None
    return Config(
        file=reader.path,
        server=server,
        admin=admin,
        storage=storage,
        auth=auth,
        logging=logging_config,
        delivery=delivery,
        destinations=destinations,
        rules=RuleSet(rules),
        unmatched=fallback,
        files=tuple(Path(s.file) for s in reader.sources),
        secret_files=tuple(dict.fromkeys(reader.secret_files)),
        rules_patterns=tuple(patterns),
        digest=reader.digest.hexdigest(),
        redactor=reader.redactor,
    )


@dataclass
class _Reader:
    """Step 1 for every file: read, parse, interpolate; keeps the digest over all of it."""

    path: Path
    environ: Mapping[str, str]
    redactor: Redactor
    report: Report = field(default_factory=Report)
    sources: list[Source] = field(default_factory=list)
    secret_files: list[Path] = field(default_factory=list)  # read by ${file:...}
    # keyed: the digest covers resolved secret values, and /-/reload shows it (an unkeyed
    # hash would let a weak secret be guessed offline)
    digest: Any = field(default_factory=lambda: hmac.new(DIGEST_KEY, digestmod=hashlib.sha256))

    @property
    def base_dir(self) -> Path:
        return Path(os.path.abspath(self.path)).parent

    def read(self, path: Path, rules_env: frozenset[str] | None = None) -> Source | None:
        """One file, parsed and interpolated; `rules_env` for a rules file (see
        `interpolate`: only those variables, no files, and all of it masked)."""
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
            self.report.error(source, (), "the file must hold a mapping (key: value) at the top")
            return None
        source.data = self.interpolate(source, source.data, (), rules_env)
        self.sources.append(source)
        return source

    def interpolate(
        self, source: Source, value: Any, path: KeyPath, rules_env: frozenset[str] | None = None
    ) -> Any:
        if isinstance(value, dict):
            return {k: self.interpolate(source, v, (*path, k), rules_env) for k, v in value.items()}
        if isinstance(value, list):
            return [self.interpolate(source, v, (*path, i), rules_env) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        try:
            text, substituted = interpolate(
                value, self.environ, _read_secret_file(self.base_dir, self.secret_files), rules_env
            )
            if substituted and _is_rule_name(path):
                raise InterpolationError(
                    "a rule's name cannot use ${...}: names are stored with every event and "
                    "shown in logs, metrics and the CLI; write the name out"
                )
        except InterpolationError as exc:
            self.report.error(source, path, str(exc))
            self.report.unresolved.add((source.file, path))
            return value
        if rules_env is not None:
            self.redactor.register(*substituted)  # whatever a rules file reads is masked
        # source.data is still the file as written here: secrets looks up destination types
        register_value(self.redactor, path, value, text, substituted, source.data)
        for item in substituted:
            self.digest.update(item.encode() + b"\0")
        return text

    def read_rules_files(self, main: Source) -> tuple[list[RulesPart], list[str]]:
        """The rule lists of the config file and of every schema-valid rules file, and the
        absolute `rules_files` patterns (for --watch)."""
        parts = [RulesPart(main, ("rules",), main.data.get("rules") or [])]
        patterns: list[str] = []
        allowed = frozenset(n for n in main.data.get("rules_env") or [] if isinstance(n, str))
        for i, pattern in enumerate(main.data.get("rules_files") or []):
            if not isinstance(pattern, str):
                continue
            full = pattern if os.path.isabs(pattern) else str(self.base_dir / pattern)
            patterns.append(full)
            matches = sorted(glob.glob(full))
            if not matches and not glob.has_magic(pattern):
                self.report.error(main, ("rules_files", i), f"no such file: {full}")
            for match in matches:
                source = self.read(Path(match), allowed)
                if source is not None and validate(source, rules_file_schema(), self.report):
                    parts.append(RulesPart(source, ("rules",), source.data.get("rules") or []))
        return parts, patterns


def _is_rule_name(path: KeyPath) -> bool:
    return len(path) == 3 and path[0] == "rules" and isinstance(path[1], int) and path[2] == "name"


#: a secret file is a token or a key, never this large; a bigger one is a mistake (or a
#: device) that must not be read into memory
MAX_SECRET_FILE = 64 * 1024


def _read_secret_file(base_dir: Path, seen: list[Path] | None = None) -> Callable[[str], str]:
    """`${file:PATH}`'s reader; each path read is added to `seen` (for --watch)."""

    def read(path: str) -> str:
        full = Path(path) if os.path.isabs(path) else base_dir / path
        if seen is not None:
            seen.append(full)
        # O_NONBLOCK: opening a FIFO must not wait for a writer; then only a regular file
        # is read (a FIFO, /dev/zero or /dev/stdin would block or never end)
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(errno.EINVAL, "not a regular file (a FIFO, device or folder)")
            chunks: list[bytes] = []
            size = 0
            while size <= MAX_SECRET_FILE and (chunk := os.read(fd, MAX_SECRET_FILE + 1)):
                chunks.append(chunk)
                size += len(chunk)
        finally:
            os.close(fd)
        if size > MAX_SECRET_FILE:
            raise OSError(errno.EFBIG, f"larger than {MAX_SECRET_FILE // 1024} KiB")
        return b"".join(chunks).decode("utf-8")

    return read

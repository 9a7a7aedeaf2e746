"""The configuration model: frozen dataclasses built once by `config.load`. Pure.

Nothing past the loader touches raw YAML; everything else reads these objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.auth import AuthConfig
from gateway.retry import DeliveryPolicy
from gateway.rules import Rule
from gateway.secret import Redactor, Secret

if TYPE_CHECKING:
    from gateway.destinations.base import Destination


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "0.0.0.0"
    port: int = 8080
    path: str = "/webhooks/idwise"
    max_body_bytes: int = 65536
    shutdown_grace: float = 10.0
    # a connection must complete a request head within this of opening or of its last
    # answer (slow and idle clients), and at most this many are open at once
    idle_timeout: float = 15.0
    max_connections: int = 512


@dataclass(frozen=True, slots=True)
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 9091
    token: Secret | None = None  # an operator token
    #: (token, role) with role "viewer" or "operator" (`admin.tokens`), beside `token`
    tokens: tuple[tuple[Secret, str], ...] = ()
    #: signs console sessions on every replica alike (none: a random key per process)
    session_key: Secret | None = None


@dataclass(frozen=True, slots=True)
class StorageConfig:
    path: Path = Path("data/gateway.db")
    retention: float = 30 * 86400.0
    busy_timeout: float = 5.0
    max_size: int | None = None  # bytes; the store answers 503 ("full") beyond it
    #: full: every commit is fsynced (a 200 survives a power loss); process: written to the
    #: OS only (survives a crash or kill of the gateway, not of the machine). SQLite only.
    durability: str = "full"
    # ---- backend: postgres (several replicas on one database)
    backend: str = "sqlite"  # sqlite | postgres
    dsn: Secret | None = None  # postgres only; a secret (it carries the password)
    pool_min: int = 2
    pool_max: int = 10
    connect_timeout: float = 30.0  # how long `serve` keeps trying to reach it at start
    lease_margin: float = 30.0  # a claim lasts the attempt timeout plus this
    min_free: int = 8 * 1024 * 1024  # bytes free on the file system, below which not ready


@dataclass(frozen=True, slots=True)
class LoggingConfig:
    format: str = "json"
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    file: Path
    server: ServerConfig
    admin: AdminConfig
    storage: StorageConfig
    auth: AuthConfig
    logging: LoggingConfig
    delivery: DeliveryPolicy
    destinations: Mapping[str, Destination]
    rules: tuple[Rule, ...]
    unmatched: tuple[str, ...]
    files: tuple[Path, ...]  # every file read (config + rules files), for --watch
    rules_patterns: tuple[str, ...]  # absolute rules_files globs, so --watch sees new files
    digest: str  # HMAC-SHA256 (a per-process key) over the files and the resolved values
    # files read by ${file:...} (mounted Secrets): --watch reloads when one is rotated
    secret_files: tuple[Path, ...] = ()
    warnings: tuple[str, ...] = ()
    # the credentials this config brought, for everything it makes print or log
    redactor: Redactor = field(default_factory=Redactor, compare=False, repr=False)

    def restart_only_changes(self, new: Config) -> list[str]:
        """Settings a reload cannot apply to a running process."""
        changes = []
        if (self.server.host, self.server.port) != (new.server.host, new.server.port):
            changes.append("server.host/server.port")
        if self.server.path != new.server.path:
            changes.append("server.path")
        listening = (self.server.idle_timeout, self.server.max_connections)
        if listening != (new.server.idle_timeout, new.server.max_connections):
            changes.append("server.idle_timeout/max_connections")
        if (self.admin.host, self.admin.port) != (new.admin.host, new.admin.port):
            changes.append("admin.host/admin.port")
        old_store = (
            self.storage.path,
            self.storage.busy_timeout,
            self.storage.max_size,
            self.storage.durability,
        )
        if old_store != (
            new.storage.path,
            new.storage.busy_timeout,
            new.storage.max_size,
            new.storage.durability,
        ):
            changes.append("storage.path/busy_timeout/max_size/durability")
        old_pg = (
            self.storage.backend,
            self.storage.dsn,
            self.storage.pool_min,
            self.storage.pool_max,
        )
        if old_pg != (
            new.storage.backend,
            new.storage.dsn,
            new.storage.pool_min,
            new.storage.pool_max,
        ):
            changes.append("storage.backend/dsn/pool")
        if self.storage.min_free != new.storage.min_free:
            changes.append("storage.min_free")
        if self.logging != new.logging:
            changes.append("logging")
        return changes

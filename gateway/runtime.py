"""The reload coordinator: owns the live config and every way it changes. Reads files; no
network.

A reload builds the complete new Config (parse, validate, compile rules and templates) off
the event loop, and only then replaces one reference. Requests read `runtime.current` once,
so each request is routed entirely by one config; events accepted before a swap keep the
routing they got (their delivery rows are already committed).

Reloads come from SIGHUP (`request_reload`: a burst collapses into one reload), from the
admin endpoint (`reload`), and from the `--watch` poller, which compares the files' content.
After a successful swap the reload metrics are set and every subscriber (the delivery engine)
is told.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.config.load import load_config
from gateway.config.model import Config
from gateway.errors import ConfigError
from gateway.metrics import Metrics

log = logging.getLogger("gateway.runtime")

WATCH_INTERVAL = 1.0

Subscriber = Callable[[Config], None]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    digest: str
    errors: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    changed: bool = True


@dataclass(frozen=True, slots=True)
class ReloadRecord:
    """The last reload and how it ended (the console shows it)."""

    at: float
    source: str
    result: ReloadResult


class Runtime:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.current = config
        self.loaded_at = time.time()  # when the config in force was built
        self.last_reload: ReloadRecord | None = None
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._subscribers: list[Subscriber] = []
        self._requested = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        metrics.reload_ok.set(1)
        metrics.reload_time.set(time.time())
        metrics.prime(config.destinations)  # every series exists at 0, so alerts see the first

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call `subscriber(new_config)` after every successful reload; returns the undo."""
        self._subscribers.append(subscriber)
        return lambda: self._subscribers.remove(subscriber)

    async def reload(self, source: str) -> ReloadResult:
        async with self._lock:  # concurrent requests wait for, then repeat, one reload
            result = await self._reload(source)
        self.last_reload = ReloadRecord(time.time(), source, result)
        self._metrics.reload_ok.set(1 if result.ok else 0)
        if result.ok:
            self.loaded_at = self.last_reload.at
            self._metrics.reload_time.set(time.time())
            self._metrics.prime(self.current.destinations)  # a new destination's series at 0
            for subscriber in list(self._subscribers):
                try:
                    subscriber(self.current)
                except Exception:  # one subscriber's bug must not undo a good reload
                    log.exception("reload subscriber failed")
        return result

    # ---- SIGHUP and --watch --------------------------------------------------------------
    def request_reload(self) -> None:
        """Signal-safe: the reloader task picks it up; a burst becomes one reload."""
        self._requested.set()

    def start(self, *, watch: bool = False) -> None:
        self._tasks.append(asyncio.create_task(self._reload_on_request(), name="reloader"))
        if watch:
            self._tasks.append(asyncio.create_task(self._watch(), name="watcher"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _reload_on_request(self) -> None:
        while True:
            await self._requested.wait()
            self._requested.clear()  # a burst of SIGHUPs collapses into this one reload
            try:
                await self.reload("signal")
            except Exception:  # a reload must never stop later reloads
                log.exception("reload failed")

    async def _watch(self) -> None:
        seen = content_digest(_watched(self.current), self.current.rules_patterns)
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            current = self.current
            digest = await asyncio.to_thread(
                content_digest, _watched(current), current.rules_patterns
            )
            if digest != seen:
                seen = digest
                log.info("config files changed; reloading")
                self._requested.set()

    # ---- the swap ------------------------------------------------------------------------
    async def _reload(self, source: str) -> ReloadResult:
        old = self.current
        try:
            # the live redactor: a secret read by a reload that fails is masked all the same
            new = await asyncio.to_thread(load_config, old.file, None, old.redactor)
        except ConfigError as exc:
            return self._rejected(source, old, tuple(str(p) for p in exc.problems))
        except Exception as exc:  # e.g. PermissionError on a CA file: keep serving
            log.exception("config reload failed unexpectedly")
            return self._rejected(source, old, (f"{old.file}: {type(exc).__name__}: {exc}",))
        restart = tuple(old.restart_only_changes(new))
        for setting in restart:
            log.warning(
                "setting changed but needs a restart to apply; the old value stays",
                extra={"fields": {"setting": setting}},
            )
        self.current = _keep_restart_only(old, new)
        log.info(
            "config reloaded",
            extra={
                "fields": {
                    "source": source,
                    "digest": new.digest[:12],
                    "rules": len(new.rules),
                    "destinations": len(new.destinations),
                    "changed": new.digest != old.digest,
                }
            },
        )
        return ReloadResult(True, new.digest, (), restart, new.digest != old.digest)

    def _rejected(self, source: str, old: Config, messages: tuple[str, ...]) -> ReloadResult:
        for message in messages:
            log.error(
                "config reload rejected",
                extra={"fields": {"problem": message, "source": source}},
            )
        log.error(
            "config reload failed; the previous config stays active",
            extra={"fields": {"errors": len(messages), "source": source}},
        )
        return ReloadResult(False, old.digest, messages)


def _keep_restart_only(old: Config, new: Config) -> Config:
    """Listeners, the open store and logging cannot change under a running process: the
    live config keeps showing the values actually in effect."""
    server = replace(
        new.server,
        host=old.server.host,
        port=old.server.port,
        path=old.server.path,
        idle_timeout=old.server.idle_timeout,
        max_connections=old.server.max_connections,
    )
    admin = replace(new.admin, host=old.admin.host, port=old.admin.port)
    return replace(new, server=server, admin=admin, storage=old.storage, logging=old.logging)


def _watched(config: Config) -> tuple[Path, ...]:
    """The config and rules files, and the secret files they read: a rotated Kubernetes
    Secret is a reload, not a restart."""
    return config.files + config.secret_files


def content_digest(files: tuple[Path, ...], patterns: tuple[str, ...]) -> str:
    """Hash of the config and rule files' *content* (for --watch): robust to editors that
    replace files and to Kubernetes ConfigMap symlink swaps, which change no mtime we see."""
    digest = hashlib.sha256()
    paths = set(files)
    for pattern in patterns:
        paths.update(Path(p) for p in glob.glob(pattern))
    for path in sorted(paths):
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"<missing>")
    return digest.hexdigest()

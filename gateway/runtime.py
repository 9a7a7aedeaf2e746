"""The live configuration and its validate-then-swap reload. Reads files; no network.

A reload builds the complete new Config (parse, validate, compile rules and templates) off
the event loop, and only then replaces one reference. Requests read `holder.current` once,
so each request is routed entirely by one config; events accepted before a swap keep the
routing they got (their delivery rows are already committed).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from dataclasses import dataclass, replace
from pathlib import Path

from gateway.config.load import load_config
from gateway.config.model import Config
from gateway.errors import ConfigError

log = logging.getLogger("gateway.runtime")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    ok: bool
    digest: str
    errors: tuple[str, ...] = ()
    restart_needed: tuple[str, ...] = ()
    changed: bool = True


class RuntimeHolder:
    def __init__(self, config: Config) -> None:
        self.current = config
        self._lock = asyncio.Lock()

    async def reload(self, source: str) -> ReloadResult:
        async with self._lock:  # concurrent requests wait for, then repeat, one reload
            old = self.current
            try:
                new = await asyncio.to_thread(load_config, old.file)
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
    server = replace(new.server, host=old.server.host, port=old.server.port, path=old.server.path)
    admin = replace(new.admin, host=old.admin.host, port=old.admin.port)
    return replace(new, server=server, admin=admin, storage=old.storage, logging=old.logging)


def content_digest(files: tuple[Path, ...], patterns: tuple[str, ...]) -> str:
    """Hash of the config and rule files' *content* (for --watch): robust to editors that
    replace files and to Kubernetes ConfigMap symlink swaps, which change no mtime we see."""
    import glob

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

"""Script destination: run a local program per event. I/O in `send`.

Never a shell: `command` is an argv list. The program gets the webhook's raw request body
on stdin and a minimal environment (PATH, LANG, HOME, the IDWISE_* variables and the
configured `env`), never the gateway's own environment, which holds secrets. It runs in its
own process group so a timeout kills it and everything it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.destinations.base import (
    BuildContext,
    DestinationProblem,
    SecretKeys,
    SendContext,
    Sent,
    local_shortage,
)
from gateway.errors import LocalResourceError, PermanentDeliveryError, RetryableDeliveryError
from gateway.events import Event
from gateway.render import Template, render_text
from gateway.retry import DeliveryPolicy
from gateway.secret import Redactor
from gateway.units import parse_duration

#: a script's env carries its credentials (API_TOKEN, long literal values)
SECRETS = SecretKeys(named=frozenset({"env"}), long=frozenset({"env"}))

EX_TEMPFAIL = 75
OUTPUT_LIMIT = 4096
KILL_GRACE = 1.0
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}


@dataclass(frozen=True, slots=True)
class ScriptDestination:
    name: str
    policy: DeliveryPolicy
    command: tuple[str, ...]
    timeout: float
    env: tuple[tuple[str, Template], ...] = ()
    retry_exit_codes: frozenset[int] = frozenset({EX_TEMPFAIL})
    cwd: Path | None = None
    redactor: Redactor = field(default_factory=Redactor, compare=False, repr=False)
    type: str = "script"

    def templates(self) -> dict[str, Template]:
        return {f"env.{k}": v for k, v in self.env}

    def environment(self, event: Event) -> dict[str, str]:
        env = {key: os.environ.get(key, default) for key, default in BASE_ENV.items()}
        env.update(
            IDWISE_EVENT=event.type,
            IDWISE_EVENT_ID=event.event_id or event.dedupe_key,
            IDWISE_JOURNEY_ID=event.journey_id or "",
            IDWISE_REFERENCE_NO=event.reference_no or "",
        )
        for key, template in self.env:
            env[key] = render_text(template, event.document)
        return env

    def preview(self, event: Event) -> dict[str, Any]:
        return {
            "argv": list(self.command),
            "cwd": str(self.cwd) if self.cwd else None,
            "env": {k: self.redactor.redact(v) for k, v in self.environment(event).items()},
            "stdin": "the webhook's raw request body",
            "timeout": self.timeout,
        }

    async def send(self, event: Event, context: SendContext) -> Sent:
        try:
            process = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self.environment(event),
                cwd=self.cwd,
                start_new_session=True,  # own process group: a timeout kills all of it
            )
        except FileNotFoundError:
            raise PermanentDeliveryError(
                "script_not_found", f"no such program: {self.command[0]}"
            ) from None
        except PermissionError:
            raise PermanentDeliveryError(
                "script_not_executable", f"cannot execute {self.command[0]}"
            ) from None
        except OSError as exc:
            if local_shortage(exc):  # our descriptors or processes ran out, not the script
                raise LocalResourceError(
                    "local_resources", f"cannot start {self.command[0]}: {exc.strerror}"
                ) from None
            raise RetryableDeliveryError("script_spawn", str(exc)) from None
        return await self._supervise(process, event.raw)

    async def _supervise(self, process: asyncio.subprocess.Process, stdin: bytes) -> Sent:
        assert process.stdin and process.stdout and process.stderr
        stdout = asyncio.ensure_future(_read_bounded(process.stdout))
        stderr = asyncio.ensure_future(_read_bounded(process.stderr))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        timed_out = False
        try:
            try:
                # a program that exited without reading its input closed the pipe already:
                # uvloop raises RuntimeError on a write to it (asyncio ignores the write)
                if not process.stdin.is_closing():
                    process.stdin.write(stdin)
                await asyncio.wait_for(process.stdin.drain(), self.timeout)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the program need not read its input
            except TimeoutError:
                timed_out = True
            with contextlib.suppress(OSError):
                process.stdin.close()
            if not timed_out:
                try:
                    await asyncio.wait_for(_exited(process), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    timed_out = True
            if timed_out:
                await _kill_group(process)
            else:
                # children that outlive the program and hold its pipes are cut off at the deadline
                try:
                    await asyncio.wait_for(
                        asyncio.gather(stdout, stderr, return_exceptions=True),
                        max(0.05, deadline - loop.time()),
                    )
                except TimeoutError:
                    _signal_group(process.pid, signal.SIGKILL)
        finally:
            if process.returncode is None:
                await _kill_group(process)
            _signal_group(process.pid, signal.SIGKILL)  # leftovers of a timed-out group
        out = await _result(stdout)
        err = await _result(stderr)
        output = self.redactor.redact(_combine(out, err))
        code = process.returncode
        if timed_out:
            raise RetryableDeliveryError(
                "timeout", f"killed after {self.timeout:g}s", output=output
            )
        if code == 0:
            return Sent("exit 0", output=output)
        if code is not None and code < 0:
            name = (
                signal.Signals(-code).name
                if -code in signal.Signals._value2member_map_
                else str(-code)
            )
            raise RetryableDeliveryError("script_signal", f"killed by {name}", output=output)
        if code in self.retry_exit_codes:
            raise RetryableDeliveryError(f"exit_{code}", f"exit {code}", output=output)
        raise PermanentDeliveryError(f"exit_{code}", f"exit {code}", output=output)


async def _exited(process: asyncio.subprocess.Process) -> None:
    """The program's own exit. (`process.wait()` on Python 3.11 also waits for its pipes,
    which a background child may hold open long after the program exited.)"""
    while process.returncode is None:  # noqa: ASYNC110 - set by the child watcher, no event
        await asyncio.sleep(0.01)


async def _read_bounded(stream: asyncio.StreamReader) -> bytes:
    """Keep the first OUTPUT_LIMIT bytes and drain the rest so the child never blocks."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < OUTPUT_LIMIT:
            kept += chunk[: OUTPUT_LIMIT - len(kept)]
    return bytes(kept)


async def _result(task: asyncio.Future[bytes]) -> bytes:
    if not task.done():
        task.cancel()
    try:
        return await task
    except (asyncio.CancelledError, Exception):
        return b""


def _combine(out: bytes, err: bytes) -> str:
    parts = []
    if out:
        parts.append("stdout: " + out.decode("utf-8", "replace"))
    if err:
        parts.append("stderr: " + err.decode("utf-8", "replace"))
    return "\n".join(parts)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def _kill_group(process: asyncio.subprocess.Process) -> None:
    _signal_group(process.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(process.wait(), KILL_GRACE)
    _signal_group(process.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        await process.wait()


def _writable_by_others(program: str) -> list[DestinationProblem]:
    """The program, or the folder it sits in, writable by every local user: anyone could
    change what the gateway runs, with the payloads and the env's credentials. (A folder
    with the sticky bit, like /tmp, lets nobody replace another user's file.)"""
    found = []
    try:
        info = os.stat(program)
        folder = os.stat(os.path.dirname(program) or ".")
    except OSError:
        return []  # a missing program is an error reported elsewhere
    if info.st_mode & stat.S_IWOTH:
        found.append(
            DestinationProblem(
                "command[0]",
                f"{program} is writable by other users (chmod o-w): anyone on this host "
                "could change what the gateway runs",
            )
        )
    if folder.st_mode & stat.S_IWOTH and not folder.st_mode & stat.S_ISVTX:
        found.append(
            DestinationProblem(
                "command[0]",
                f"the folder of {program} is writable by other users (chmod o-w): anyone on "
                "this host could replace the program",
            )
        )
    return found


def build(name: str, raw: dict[str, Any], ctx: BuildContext) -> ScriptDestination:
    command = [str(part) for part in raw["command"]]
    program = command[0]
    if "/" in program and not Path(program).is_absolute():
        command[0] = str(ctx.path(program))
    if "/" in command[0] and not os.access(command[0], os.X_OK):
        ctx.problems.append(
            DestinationProblem(
                "command[0]", f"{command[0]} does not exist or is not executable (chmod +x)"
            )
        )
    if "/" in command[0]:
        ctx.warnings.extend(_writable_by_others(command[0]))
    policy = ctx.policy(raw)
    timeout = policy.timeout
    if "timeout" in raw:
        try:
            timeout = parse_duration(raw["timeout"])
        except ValueError as exc:
            ctx.problems.append(DestinationProblem("timeout", str(exc)))
    env: list[tuple[str, Template]] = []
    for key, value in (raw.get("env") or {}).items():
        env.append((key, ctx.compile(f"env.{key}", value, "")))
    codes = frozenset(int(c) for c in raw.get("retry_exit_codes", ())) | {EX_TEMPFAIL}
    return ScriptDestination(
        name=name,
        policy=policy,
        command=tuple(command),
        timeout=timeout,
        env=tuple(env),
        retry_exit_codes=codes,
        cwd=ctx.path(raw["cwd"]) if raw.get("cwd") else ctx.base_dir,
        redactor=ctx.redactor,
    )

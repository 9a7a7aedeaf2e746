"""`store copy`: a SQLite store moved into PostgreSQL (events, deliveries with their state,
attempts; idempotent). The copying is the PostgreSQL backend's (store/postgres/copy.py);
this parses the two ends and prints the counts."""

from __future__ import annotations

import argparse
import asyncio
import urllib.parse
from pathlib import Path

from gateway.cli.config_commands import load
from gateway.cli.output import CommandError, Output
from gateway.errors import StoreError


def cmd_store_copy(args: argparse.Namespace, out: Output) -> int:
    """`--from sqlite:PATH [--to postgres:DSN]`: the target defaults to the config's
    storage, which keeps the password out of the process list."""
    from gateway.store.postgres.copy import copy_store

    if not args.source.startswith("sqlite:"):
        raise CommandError("--from must be sqlite:PATH", 2)
    source = Path(args.source.removeprefix("sqlite:")).expanduser()
    if args.target is not None:
        if not args.target.startswith(("postgres:", "postgresql:")):
            raise CommandError("--to must be postgres:DSN", 2)
        dsn = args.target.split(":", 1)[1]
        if not dsn.startswith(("postgres://", "postgresql://")):
            dsn = args.target  # postgresql://... given whole
        password = urllib.parse.urlsplit(dsn).password
        out.redactor.register(dsn, *([password] if password else []))
    else:
        config = load(args, out)
        if config is None:
            raise CommandError("the config does not load (see above)")
        if config.storage.dsn is None or config.storage.backend != "postgres":
            raise CommandError("no --to, and the config's storage is not postgres", 2)
        dsn = config.storage.dsn.reveal()
    try:
        copied = asyncio.run(copy_store(source, dsn))
    except StoreError as exc:
        raise CommandError(f"store error: {exc}") from None
    out.line(
        f"copied {copied.events} events, {copied.deliveries} deliveries, {copied.attempts}"
        f" attempts, {copied.duplicates} duplicate receipts"
        f" ({copied.skipped_events} events were already there)"
    )
    return 0

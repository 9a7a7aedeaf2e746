"""The audit trail: one log line per console action (who, what, how many). Does I/O (the
log). `who` is the role and the token's fingerprint, never the token."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from gateway.logs import log_fields
from gateway.web.console.render import SESSION_KEY
from gateway.web.console.session import Session

log = logging.getLogger("gateway.audit")


def audit(request: web.Request, action: str, count: int | None = None, **details: Any) -> None:
    session: Session | None = request.get(SESSION_KEY)
    fields: dict[str, Any] = {
        "msg_kind": "audit",
        "who": session.principal.who if session is not None else "anonymous",
        "action": action,
        "remote": request.remote,
    }
    if count is not None:
        fields["count"] = count
    fields.update({key: value for key, value in details.items() if value not in (None, "", ())})
    log_fields(log, logging.INFO, "console action", fields)

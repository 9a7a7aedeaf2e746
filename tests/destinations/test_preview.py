"""`preview(event)` (what `route` prints): the rendered output of each type, secrets masked,
nothing sent; and what it shows is what `send` then transmits."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.events import parse_event
from tests.support.destinations import Harness
from tests.support.payloads import payload
from tests.support.sinks import SLACK_TOKEN
from tests.support.smtp import PASSWORD, USERNAME
from tests.support.tls import Certificates

pytestmark = pytest.mark.timeout(15)

RAW = payload("AML Monitor Update")
EVENT = parse_event(RAW)


def shown(preview: dict[str, Any]) -> str:
    return json.dumps(preview, ensure_ascii=False, default=str)


async def test_slack_preview_hides_the_webhook_path(harness: Harness) -> None:
    server = await harness.slack()
    destination = harness.destination(
        {
            "type": "slack",
            "url": server.url,
            "text": "{{ event }}: {{ body.systemDecision }} <!channel-free> {{ body.referenceNo }}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "{{ body.journeyId }}"}}
            ],
        }
    )
    preview = destination.preview(EVENT)
    assert server.received == []  # a preview sends nothing
    text = shown(preview)
    assert SLACK_TOKEN not in text
    assert "/services/" not in text
    assert preview["url"].startswith(f"http://127.0.0.1:{server.port}")
    assert preview["url"].endswith("****")
    assert preview["json"]["text"] == "AML Monitor Update: Refer <!channel-free> ACC-2025-0071"
    assert preview["json"]["blocks"][0]["text"]["text"] == "ec42c44b601bfc85534e47ae"
    await harness.send(destination, RAW)
    assert server.received[0].json() == preview["json"]


async def test_slack_preview_of_default_text(harness: Harness) -> None:
    server = await harness.slack()
    destination = harness.destination({"type": "slack", "url": server.url})
    preview = destination.preview(EVENT)
    assert "ACC-2025-0071" in preview["json"]["text"]
    await harness.send(destination, RAW)
    assert server.received[0].json() == preview["json"]


@pytest.mark.parametrize("auth_header", ["Authorization", "authorization"])
async def test_http_preview_masks_credentials(harness: Harness, auth_header: str) -> None:
    sink = await harness.sink()
    secret = "whsec_" + base64.b64encode(bytes(range(50, 82))).decode()
    destination = harness.destination(
        {
            "type": "http",
            "url": sink.url + "?key=url-query-secret-991",
            "headers": {
                auth_header: "Bearer preview-bearer-secret-55",
                "X-Api-Key": "preview-api-key-secret-66",
                "X-Journey": "{{ body.journeyId }}",
            },
            "sign": {"secret": secret},
        }
    )
    preview = destination.preview(EVENT)
    assert sink.received == []
    text = shown(preview)
    for leaked in (
        "preview-bearer-secret-55",
        "preview-api-key-secret-66",
        "url-query-secret-991",
        secret,
        secret.removeprefix("whsec_"),
    ):
        assert leaked not in text
    assert preview["method"] == "POST"
    assert preview["headers"][auth_header] == "****"
    assert preview["headers"]["X-Journey"] == "ec42c44b601bfc85534e47ae"
    assert preview["headers"]["Content-Type"] == "application/json"
    assert preview["headers"]["Idempotency-Key"] == "8284b4fe-2619-4d3e-b2f1-4a48341169d1"
    assert "v1," not in preview["headers"]["webhook-signature"]
    assert preview["body"] == json.loads(RAW)
    await harness.send(destination, RAW)
    received = sink.received[0]
    assert received.body == RAW
    assert received.headers["X-Journey"] == preview["headers"]["X-Journey"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://risk:8000/idwise", "http://risk:8000/idwise"),  # no secret in it: all shown
        ("https://user:pw-991@risk.internal/v1/hook", "https://****@risk.internal/v1/hook"),
        ("http://risk/hook?key=abc123&env=prod&flag", "http://risk/hook?key=****&env=****&flag"),
        ("http://[::1]:9000/a#frag", "http://[::1]:9000/a"),
        ("http://risk/hooks/${IDWG_PATH_TOKEN}/in", "http://risk/hooks/****/in"),
        ("${IDWG_WHOLE_URL}", "http://risk:8000/from-env"),
    ],
)
async def test_http_preview_url_masks_only_what_can_be_a_credential(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, url: str, expected: str
) -> None:
    """`route` shows where a request would go (scheme, host, port, path); userinfo, query
    values and configured secrets (here one from the environment in the path) are masked."""
    monkeypatch.setenv("IDWG_PATH_TOKEN", "path-token-secret-77")
    monkeypatch.setenv("IDWG_WHOLE_URL", "http://risk:8000/from-env")
    destination = harness.destination({"type": "http", "url": url})
    assert destination.preview(EVENT)["url"] == expected


async def test_http_preview_of_templated_body(harness: Harness) -> None:
    sink = await harness.sink()
    destination = harness.destination(
        {
            "type": "http",
            "url": sink.url,
            "body": {
                "ref": "{{ body.referenceNo }}",
                "version": "{{ body.updatedAMLVersionNumber }}",
            },
        }
    )
    preview = destination.preview(EVENT)
    assert preview["body"] == {"ref": "ACC-2025-0071", "version": 2}
    await harness.send(destination, RAW)
    assert sink.received[0].json() == preview["body"]


async def test_email_preview(harness: Harness, certificates: Certificates) -> None:
    server = harness.smtp(starttls=certificates.server_context(), auth=True)
    destination = harness.destination(
        {
            "type": "email",
            "host": "127.0.0.1",
            "port": server.port,
            "security": "starttls",
            "ca_file": str(certificates.cert),
            "username": USERNAME,
            "password": PASSWORD,
            "from": "gateway@bank.test",
            "to": ["compliance@bank.test"],
            "cc": ["audit@bank.test"],
            "subject": "[{{ body.systemDecision }}] {{ body.referenceNo }}",
            "text": "AML version {{ body.updatedAMLVersionNumber }}",
            "html": "<b>{{ body.referenceNo }}</b>",
        }
    )
    preview = destination.preview(EVENT)
    assert server.handler.rcpt_seen == []
    assert PASSWORD not in shown(preview)
    assert preview["subject"] == "[Refer] ACC-2025-0071"
    assert preview["text"] == "AML version 2"
    assert preview["html"] == "<b>ACC-2025-0071</b>"
    assert preview["to"] == ["compliance@bank.test"]
    assert preview["cc"] == ["audit@bank.test"]
    assert preview["from"] == "gateway@bank.test"
    await harness.send(destination, RAW)
    assert server.delivered[0].message["Subject"] == preview["subject"]


async def test_script_preview(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_SECRET_XYZ", "gw-secret-in-preview-0042")
    monkeypatch.setenv("SCRIPT_TOKEN", "script-token-secret-0043")
    marker = tmp_path / "ran"
    program = harness.script("notify.sh", f"touch '{marker}'\n")
    destination = harness.destination(
        {
            "type": "script",
            "command": [str(program), "--verbose"],
            "timeout": "2s",
            "env": {"API_TOKEN": "${SCRIPT_TOKEN}", "REF": "{{ body.referenceNo }}"},
        }
    )
    preview = destination.preview(EVENT)
    assert not marker.exists()  # a preview runs nothing
    text = shown(preview)
    assert "script-token-secret-0043" not in text
    assert "gw-secret-in-preview-0042" not in text
    assert "GATEWAY_SECRET_XYZ" not in text
    assert preview["argv"] == [str(program), "--verbose"]
    assert preview["env"]["IDWISE_EVENT"] == "AML Monitor Update"
    assert preview["env"]["IDWISE_REFERENCE_NO"] == "ACC-2025-0071"
    assert preview["env"]["REF"] == "ACC-2025-0071"
    assert preview["env"]["API_TOKEN"] == "****"
    assert preview["timeout"] == 2.0

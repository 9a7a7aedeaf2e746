"""`{{ jmespath }}` templates: types kept by a lone placeholder, text rendering, Slack escaping,
and properties over arbitrary payloads (also through the shipped destinations' previews)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import idwise
from gateway.config.load import load_config
from gateway.config.model import Config
from gateway.destinations.email import DEFAULT_SUBJECT, DEFAULT_TEXT
from gateway.destinations.slack import escape_mrkdwn
from gateway.events import parse_event
from gateway.render import TemplateError, compile_template, compile_text, render, render_text
from tests.support.config import ROOT, base_config, write_config
from tests.support.payloads import payload

DOC = {
    "event": "AML Monitor Update",
    "body": {
        "n": 5,
        "f": 1.5,
        "zero": 0,
        "yes": True,
        "no": False,
        "nothing": None,
        "text": "hello",
        "list": [1, "two", None],
        "obj": {"b": 2, "a": 1},
        "empty": "",
        "mention": "<!channel> & <@U123>",
        "mentions": ["<!here>", {"deep": "<b>"}, 7],
    },
}


@pytest.mark.parametrize(
    ("template", "value"),
    [
        ("{{ body.n }}", 5),
        ("{{body.n}}", 5),
        ("{{ body.f }}", 1.5),
        ("{{ body.zero }}", 0),
        ("{{ body.yes }}", True),
        ("{{ body.no }}", False),
        ("{{ body.nothing }}", None),
        ("{{ body.missing }}", None),
        ("{{ body.list }}", [1, "two", None]),
        ("{{ body.obj }}", {"b": 2, "a": 1}),
        ("{{ body.text }}", "hello"),
        ("{{ length(body.list) }}", 3),
        ("{{ body.list[?@ != null] }}", [1, "two"]),
        ("{{ body.missing || 'fallback' }}", "fallback"),
    ],
)
def test_exactly_one_placeholder_keeps_the_json_type(template: str, value: Any) -> None:
    rendered = render(compile_template(template), DOC)
    assert rendered == value
    assert type(rendered) is type(value)


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("n={{ body.n }}", "n=5"),
        (" {{ body.n }}", " 5"),  # not exactly one placeholder: text
        ("{{ body.n }}{{ body.n }}", "55"),
        ("[{{ body.missing }}]", "[]"),
        ("[{{ body.nothing }}]", "[]"),
        ("[{{ body.empty }}]", "[]"),
        ("{{ body.yes }}/{{ body.no }}", "true/false"),
        ("f={{ body.f }} z={{ body.zero }}", "f=1.5 z=0"),
        ("list={{ body.list }}", 'list=[1,"two",null]'),
        ("obj={{ body.obj }}", 'obj={"a":1,"b":2}'),
        ("{{ event }}: {{ body.text }}", "AML Monitor Update: hello"),
        ("no placeholders", "no placeholders"),
        ("multi\n{{ body.text }}\nline", "multi\nhello\nline"),
    ],
)
def test_text_interpolation(template: str, text: str) -> None:
    compiled = compile_template(template)
    assert render(compiled, DOC) == text
    assert render_text(compile_text(template), DOC) == text


def test_structures_render_each_string_and_keep_other_values() -> None:
    template = {
        "count": "{{ body.n }}",
        "items": ["{{ body.list }}", "literal", 7, None, True],
        "label": "n is {{ body.n }}",
        "nested": {"missing": "{{ body.missing }}", "deep": ["{{ body.obj.a }}"]},
    }
    assert render(compile_template(template), DOC) == {
        "count": 5,
        "items": [[1, "two", None], "literal", 7, None, True],
        "label": "n is 5",
        "nested": {"missing": None, "deep": [1]},
    }


def test_slack_escaping_applies_to_inserted_values_only() -> None:
    template = compile_template("<!here> *{{ body.mention }}* & <https://x.example|link>")
    assert render(template, DOC, escape_mrkdwn) == (
        "<!here> *&lt;!channel&gt; &amp; &lt;@U123&gt;* & <https://x.example|link>"
    )


def test_slack_escaping_of_a_lone_placeholder_keeps_structure() -> None:
    assert render(compile_template("{{ body.mention }}"), DOC, escape_mrkdwn) == (
        "&lt;!channel&gt; &amp; &lt;@U123&gt;"
    )
    assert render(compile_template("{{ body.mentions }}"), DOC, escape_mrkdwn) == [
        "&lt;!here&gt;",
        {"deep": "&lt;b&gt;"},
        7,
    ]
    assert render(compile_template("{{ body.n }}"), DOC, escape_mrkdwn) == 5
    # text rendering escapes the JSON text of structures
    assert render(compile_template("x {{ body.mentions }}"), DOC, escape_mrkdwn) == (
        'x ["&lt;!here&gt;",{"deep":"&lt;b&gt;"},7]'
    )


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{{ }}", "empty placeholder"),
        ("a }} b", "'}}' without a matching '{{'"),
        ("{{ body.x", "unbalanced"),
        ("{{ body.x }} }}", "unbalanced"),
        ("{{ {{ body.x }} }}", "invalid expression"),
        ("{{ body.( }}", "invalid expression {{ body.( }}"),
    ],
)
def test_compile_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        compile_template({"deep": [template]})
    assert message in str(caught.value)


# ----------------------------------------------------------------- through destinations
@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Config:
    folder = tmp_path_factory.mktemp("templates")
    config = base_config(
        folder,
        destinations={
            "chat": {
                "type": "slack",
                "url": "https://hooks.slack.com/services/T/B/x",
                "text": "<!here> {{ event }} for {{ body.referenceNo }}",
                "blocks": [
                    {
                        "type": "section",
                        "text": {"type": "mrkdwn", "text": "*{{ body.referenceNo }}*"},
                    },
                    {"type": "context", "elements": "{{ body.tags }}"},
                ],
            },
            "chat-default": {"type": "slack", "url": "https://hooks.slack.com/services/T/B/y"},
            "api": {
                "type": "http",
                "url": "http://127.0.0.1:9/x",
                "headers": {
                    "X-Ref": "{{ body.referenceNo }}",
                    "X-Version": "{{ body.updatedAMLVersionNumber }}",
                },
                "body": {
                    "version": "{{ body.updatedAMLVersionNumber }}",
                    "steps": "{{ body.requiredSteps }}",
                    "missing": "{{ body.finalDecision }}",
                    "summary": "{{ event }} #{{ body.updatedAMLVersionNumber }}",
                },
            },
            "raw": {"type": "http", "url": "http://127.0.0.1:9/raw"},
            "mail": {
                "type": "email",
                "host": "smtp.internal",
                "from": "gateway@example.com",
                "to": ["c@example.com"],
                "subject": "[{{ event }}] {{ body.referenceNo }}",
            },
            "job": {
                "type": "script",
                "command": ["/bin/true"],
                "env": {
                    "STEPS": "{{ body.requiredSteps[].stepId }}",
                    "REF": "{{ body.referenceNo }}",
                },
            },
        },
    )
    return load_config(write_config(folder, config), environ={})


def event_with(event_type: str, **body: Any) -> Any:
    return parse_event(payload(event_type, **body))


def test_http_body_keeps_types(configured: Config) -> None:
    preview = configured.destinations["api"].preview(event_with("AML Monitor Update"))
    assert preview["body"] == {
        "version": 2,
        "steps": None,
        "missing": None,
        "summary": "AML Monitor Update #2",
    }
    assert preview["headers"]["X-Version"] == "2"
    kyc = configured.destinations["api"].preview(event_with("KYC Renewal Deadline Exceeded"))
    assert kyc["body"]["steps"] == [{"stepId": "0", "renewalDeadline": "2025-09-15T00:00:00Z"}]
    assert kyc["body"]["summary"] == "KYC Renewal Deadline Exceeded #"


def test_http_default_body_is_the_original_bytes(configured: Config) -> None:
    event = parse_event(idwise.sample_bytes("Updated Journey"))
    headers, payload = configured.destinations["raw"].request(event, 1_700_000_000)  # type: ignore[attr-defined]
    assert payload == idwise.sample_bytes("Updated Journey")
    assert headers["Content-Type"] == "application/json"
    assert headers["Idempotency-Key"] == "55f85394-d28c-4d15-a085-9ab51986f574"


def test_header_values_cannot_break_lines(configured: Config) -> None:
    event = event_with("Finished Journey", referenceNo="ref\r\nX-Injected: 1")
    headers, _ = configured.destinations["api"].request(event, 0)  # type: ignore[attr-defined]
    assert "\n" not in headers["X-Ref"] and "\r" not in headers["X-Ref"]


def test_slack_text_and_blocks_escape_payload_values(configured: Config) -> None:
    event = event_with("Finished Journey", referenceNo="<!channel> & co", tags=["<!here>"])
    message = configured.destinations["chat"].preview(event)["json"]
    assert message["text"] == "<!here> Finished Journey for &lt;!channel&gt; &amp; co"
    assert message["blocks"][0]["text"]["text"] == "*&lt;!channel&gt; &amp; co*"
    assert message["blocks"][1]["elements"] == ["&lt;!here&gt;"]


def test_slack_default_text_escapes_payload_values(configured: Config) -> None:
    event = event_with("Updated Journey", referenceNo="<!channel>", action="<@U1> & more")
    text = configured.destinations["chat-default"].preview(event)["json"]["text"]
    assert "<!channel>" not in text and "<@U1>" not in text
    assert "&lt;!channel&gt;" in text and "&lt;@U1&gt; &amp; more" in text


def test_email_subject_is_one_line(configured: Config) -> None:
    event = event_with("Finished Journey", referenceNo="a\r\nBcc: victim@example.com")
    preview = configured.destinations["mail"].preview(event)
    assert preview["subject"] == "[Finished Journey] a Bcc: victim@example.com"


def test_script_env_renders_values_and_missing_as_empty(configured: Config) -> None:
    env = configured.destinations["job"].preview(event_with("Verification Update Required"))["env"]
    assert env["REF"] == "8407715502134"
    assert env["IDWISE_EVENT"] == "Verification Update Required"
    missing = configured.destinations["job"].preview(event_with("Finished Step"))["env"]
    assert missing["STEPS"] == ""  # a missing value renders as empty


def test_string_settings_render_structured_values_as_json_text(configured: Config) -> None:
    """Script env and HTTP headers are text: a lone placeholder renders like text (JSON)."""
    event = event_with("Verification Update Required", flag=True)
    env = configured.destinations["job"].preview(event)["env"]
    assert env["STEPS"] == '["0"]'
    api = configured.destinations["api"]
    headers, _ = api.request(event_with("Finished Journey", updatedAMLVersionNumber=[1, True]), 0)  # type: ignore[attr-defined]
    assert headers["X-Version"] == "[1,true]"


# ------------------------------------------------------------------------- properties
LEAF = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["<!channel>", "&", "\r\n", "{{ x }}", "Complete", "Rejected"]),
)
JSON = st.recursive(
    LEAF,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["stepId", "n"]) | st.text(max_size=4), children, max_size=4
        )
    ),
    max_leaves=12,
)
FIELDS = ["eventId", "journeyId", "referenceNo", "systemDecision", "finalDecision",
          "manualDecision", "requiredSteps", "tags", "action", "spotCheckJourneyId",
          "updatedAMLVersionNumber"]  # fmt: skip
BODY = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=6), JSON, max_size=8)
EVENT = st.sampled_from(idwise.EVENT_TYPES) | st.text(min_size=1, max_size=12).filter(str.strip)

TEMPLATES = [
    compile_template(t)
    for t in [
        DEFAULT_SUBJECT,
        DEFAULT_TEXT,
        "{{ body }}",
        "{{ @ }}",
        "{{ body.requiredSteps[].stepId }}",
        "{{ join(', ', body.tags) }}",
        "{{ length(body.referenceNo) }} chars",
        "{{ body.updatedAMLVersionNumber > `1` }}",
        "{{ sort(body.tags) }}",
        "{{ max_by(body.requiredSteps, &n) }}",
        "{{ to_number(body.referenceNo) }}",
        "{{ keys(body) }}",
        "{{ body.* }}",
        {"a": ["{{ body.finalDecision || body.systemDecision }}", {"b": "x {{ event }} y"}]},
    ]
]


@settings(max_examples=300, deadline=None)
@given(event=EVENT, body=BODY)
def test_render_never_raises(event: str, body: dict[str, Any]) -> None:
    document = {"event": event, "body": body}
    for template in TEMPLATES:
        plain = render(template, document)
        escaped = render(template, document, escape_mrkdwn)
        json.dumps(plain)
        json.dumps(escaped)
        if isinstance(escaped, str):  # no template here writes a mention itself
            assert "<!channel>" not in escaped


@pytest.fixture(scope="module")
def shipped() -> Config:
    return load_config(ROOT / "config.example.yaml", environ={})


@settings(max_examples=150, deadline=None)
@given(event=EVENT, body=BODY)
def test_previews_never_raise_on_arbitrary_events(
    shipped: Config, configured: Config, event: str, body: dict[str, Any]
) -> None:
    parsed = parse_event(json.dumps({"event": event, "body": body}).encode())
    for config in (shipped, configured):
        for destination in config.destinations.values():
            json.dumps(destination.preview(parsed))


def test_every_sample_renders_through_every_shipped_destination(shipped: Config) -> None:
    for event_type in idwise.EVENT_TYPES:
        event = parse_event(idwise.sample_bytes(event_type))
        for name, destination in shipped.destinations.items():
            preview = destination.preview(event)
            assert preview, (event_type, name)


def test_shipped_activation_body(shipped: Config) -> None:
    preview = shipped.destinations["account-activation"].preview(
        parse_event(idwise.sample_bytes("Manually Reviewed"))
    )
    assert preview["body"] == {
        "journeyId": "0958e489f571a5a716af2614",
        "referenceNo": "user_5f3a9c21",
        "decision": "Approved",
    }


def test_non_template_settings_stay_literal(tmp_path: Path) -> None:
    """A template string in a non-template setting stays literal (e.g. the email `from`)."""
    config = base_config(
        tmp_path,
        destinations={
            "mail": {
                "type": "email",
                "host": "smtp.internal",
                "from": "{{x}}@example.com",
                "to": ["c@example.com"],
            }
        },
    )
    loaded = load_config(write_config(tmp_path, config), environ={})
    preview = loaded.destinations["mail"].preview(parse_event(idwise.sample_bytes("Finished Step")))
    assert preview["from"] == "{{x}}@example.com"

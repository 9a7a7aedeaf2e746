"""The one redaction point: secrets masked in free text and inside JSON without breaking it."""

import json
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.secret import MASK, Redactor, Secret
from tests.support.config import base_config, write_config
from tests.support.process import run_cli


def test_secret_repr_never_shows_the_value() -> None:
    secret = Secret("hunter2-hunter2")
    assert "hunter2" not in repr(secret)
    assert "hunter2" not in str(secret)
    assert "hunter2" not in f"{secret}"
    assert secret.reveal() == "hunter2-hunter2"


def test_secret_with_quotes_and_backslashes_is_masked_in_json() -> None:
    awkward = 'pa"ss\\wörd-1-zz'
    redactor = Redactor()
    redactor.register(awkward)
    text = redactor.redact_json({"msg": f"login with {awkward} failed", "n": 1, "ok": True})
    assert awkward not in text
    assert json.dumps(awkward)[1:-1] not in text
    decoded = json.loads(text)
    assert decoded == {"msg": f"login with {MASK} failed", "n": 1, "ok": True}


def test_json_keys_and_literals_are_never_touched() -> None:
    redactor = Redactor()
    redactor.register("level-secret-value")
    text = redactor.redact_json(
        {"level": "info", "watch": True, "count": 4, "x": "level-secret-value"}
    )
    assert json.loads(text) == {"level": "info", "watch": True, "count": 4, "x": MASK}


def test_longer_secret_masked_whole_when_it_contains_a_shorter_one() -> None:
    redactor = Redactor()
    redactor.register("abcd-1234", "abcd-1234-efgh-5678")
    assert redactor.redact("token abcd-1234-efgh-5678 end") == f"token {MASK} end"


def route_json(tmp_path: Path, destination: dict[str, Any], env: dict[str, str]) -> Any:
    """`route --json` of a Finished Journey to one destination, with `env` set."""
    config = base_config(
        tmp_path, destinations={"only": destination}, rules=[{"name": "all", "to": ["only"]}]
    )
    result = run_cli(
        "route",
        "-c",
        str(write_config(tmp_path, config)),
        "--json",
        "-",
        stdin=b'{"event": "Finished Journey", "body": {"eventId": "e1"}}',
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_env_values_in_script_arguments_and_short_env_settings(tmp_path: Path) -> None:
    stdout = route_json(
        tmp_path,
        {
            "type": "script",
            "command": ["/bin/true", "--key", "${SCRIPT_ARG_KEY}"],
            "env": {"LEVEL": "info", "DRY": "true", "API_TOKEN": "tok-lit-77"},
        },
        {"SCRIPT_ARG_KEY": "argsecret-5150"},
    )
    assert "argsecret-5150" not in stdout
    assert "tok-lit-77" not in stdout
    output = json.loads(stdout)  # still valid JSON
    env = output["rendered"]["only"]["env"]
    assert env["LEVEL"] == "info"
    assert env["DRY"] == "true"
    assert output["rules"][0]["matched"] is True


def test_environment_values_in_plain_settings_are_not_masked(tmp_path: Path) -> None:
    stdout = route_json(
        tmp_path,
        {
            "type": "email",
            "host": "${SMTP_HOST}",
            "security": "none",
            "from": "gw@example.com",
            "to": ["${MAIL_TO}"],
        },
        {"SMTP_HOST": "mail.internal.example", "MAIL_TO": "compliance@example.com"},
    )
    rendered = json.loads(stdout)["rendered"]["only"]
    assert rendered["smtp"] == "mail.internal.example:25 (none)"
    assert rendered["to"] == ["compliance@example.com"]


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text() | st.integers() | st.booleans() | st.none(), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(_json_values)
def test_log_json_is_what_json_dumps_writes(value: Any) -> None:
    # redact_json uses the C encoder directly (one made at import, not one per line): its
    # text must stay exactly json.dumps's, NaN, non-ASCII, tuples and non-str keys included
    expected = json.dumps(value, ensure_ascii=False, default=str)
    assert Redactor().redact_json(value) == expected


def test_log_json_of_unknown_objects_is_their_str() -> None:
    class Thing:
        def __str__(self) -> str:
            return "thing-1"

    assert (
        Redactor().redact_json({"a": Thing(), "b": [Path("/x")]}) == '{"a": "thing-1", "b": ["/x"]}'
    )


def test_secrets_inside_values_are_masked_with_the_direct_encoder() -> None:
    redactor = Redactor()
    redactor.register('s3cr"et-value')
    text = redactor.redact_json({"msg": 'token s3cr"et-value seen', "n": 1})
    assert json.loads(text) == {"msg": f"token {MASK} seen", "n": 1}

"""Secrets never appear in `check` or `route` output, whether the config is valid or not.

Every credential below is a unique string, given either through the environment or literally
in the file; the test greps stdout and stderr of real `idwise-gateway` processes for them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from gateway import idwise
from tests.support.config import free_port
from tests.support.process import CliServer, run_cli

ENV_SECRETS = {
    "IDWG_SEC_ADMIN": "EnvAdminTok1aQ",
    "IDWG_SEC_BASIC_PW": "EnvBasicPw2bW",
    "IDWG_SEC_BEARER": "EnvBearer3cE",
    "IDWG_SEC_HEADER": "EnvHeader4dR",
    "IDWG_SEC_SLACK": "https://hooks.slack.com/services/T9/B9/EnvSlackPath5eT",
    "IDWG_SEC_SMTP_PW": "EnvSmtpPw6fY",
    "IDWG_SEC_URLKEY": "EnvUrlKey7gU",
    "IDWG_SEC_API_TOKEN": "EnvApiTok8hI",
    "IDWG_SEC_HDR2": "EnvHdr2Val9iO",
    "IDWG_SEC_SIGN": "whsec_RW52U2lnblNlY3JldDEwamFiY2RlZmdoaWo=",
    "IDWG_SEC_SCRIPT": "EnvScript11kP",
    "IDWG_SEC_BAD_SLACK": "hooks.slack.com/services/T1/B1/EnvBadSlack12lA",
    "IDWG_SEC_BAD_SIGN": "whsec_EnvBadSign!!13mS",
    "IDWG_SEC_SESSION": "EnvSessionKey18rC-0123456789abcdefghij",
}
LITERAL_SECRETS = [
    "LitBasicPwZr8x1",
    "LitBearerKx9m2",
    "LitHeaderVal4pD",
    "https://hooks.slack.com/services/T01/B02/LitSlackPath7uF",
    "LitSlackPath7uF",
    "LitSmtpPw5tG",
    "LitApiKey8wH",
    "LitScriptEnv2bJ",
    "FileTokenQ2w9e8r7",  # read through ${file:token.txt}
    "LitFtpPw14nK",
    "LitTypoPw15oL",
    "LitOrphanPw16pZ",
    "LitAuthzHdr17qX",
    "LitWrongType19sV",
    "whsec_TGl0U2lnbk5leHRTZWNyZXQyMGtx",  # the second signing secret of a list (rotation)
    "TGl0U2lnbk5leHRTZWNyZXQyMGtx",
]
SECRETS = [
    *ENV_SECRETS.values(),
    "EnvSlackPath5eT",
    "EnvBadSlack12lA",
    "EnvBadSign!!13mS",
    *LITERAL_SECRETS,
]

VALID = """\
server: {{host: 127.0.0.1, port: {server_port}}}
admin: {{port: {admin_port}, token: "${{IDWG_SEC_ADMIN}}", session_key: "${{IDWG_SEC_SESSION}}"}}
storage: {{path: gateway.db}}
auth:
  basic:
    - {{username: gw-user-envQ7, password: "${{IDWG_SEC_BASIC_PW}}"}}
    - {{username: gw-user-litZ3, password: LitBasicPwZr8x1}}
  bearer: ["${{IDWG_SEC_BEARER}}", LitBearerKx9m2, "${{file:token.txt}}"]
  headers:
    - {{name: X-IDWise-Key, value: "${{IDWG_SEC_HEADER}}"}}
    - {{name: X-Other-Key, value: LitHeaderVal4pD}}
destinations:
  slack-env: {{type: slack, url: "${{IDWG_SEC_SLACK}}"}}
  slack-lit: {{type: slack, url: "https://hooks.slack.com/services/T01/B02/LitSlackPath7uF"}}
  mail-env:
    type: email
    host: smtp.internal
    username: mailer
    password: "${{IDWG_SEC_SMTP_PW}}"
    from: gateway@example.com
    to: [compliance@example.com]
  mail-lit:
    type: email
    host: smtp.internal
    username: mailer2
    password: LitSmtpPw5tG
    from: gateway@example.com
    to: [compliance@example.com]
    subject: "{{{{ event }}}} {{{{ body.referenceNo }}}}"
  api:
    type: http
    url: "https://api.internal/hook?key=${{IDWG_SEC_URLKEY}}"
    headers:
      Authorization: "Bearer ${{IDWG_SEC_API_TOKEN}}"
      X-Api-Key: LitApiKey8wH
      X-Env-Key: "${{IDWG_SEC_HDR2}}"
      X-Journey: "{{{{ body.journeyId }}}}"
    sign: {{secret: ["${{IDWG_SEC_SIGN}}", whsec_TGl0U2lnbk5leHRTZWNyZXQyMGtx]}}
  run:
    type: script
    command: [/bin/true]
    env: {{TOKEN: "${{IDWG_SEC_SCRIPT}}", LITERAL: LitScriptEnv2bJ}}
rules:
  - name: everything
    to: [slack-env, slack-lit, mail-env, mail-lit, api, run]
"""

#: secrets sitting in values that are themselves wrong
BROKEN_SECRET_VALUES = """\
  slack-bad: {type: slack, url: "${IDWG_SEC_BAD_SLACK}"}
  ftp: {type: http, url: "ftp://user:LitFtpPw14nK@files.internal/drop"}
  signed: {type: http, url: "https://x.internal/", sign: {secret: "${IDWG_SEC_BAD_SIGN}"}}
  orphan-password:
    type: email
    host: smtp.internal
    password: LitOrphanPw16pZ
    from: gateway@example.com
    to: [compliance@example.com]
"""


def variant(name: str, text: str) -> str:
    if name == "valid":
        return text
    if name == "unrelated-error":
        return text.replace("  bearer: [", "  allow_ips: [not-an-address]\n  bearer: [")
    if name == "broken-secret-values":
        return text.replace("destinations:\n", "destinations:\n" + BROKEN_SECRET_VALUES)
    if name == "schema-errors":
        # a typo'd key holding a password, a wrongly typed credential, a credential header
        return (
            text.replace(
                "  headers:\n",
                "  headers:\n    - {name: Authorization, value: LitAuthzHdr17qX}\n",
                1,
            )
            .replace(
                "password: LitSmtpPw5tG", "passwrod: LitTypoPw15oL\n    password: LitSmtpPw5tG"
            )
            .replace('"${file:token.txt}"]', '"${file:token.txt}", {nested: LitWrongType19sV}]')
        )
    if name == "unset-variable":
        return text.replace("${IDWG_SEC_HDR2}", "${IDWG_SEC_NEVER_SET_HDR}")
    if name == "yaml-error":
        return text.replace("  run:\n", "  run: {\n")
    raise AssertionError(name)


VARIANTS = [
    "valid",
    "unrelated-error",
    "broken-secret-values",
    "schema-errors",
    "unset-variable",
    "yaml-error",
]

Runs = dict[tuple[str, str], subprocess.CompletedProcess[str]]


COMMANDS = {
    "check": ("check", "-c", "config.yaml"),
    "route": ("route", "-c", "config.yaml", "-"),
    "route-json": ("route", "-c", "config.yaml", "-", "--json"),
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    found = {}
    for name in VARIANTS:
        folder = tmp_path_factory.mktemp(name)
        (folder / "token.txt").write_text("FileTokenQ2w9e8r7\n")
        text = VALID.format(server_port=free_port(), admin_port=free_port())
        (folder / "config.yaml").write_text(variant(name, text))
        found[name] = folder
    return found


@pytest.fixture(scope="module")
def runs(cli: CliServer, folders: dict[str, Path]) -> Runs:
    payload = idwise.sample_bytes("Finished Journey")
    return {
        (name, command): cli.run(*args, cwd=folders[name], stdin=payload, env=ENV_SECRETS)
        for name in VARIANTS
        for command, args in COMMANDS.items()
    }


@pytest.mark.parametrize("command", ["check", "route", "route-json"])
@pytest.mark.parametrize("name", VARIANTS)
def test_no_secret_in_output(runs: Runs, name: str, command: str) -> None:
    result = runs[(name, command)]
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output
    leaked = [secret for secret in SECRETS if secret in output]
    assert not leaked, f"{name}/{command} printed {leaked}:\n{output}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["valid", "broken-secret-values"])
def test_no_secret_in_output_of_the_console_script(folders: dict[str, Path], name: str) -> None:
    """The same from a cold `python -m gateway` start (not the fork server)."""
    payload = idwise.sample_bytes("Finished Journey")
    for args in COMMANDS.values():
        result = run_cli(*args, cwd=folders[name], stdin=payload, env=ENV_SECRETS)
        output = result.stdout + result.stderr
        assert result.returncode == (0 if name == "valid" else 1), output
        assert not [secret for secret in SECRETS if secret in output], output


@pytest.mark.parametrize("name", VARIANTS)
def test_the_variants_are_what_they_claim(runs: Runs, name: str) -> None:
    """Guards the secrecy test: the valid config really routes everywhere, the others fail."""
    check = runs[(name, "check")]
    route = runs[(name, "route-json")]
    if name == "valid":
        assert check.returncode == 0, check.stdout + check.stderr
        assert route.returncode == 0, route.stderr
        assert '"slack-env"' in route.stdout and '"run"' in route.stdout
        assert '"X-Journey": "6720b9f3a41c5e0d8f7a122e"' in route.stdout  # templates still show
    else:
        assert check.returncode == 1, check.stdout
        assert route.returncode == 1
        assert "config.yaml:" in check.stdout and "config.yaml:" in route.stderr


def test_each_broken_secret_value_is_reported_without_its_value(runs: Runs) -> None:
    out = runs[("broken-secret-values", "check")].stdout
    assert "destinations.slack-bad.url: must be the incoming-webhook URL" in out
    assert "destinations.ftp.url: must start with http:// or https://" in out
    assert "destinations.signed.sign.secret: sign.secret must be 'whsec_' followed by base64" in out
    assert "destinations.orphan-password.password: username and password go together" in out


def test_schema_errors_around_secrets_are_reported_without_values(runs: Runs) -> None:
    out = runs[("schema-errors", "check")].stdout
    assert "destinations.mail-lit.passwrod: unknown key 'passwrod' (did you mean password?)" in out
    assert "auth.bearer[3]: must be a string" in out


def test_masked_values_in_route_previews(runs: Runs) -> None:
    out = runs[("valid", "route-json")].stdout
    assert '"url": "https://hooks.slack.com/****"' in out
    assert '"Authorization": "****"' in out
    assert '"webhook-signature": "****"' in out


@pytest.mark.slow
def test_invalid_reference_inside_a_literal_password_is_not_echoed(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text(
        "auth:\n  basic:\n    - {username: idw, password: 'Zq${my-Secret-Part-18r}9'}\n"
    )
    result = run_cli("check", "-c", "config.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "config.yaml:3: auth.basic[0].password:" in result.stdout
    assert "my-Secret-Part-18r" not in result.stdout + result.stderr


@pytest.mark.slow
def test_public_values_are_not_masked_in_route_output() -> None:
    """The shipped basic-auth username 'idwise' is no secret: the sender address stays whole."""
    root = Path(__file__).resolve().parents[2]
    result = run_cli(
        "route",
        "-c",
        "config.example.yaml",
        "-",
        cwd=root,
        stdin=idwise.sample_bytes("AML Monitor Update"),
    )
    assert result.returncode == 0
    assert '"from": "idwise-gateway@example.com"' in result.stdout

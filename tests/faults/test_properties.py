"""Properties of the pure pieces that run on hostile input: templates, interpolation,
retry maths. Modest example counts (CI time); the bench/fuzz.py run goes further."""

from __future__ import annotations

import json
import math
import string
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway import idwise
from gateway.config.interpolate import InterpolationError, interpolate
from gateway.config.load import _read_secret_file, load_config
from gateway.destinations.base import parse_retry_after
from gateway.destinations.slack import escape_mrkdwn
from gateway.errors import ConfigError
from gateway.render import TextTemplate, compile_template, render, render_text
from gateway.retry import Backoff, backoff_delay
from tests.support.config import base_config, write_config

# ---------------------------------------------------------------------- JSON payloads
# What json.loads can hand the renderer: no NaN (refused), but 1e999 parses to inf.
leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    leaves,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=30,
)
FIELDS = sorted(idwise.fields_of(None) | {"requiredSteps", "amount", "scores", "x"})


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # a real sample with some fields replaced by anything at all
        document = idwise.sample(draw(st.sampled_from(idwise.EVENT_TYPES)))
        for name in draw(st.lists(st.sampled_from(FIELDS), max_size=4)):
            document["body"][name] = draw(json_values)
        return document
    if kind == 1:  # the envelope with an arbitrary body
        return {
            "event": draw(st.sampled_from(idwise.EVENT_TYPES) | st.text(max_size=10)),
            "body": draw(st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=6)),
        }
    if kind == 2:  # odd envelopes: what a later stage might be handed by mistake
        return {"event": draw(json_values), "body": draw(json_values)}
    return draw(json_values)


TEMPLATES: list[Any] = [
    "{{ event }}",
    "{{ body }}",
    "{{ @ }}",
    "{{ body.eventId }}",
    "Decision: {{ body.finalDecision }} for {{ body.referenceNo }} ({{ event }})",
    "{{ body.requiredSteps[0].stepId }}",
    "{{ body.requiredSteps[-1:] }} / {{ body.requiredSteps[::2] }}",
    "{{ length(body.requiredSteps) }}",
    "{{ length(@) }}",
    "{{ body.requiredSteps[?status == 'x'] | [0] }}",
    "{{ join(', ', body.requiredSteps[*].stepId) }}",
    "{{ map(&stepId, body.requiredSteps) }}",
    "{{ sort_by(body.requiredSteps, &stepId) }}",
    "{{ max_by(body.requiredSteps, &n) }}",
    "{{ to_string(body) }}",
    "{{ to_number(body.eventId) }}",
    "{{ body.* | [0] }}",
    "{{ max(body.scores) }} {{ min(body.scores) }} {{ avg(body.scores) }} {{ sum(body.scores) }}",
    "{{ abs(body.amount) }} {{ to_number(body.referenceNo) }}",
    "{{ sort(keys(body)) }}",
    "{{ values(@) }}",
    "{{ merge(body, @) }}",
    "{{ reverse(body.eventId) }}",
    "{{ contains(body.requiredSteps, 'x') }}",
    "{{ starts_with(body.referenceNo, 'R') }} {{ ends_with(event, 'Journey') }}",
    "{{ type(body.x) }}",
    "{{ not_null(body.x, body.eventId, `0`) }}",
    "{{ body.finalDecision == 'Rejected' && body.systemDecision || 'none' }}",
    "{{ body.amount > `5` }}",
    "{{ !body.x }}",
    "{{ body.a.b.c.d.e }}",
    '{{ `{"literal": [1, 2]}` }}',
    "plain text with no placeholder",
    {
        "text": "*{{ event }}*: {{ body.finalDecision }}",
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": "{{ body.requiredSteps }}"}},
            {"type": "context", "elements": ["{{ body.journeyId }}", 3, None, True, 1.5]},
        ],
        "raw": "{{ body }}",
    },
]
COMPILED = [compile_template(t) for t in TEMPLATES]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads())
@example({"event": "Finished Journey", "body": {"amount": 1e308 * 10, "scores": [1, "a"]}})
@example({"event": "x", "body": {"requiredSteps": [{"stepId": None}, 5, "s"]}})
@example([[[[[[[]]]]]]])
def test_render_never_raises_on_any_payload(payload: Any) -> None:
    for template in COMPILED:
        for escape in (None, escape_mrkdwn):
            result = render(template, payload, escape)
            # HTTP bodies are json.dumps(render(...)): that must work too
            json.dumps(result, ensure_ascii=False)
            if isinstance(template, TextTemplate):
                assert isinstance(render_text(template, payload, escape), str)
                if template.single is None:
                    assert isinstance(result, str)
            if escape is not None and isinstance(result, str):
                # no payload text can open a mrkdwn control sequence (<!channel>, <@U...>)
                assert "<" not in result and ">" not in result


JMES_OVERFLOW_BUG = (
    "BUG: gateway.jmes.search swallows JMESPathError/TypeError/ValueError/AttributeError/"
    "RecursionError but not OverflowError, which jmespath's floor()/ceil() raise on an "
    "infinite number (a payload value 1e999, or to_number('inf')). In a rule's `when` this "
    "is a 500 for every such webhook (IDWise retries it until it gives up); in a template "
    "the delivery fails as 'internal' until it is dead. Fix: add ArithmeticError to the "
    "except tuple in jmes.search (null, like every other runtime error)"
)


@pytest.mark.parametrize(
    ("template", "body"),
    [
        ("{{ floor(body.amount) }}", {"amount": math.inf}),
        ("{{ ceil(body.amount) }}", {"amount": -math.inf}),
        ("{{ floor(to_number(body.referenceNo)) }}", {"referenceNo": "inf"}),
    ],
)
def test_number_functions_on_infinity_render_as_null(template: str, body: dict[str, Any]) -> None:
    payload = json.loads(json.dumps({"event": "Finished Journey", "body": body}))
    assert render(compile_template(template), payload) is None


# ------------------------------------------------------------------------ interpolation
TOKENS = [
    "$", "$$", "${", "}", "{", ":-", ":?", "file:", "A", "B_1", "1X", " ", "\n", "é", "-",
    "${A}", "${B_1}", "${UNSET}", "${A:-x}", "${UNSET:-fallback}", "${UNSET:?needed}",
    "${A:?}", "${1A}", "${}", "${ }", "${A B}", "${file:}", "${file: }", "$A", "}}", "{{",
    "${file:secret.txt}", "${file:dir}", "${file:missing}", "${file:dir/../secret.txt}",
    "${file:/proc/self/nonexistent}", "${file:" + "n" * 300 + "}",
    "${file:" + "/".join(["deep"] * 2000) + "}",
]  # fmt: skip
texts = st.lists(
    st.sampled_from(TOKENS) | st.text(alphabet=st.characters(exclude_characters="\x00")),
    max_size=8,
).map("".join)
environs = st.dictionaries(
    st.sampled_from(["A", "B_1", "EMPTY", "X"]) | st.text(string.ascii_letters, max_size=4),
    st.text(alphabet=st.characters(exclude_characters="\x00"), max_size=10),
    max_size=5,
)


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("secrets")
    (base / "secret.txt").write_text("s3cret\n")
    (base / "dir").mkdir()
    return base


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=texts, environ=environs)
def test_interpolate_with_the_real_secret_reader_raises_only_interpolation_error(
    secrets_dir: Path, text: str, environ: dict[str, str]
) -> None:
    # NUL bytes in file paths and non-UTF-8 secret files are known, separate bugs
    # (tests/config/test_interpolation.py xfails); the reader here sees text files only.
    try:
        result, substituted = interpolate(text, environ, _read_secret_file(secrets_dir))
    except InterpolationError as exc:
        assert str(exc)
        return
    assert isinstance(result, str)
    for value in substituted:
        assert isinstance(value, str)
        assert value in result
    if "$" not in text:
        assert result == text
    if "${file:secret.txt}" in text and "$${file:secret.txt}" not in text:
        assert "s3cret" in substituted


# --------------------------------------------------------------------------- backoff
durations = st.floats(min_value=0.001, max_value=1e7)  # 1ms .. ~4 months


@st.composite
def backoffs(draw: st.DrawFn) -> Backoff:
    initial = draw(durations)
    maximum = draw(st.floats(min_value=initial, max_value=1e9))
    return Backoff(
        initial=initial,
        max=maximum,
        multiplier=draw(st.floats(min_value=1.0, max_value=1e6) | st.just(1.0)),
        jitter=draw(st.floats(min_value=0.0, max_value=1.0)),
    )


@settings(max_examples=500, deadline=None)
@given(
    attempt=st.integers(min_value=-5, max_value=10**12),
    backoff=backoffs(),
    rand=st.floats(min_value=-1.0, max_value=2.0),
    retry_after=st.none() | st.floats(min_value=0.0, allow_nan=False) | st.just(math.inf),
)
def test_backoff_delay_never_raises_and_stays_finite(
    attempt: int, backoff: Backoff, rand: float, retry_after: float | None
) -> None:
    delay = backoff_delay(attempt, backoff, rand, retry_after)
    assert math.isfinite(delay)
    assert 0 <= delay <= backoff.max * (1 + backoff.jitter) * (1 + 1e-9)


@pytest.mark.parametrize(
    "backoff",
    [
        {"initial": "5s", "max": math.inf, "multiplier": 2},
        {"initial": "1ms", "max": 1e306, "multiplier": 2},
    ],
    ids=["max-inf", "ratio-overflow"],
)
def test_backoff_from_an_accepted_config_never_raises(
    tmp_path: Path, backoff: dict[str, Any]
) -> None:
    path = write_config(tmp_path, base_config(tmp_path, delivery={"backoff": backoff}))
    try:
        config = load_config(path)
    except ConfigError as exc:  # an infinite duration is refused at load: fine too
        assert "finite" in str(exc)
        return
    for attempt in (1, 2, 1025, 10**6):
        assert math.isfinite(backoff_delay(attempt, config.delivery.backoff, 0.5))


# ---------------------------------------------------------------------- Retry-After
@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40))
@example("120")
@example("9" * 400)
@example("Wed, 21 Oct 2015 07:28:00 GMT")
@example("Sun, 06 Nov 1994 08:49:37 +9999")
def test_parse_retry_after_never_raises_on_ascii(value: str) -> None:
    delay = parse_retry_after(value, 1_700_000_000.0)
    assert delay is None or delay >= 0


@pytest.mark.parametrize("value", ["²", "3²", "①"])
def test_parse_retry_after_on_unicode_digits(value: str) -> None:
    assert parse_retry_after(value, 0.0) in (None, 0.0) or parse_retry_after(value, 0.0) > 0

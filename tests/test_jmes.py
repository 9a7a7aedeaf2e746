"""The fast JMESPath evaluator must always agree with jmespath itself."""

import jmespath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import idwise
from gateway.jmes import compile_expression, search, split_top_level, truthy

EXPRESSIONS = [
    "body.systemDecision == 'Refer'",
    "body.finalDecision == 'Rejected' || body.systemDecision == 'Refer'",
    "body.systemDecision != body.previousSystemDecision",
    "event == 'Finished Journey' && body.manualDecision",
    "!body.manualDecision",
    "!body.n",
    "body.n > `1`",
    "body.n >= `0` && body.n < `10`",
    "body.s < 'm'",
    "body.requiredSteps[0].stepId",
    "body.requiredSteps[?reasonCode=='DOCUMENT_EXPIRING'] | length(@)",
    "length(body.requiredSteps || `[]`) > `0`",
    "contains(['Refer', 'Rejected'], body.finalDecision)",
    "body.meta.region",
    "body.n == `1`",
    "body.n == `true`",
    "body.tags[*]",
    "@",
    "body",
    "`null` || body.x || 'fallback'",
    "(body.a || body.b) && !body.c",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.sampled_from(["", "a", "Refer", "Rejected", "m", "z"])
)
values = st.recursive(
    scalars,
    lambda c: (
        st.lists(c, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "c", "n", "s", "x"]), c, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.fixed_dictionaries(
    {},
    optional={
        "systemDecision": values,
        "finalDecision": values,
        "manualDecision": values,
        "previousSystemDecision": values,
        "n": values,
        "s": values,
        "a": values,
        "b": values,
        "c": values,
        "x": values,
        "requiredSteps": values,
        "meta": values,
        "tags": values,
    },
)
documents = (
    st.fixed_dictionaries({"event": st.sampled_from(idwise.EVENT_TYPES), "body": bodies}) | values
)


def reference(expression: str, document: object) -> object:
    try:
        return jmespath.search(expression, document)
    except (jmespath.exceptions.JMESPathError, TypeError, ValueError, AttributeError):
        return None


@pytest.mark.parametrize("expression", EXPRESSIONS)
@settings(max_examples=50, deadline=None)
@given(document=documents)
def test_compiled_expressions_agree_with_jmespath(expression: str, document: object) -> None:
    assert search(compile_expression(expression), document) == reference(expression, document)
    # what routing asks: does the condition hold (jmespath's truthiness of its result)
    assert compile_expression(expression).holds(document) is truthy(reference(expression, document))


@pytest.mark.parametrize("event_type", idwise.EVENT_TYPES)
@pytest.mark.parametrize("expression", EXPRESSIONS)
def test_agree_on_every_sample(expression: str, event_type: str) -> None:
    document = idwise.sample(event_type)
    assert search(compile_expression(expression), document) == reference(expression, document)


def test_an_expression_too_deep_for_generated_source_still_evaluates() -> None:
    expression = " || ".join(f"body.f{i}" for i in range(400)) + " || 'last'"
    nested = "(" * 300 + "body.x" + ")" * 300 + " == 'y'"
    for source, document in (
        (expression, {"body": {"f399": 7}}),
        (expression, {"body": {}}),
        (nested, {"body": {"x": "y"}}),
    ):
        assert search(compile_expression(source), document) == reference(source, document)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        ("", False),
        ([], False),
        ({}, False),
        (0, True),
        (0.0, True),
        ("0", True),
        ([0], True),
        ({"a": None}, True),
        (True, True),
    ],
)
def test_truthiness_is_jmespaths(value: object, expected: bool) -> None:
    assert truthy(value) is expected


def test_split_top_level_respects_parentheses() -> None:
    assert split_top_level("a || (b && c)") == ("or", ["a", "(b && c)"])
    assert split_top_level("a && b[?c || d]") == ("and", ["a", "b[?c || d]"])
    assert split_top_level("a") == ("", ["a"])

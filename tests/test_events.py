import contextlib
import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import idwise
from gateway.errors import PayloadError
from gateway.events import canonical_json, parse_event, parse_stored


@pytest.mark.parametrize("event_type", idwise.EVENT_TYPES)
def test_every_sample_parses(event_type: str) -> None:
    event = parse_event(idwise.sample_bytes(event_type))
    assert event.type == event_type
    assert event.raw == idwise.sample_bytes(event_type)
    assert event.journey_key


def test_dedupe_key_is_body_event_id() -> None:
    event = parse_event(idwise.sample_bytes("Finished Journey"))
    assert event.dedupe_key == "f57e0b0b-24ba-4702-838b-05ed5c88d5b6"


def test_top_level_event_id_is_second_choice() -> None:
    event = parse_event(b'{"event": "X", "eventId": "top-1", "body": {}}')
    assert event.dedupe_key == "top-1"


def test_legacy_payload_dedupes_on_canonical_hash() -> None:
    raw = idwise.sample_bytes("Step Submitted")
    event = parse_event(raw)
    document = json.loads(raw)
    expected = hashlib.sha256(
        canonical_json({"event": document["event"], "body": document["body"]})
    ).hexdigest()
    assert event.dedupe_key == "sha256:" + expected
    # same content, other key order and spacing: same key
    reordered = json.dumps(
        {"body": dict(reversed(list(document["body"].items()))), "event": document["event"]}
    )
    assert parse_event(reordered.encode()).dedupe_key == event.dedupe_key


def test_spot_check_journey_key_falls_back() -> None:
    event = parse_event(idwise.sample_bytes("Finished Spot Check"))
    assert event.journey_key == "65ee4c1d9a2b7f3e81d700ca"
    only_ref = parse_event(b'{"event": "X", "body": {"referenceNo": "R-1"}}')
    assert only_ref.journey_key == "R-1"


def test_unknown_fields_and_types_are_accepted() -> None:
    event = parse_event(
        idwise.sample_bytes("Finished Journey").replace(b"Finished Journey", b"Brand New Event")
    )
    assert event.type == "Brand New Event"
    edge = parse_event(idwise.sample_bytes("Finished Journey"))
    assert edge.body["systemDecision"] == "Complete"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b'{"event": "A", "body": {}', "invalid_json"),
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (b'{"body": {}}', "missing_event"),
        (b'{"event": 5, "body": {}}', "missing_event"),
        (b'{"event": "", "body": {}}', "missing_event"),
        (b'{"event": "A"}', "missing_body"),
        (b'{"event": "A", "body": []}', "missing_body"),
        (b'{"event": "A", "body": null}', "missing_body"),
        (b'{"event": "A", "body": {"x": NaN}}', "invalid_json"),
        (b'{"event": "A", "body": {"x": Infinity}}', "invalid_json"),
        (b'{"event": "A", "event": "B", "body": {}}', "invalid_json"),
        (b"\xef\xbb\xbf" + b'{"event": "A", "body": {}}', "invalid_json"),
        (b'{"event": "A", "body": {"n": ' + b"9" * 5000 + b"}}", "invalid_json"),
        (b"[" * 100000, "invalid_json"),
        (b"", "invalid_json"),
    ],
)
def test_bad_bodies_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as caught:
        parse_event(raw)
    assert caught.value.reason == reason
    assert caught.value.status == 400


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=20,
)


@given(st.binary(max_size=300))
def test_parse_never_raises_anything_but_payload_error_on_bytes(raw: bytes) -> None:
    with contextlib.suppress(PayloadError):
        parse_event(raw)


@given(json_values)
def test_parse_never_raises_anything_but_payload_error_on_json(value: object) -> None:
    try:
        event = parse_event(json.dumps(value).encode())
    except PayloadError:
        return
    assert isinstance(event.body, dict)
    assert event.dedupe_key


@pytest.mark.parametrize("event_type", idwise.EVENT_TYPES)
def test_a_stored_event_reads_back_as_it_was_accepted(event_type: str) -> None:
    """Deliveries read stored bodies with the plain decoder: same event, field for field."""
    raw = idwise.sample_bytes(event_type)
    assert parse_stored(raw) == parse_event(raw)


@given(json_values)
def test_every_accepted_body_reads_back_the_same_from_the_store(value: object) -> None:
    raw = json.dumps(value).encode()
    try:
        accepted = parse_event(raw)
    except PayloadError:
        return
    assert parse_stored(raw) == accepted


@given(st.binary(max_size=300))
def test_a_stored_body_that_no_longer_reads_raises_payload_error_only(raw: bytes) -> None:
    with contextlib.suppress(PayloadError):
        parse_stored(raw)

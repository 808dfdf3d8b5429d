"""The seed 004 analytics transform and the seed 003 upper-case transform, without a broker."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest

from include.kafka.wire import AvroDecoder, AvroEncoder, load_schema
from include.streaming.analytics import (
    SCHEMA_PATH,
    AnalyticsTransform,
    InvalidEvent,
    MalformedEvent,
    MissingField,
    UnknownSource,
    WrongType,
    InvalidValue,
    purchase_to_analytics,
    web_to_analytics,
    parse_event,
)
from include.streaming.records import InputRecord
from include.streaming.simulators import purchase_events, web_events
from include.streaming.words import upper_case

NOW = dt.datetime(2024, 6, 1, 12, 0, 5, tzinfo=dt.timezone.utc)
WEB = {"event_id": "web-1", "user_id": "u0042", "session_id": "s000001", "event_type": "click",
       "page": "/products/p017", "timestamp": "2024-06-01T12:00:00.123Z"}
PURCHASE = {"order_id": "ord-1", "user_id": "u0042", "product_id": "p017", "quantity": 2,
            "amount": 39.98, "currency": "USD", "paid_at": 1717243200123}


def _record(topic: str, value: bytes | None, offset: int = 7) -> InputRecord:
    return InputRecord(topic, 1, offset, b"u0042", value, 1717243200000)


@pytest.fixture
def transform():
    schema = load_schema(SCHEMA_PATH)
    return AnalyticsTransform(AvroEncoder(schema, 31), "web", "purchase", clock=lambda: NOW)


@pytest.fixture
def decoder():
    return AvroDecoder(lambda schema_id: load_schema(SCHEMA_PATH))


def test_schema_is_documented_avro_in_the_analytics_namespace():
    schema = load_schema(SCHEMA_PATH)
    assert (schema["namespace"], schema["name"]) == ("io.adpipeline.analytics", "AnalyticsEvent")
    assert schema["doc"] and all(f.get("doc") for f in schema["fields"])


def test_web_event_becomes_an_analytics_event(transform, decoder):
    [output] = transform(_record("web", json.dumps(WEB).encode()))
    assert output.key == b"u0042" and output.partition is None
    event = decoder.decode(output.value)
    assert event == {
        "event_id": "web-1", "event_type": "CLICK", "source": "WEB", "user_id": "u0042",
        "occurred_at": dt.datetime(2024, 6, 1, 12, 0, 0, 123000, tzinfo=dt.timezone.utc),
        "session_id": "s000001", "page": "/products/p017", "product_id": None, "quantity": None,
        "amount": None, "currency": None, "source_topic": "web", "source_partition": 1,
        "source_offset": 7, "processed_at": NOW,
    }


def test_purchase_event_becomes_an_analytics_event_with_an_exact_amount(transform, decoder):
    [output] = transform(_record("purchase", json.dumps(PURCHASE).encode()))
    event = decoder.decode(output.value)
    assert (event["event_type"], event["source"], event["event_id"]) == ("PURCHASE", "PURCHASE", "ord-1")
    assert event["amount"] == Decimal("39.98") and event["quantity"] == 2
    assert event["occurred_at"] == dt.datetime(2024, 6, 1, 12, 0, 0, 123000, tzinfo=dt.timezone.utc)
    assert event["page"] is None and event["currency"] == "USD"


def test_web_event_without_session_is_still_good(transform):
    event = {k: v for k, v in WEB.items() if k != "session_id"}
    assert transform.to_analytics(_record("web", json.dumps(event).encode()))["session_id"] is None


@pytest.mark.parametrize("field", ["event_id", "user_id", "event_type", "page", "timestamp"])
def test_web_event_missing_a_field_fails_naming_it(transform, field):
    event = {k: v for k, v in WEB.items() if k != field}
    with pytest.raises(MissingField, match=field):
        transform(_record("web", json.dumps(event).encode()))


@pytest.mark.parametrize("change, error", [
    ({"user_id": None}, MissingField),
    ({"page": "  "}, MissingField),
    ({"user_id": 42}, WrongType),
    ({"event_type": "scroll"}, InvalidValue),
    ({"timestamp": "yesterday"}, InvalidValue),
    ({"timestamp": "2024-06-01T12:00:00"}, InvalidValue),
])
def test_bad_web_events_fail(transform, change, error):
    with pytest.raises(error):
        transform(_record("web", json.dumps({**WEB, **change}).encode()))


@pytest.mark.parametrize("value, error", [
    (b'{"order_id": "ord-1", "user_', MalformedEvent),
    (b"\xff\xfeO\x00R\x00", MalformedEvent),
    (b'["ord-1", "u0042"]', MalformedEvent),
    (None, MalformedEvent),
    (json.dumps({**PURCHASE, "amount": "39.98 USD"}).encode(), WrongType),
    (json.dumps({**PURCHASE, "quantity": "2"}).encode(), WrongType),
    (json.dumps({**PURCHASE, "quantity": True}).encode(), WrongType),
    (json.dumps({**PURCHASE, "user_id": 42}).encode(), WrongType),
    (json.dumps({**PURCHASE, "paid_at": "2024-06-01T12:00:00Z"}).encode(), WrongType),
    (json.dumps({**PURCHASE, "amount": -5}).encode(), InvalidValue),
    (json.dumps({**PURCHASE, "amount": 1e300}).encode(), InvalidValue),
    (b'{"order_id": "o", "user_id": "u", "product_id": "p", "quantity": 1, "amount": NaN, '
     b'"currency": "USD", "paid_at": 1}', InvalidValue),
    (json.dumps({**PURCHASE, "quantity": 0}).encode(), InvalidValue),
    (json.dumps({**PURCHASE, "currency": "dollars"}).encode(), InvalidValue),
    (json.dumps({k: v for k, v in PURCHASE.items() if k != "product_id"}).encode(), MissingField),
])
def test_bad_purchase_events_fail(transform, value, error):
    with pytest.raises(error):
        transform(_record("purchase", value))


def test_every_failure_is_an_invalid_event(transform):
    # The processor dead-letters any exception; these are the ones the format itself defines.
    for error in (MalformedEvent, MissingField, WrongType, InvalidValue, UnknownSource):
        assert issubclass(error, InvalidEvent)
    with pytest.raises(UnknownSource, match="neither"):
        transform(_record("elsewhere", json.dumps(WEB).encode()))


def test_amount_is_rounded_to_cents_not_float_noise():
    event = purchase_to_analytics({**PURCHASE, "amount": 0.1 + 0.2}, _record("purchase", b""), NOW)
    assert event["amount"] == Decimal("0.30")


def test_parse_event_names_the_source_in_its_error():
    with pytest.raises(MalformedEvent, match="^web event is not valid JSON"):
        parse_event(b"{", "web")
    assert web_to_analytics(parse_event(json.dumps(WEB).encode(), "web"), _record("web", b""), NOW)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_simulated_events_are_bad_exactly_when_the_simulator_says(transform, seed):
    for topic, events in (("web", web_events(300, seed=seed, bad_ratio=0.3)),
                          ("purchase", purchase_events(300, seed=seed, bad_ratio=0.3))):
        for event in events:
            record = _record(topic, event.value, offset=event.seq)
            if event.fault is None:
                assert len(transform(record)) == 1, event
            else:
                with pytest.raises(InvalidEvent):
                    transform(record)


def test_upper_case_keeps_key_headers_and_partition():
    record = InputRecord("input-topic", 2, 9, b"k", "straße".encode(), None, (("h", b"v"),))
    [output] = upper_case(record)
    assert (output.key, output.value, output.headers, output.partition) == \
        (b"k", "STRASSE".encode(), (("h", b"v"),), 2)


def test_upper_case_passes_tombstones_and_rejects_bytes_that_are_not_text():
    assert upper_case(InputRecord("t", 0, 0, b"k", None))[0].value is None
    with pytest.raises(UnicodeDecodeError):
        upper_case(InputRecord("t", 0, 0, None, b"\xff\xfe"))

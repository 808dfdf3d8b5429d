"""Reading a dead letter: a record that is no dead letter becomes an UNDECODABLE letter, never an error of the run."""

from __future__ import annotations

import datetime as dt

import pytest

from include.dlq.letters import UNDECODABLE, read_letter
from include.ingest.envelope import Origin, build_envelope, load_dlq_schema
from include.kafka.reachability import ServiceUnreachable
from include.kafka.registry import UnknownSchemaId
from include.kafka.wire import AvroDecoder, AvroEncoder

ENVELOPE_ID = 7


class _Message:
    """The parts of a confluent_kafka.Message that read_letter uses."""

    def __init__(self, value, headers=None, key=b"k"):
        self._value, self._headers, self._key = value, headers, key

    def topic(self):
        return "ad_events_error"

    def partition(self):
        return 0

    def offset(self):
        return 41

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        return self._headers

    def timestamp(self):
        return (1, 1_700_000_000_000)


def _registry(fails_with=None):
    """A decoder whose registry knows the envelope schema under ENVELOPE_ID, or fails with an error."""
    schema = load_dlq_schema()

    def fetch(schema_id):
        if fails_with is not None:
            raise fails_with
        if schema_id != ENVELOPE_ID:
            raise UnknownSchemaId(f"schema id {schema_id} is not in the Schema Registry (HTTP 404)")
        return schema

    return AvroDecoder(fetch, reader_schema=schema)


def _good_value():
    envelope = build_envelope(source_id="abc", source_uri="train.csv", line=3, hour=14102100, chunk=0,
                              reason="BAD_HEX", field="site_id", message="site_id is not hex", raw=b"1,0,14102100",
                              origin=Origin(), failed_at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
    return AvroEncoder(load_dlq_schema(), ENVELOPE_ID).encode(envelope)


@pytest.mark.parametrize("value, cause", [
    (None, "the value is null"),
    (b"plain text", "not the wire-format magic byte 0"),
    (b"\x00\x00\x00\x00\x63\x02", "schema id 99 is not in the Schema Registry"),
    (b"\x00\x00\x00\x00\x07\xff\xff", "the value's Avro body is not a DlqEnvelope"),
])
def test_a_record_that_is_no_dead_letter_is_an_undecodable_letter_that_keeps_key_value_and_headers(value, cause):
    headers = [("written-by", b"hand"), ("empty", None)]
    letter = read_letter(_Message(value, headers), _registry(), envelope_format=True)
    assert letter.undecodable and letter.reason == UNDECODABLE
    assert cause in letter.envelope["message"]
    assert letter.envelope["raw"] == (value or b"") and letter.key == b"k" and letter.headers == headers
    assert letter.envelope["headers"] == [{"key": "written-by", "value": b"hand"}, {"key": "empty", "value": None}]
    assert letter.where == "ad_events_error/0@41"


def test_a_good_dead_letter_is_read_as_it_was_written():
    letter = read_letter(_Message(_good_value(), [("ingest.hour", b"14102100")]), _registry(), envelope_format=True)
    assert (letter.reason, letter.envelope["raw"], letter.undecodable) == ("BAD_HEX", b"1,0,14102100", False)
    assert letter.envelope["headers"] is None


def test_a_registry_that_does_not_answer_is_the_runs_error_not_the_records():
    with pytest.raises(ServiceUnreachable):
        read_letter(_Message(b"\x00\x00\x00\x00\x63\x02"), _registry(ServiceUnreachable("down")), envelope_format=True)


def test_a_stream_record_without_dlq_headers_is_undecodable_and_a_bad_due_time_is_ignored():
    letter = read_letter(_Message(None, [("dlq.retry.due_ms", b"soon")]), _registry(), envelope_format=False)
    assert letter.undecodable and "no dlq.* headers" in letter.envelope["message"] and letter.due_ms is None

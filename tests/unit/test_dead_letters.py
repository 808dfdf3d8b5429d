"""The dead-letter contract (include.dead_letters): the ingestion's envelopes, the stream processors' headers, and
reading either back, where a record that is no dead letter becomes an UNDECODABLE letter, never an error of the run."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from include.dead_letters import (
    MAX_MESSAGE_CHARS,
    MAX_RAW_BYTES,
    UNDECODABLE,
    Origin,
    build_envelope,
    dead_letter_headers,
    dead_letter_record_headers,
    envelope_headers,
    envelope_id,
    load_dlq_schema,
    read_dead_letter_headers,
    read_letter,
)
from include.kafka.reachability import ServiceUnreachable
from include.kafka.registry import UnknownSchemaId
from include.kafka.wire import AvroDecoder, AvroEncoder
from include.streaming.analytics import MissingField
from include.streaming.records import InputRecord
from tests.fake_messages import FakeMessage

FAILED_AT = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)


# -- The ingestion's envelopes (schemas/dlq_envelope.avsc) ---------------------------------------

def _envelope(**changes):
    values = dict(source_id="sha256-abc", source_uri="s3://bucket/train.gz", line=1234, hour=14102105, chunk=3,
                  reason="NOT_INTEGER", field="C14", message="C14 '12a' is not an integer",
                  raw=b"1000,0,14102105,...,12a", origin=Origin("avazu_hourly_ingest", "manual__1", "ingest_hour", 2),
                  failed_at=FAILED_AT)
    values.update(changes)
    return build_envelope(**values)


def test_envelope_round_trips_through_the_registered_schema():
    schema = load_dlq_schema()
    payload = AvroEncoder(schema, 42).encode(_envelope())
    decoded = AvroDecoder(lambda i: schema).decode(payload)
    assert decoded == {
        "envelope_id": "sha256-abc:1234",
        "reason": "NOT_INTEGER",
        "message": "C14 '12a' is not an integer",
        "field": "C14",
        "raw": b"1000,0,14102105,...,12a",
        "source": {"uri": "s3://bucket/train.gz", "line": 1234, "hour": 14102105, "chunk": 3},
        "origin": {"dag_id": "avazu_hourly_ingest", "run_id": "manual__1", "task_id": "ingest_hour", "try_number": 2},
        "first_failed_at": FAILED_AT,
        "stage": "ingest",
        "attempts": 0,
        "last_error": None,
        "raw_length": 23,
        "raw_sha256": hashlib.sha256(b"1000,0,14102105,...,12a").hexdigest(),
        "headers": None,  # only an UNDECODABLE record's own headers are kept here
    }


def test_raw_bytes_that_are_not_utf8_survive():
    schema = load_dlq_schema()
    raw = b"1000,0,14102105,caf\xc3,\xff\xfe"
    payload = AvroEncoder(schema, 1).encode(_envelope(raw=raw, reason="BAD_ENCODING", field=None, origin=Origin()))
    decoded = AvroDecoder(lambda i: schema).decode(payload)
    assert decoded["raw"] == raw and decoded["field"] is None
    assert decoded["origin"] == {"dag_id": None, "run_id": None, "task_id": None, "try_number": None}


def test_envelope_id_is_stable_per_source_and_line():
    assert envelope_id("sha256-abc", 7) == "sha256-abc:7" == _envelope(line=7)["envelope_id"]


def test_headers_carry_the_reason():
    headers = dict(envelope_headers("BAD_HOUR", 14102105, 0))
    assert headers == {"dlq.reason": b"BAD_HOUR", "dlq.stage": b"ingest", "ingest.hour": b"14102105", "ingest.generation": b"0"}


def test_an_oversized_line_is_kept_only_in_part_with_its_length_and_checksum():
    raw = b"9" * (3 * 1024 * 1024)
    envelope = _envelope(raw=raw)
    assert envelope["raw"] == raw[:MAX_RAW_BYTES] and len(envelope["raw"]) < 1_000_000  # under max.message.bytes
    assert (envelope["raw_length"], envelope["raw_sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
    payload = AvroEncoder(load_dlq_schema(), 42).encode(envelope)
    assert len(payload) < MAX_RAW_BYTES + 1024


# -- The stream processors' dlq.* headers: why and where, next to the record's own, value untouched ---

SOURCE = InputRecord("web-events", 2, 1234, b"u1", b'{"broken":', 1, (("trace-id", b"abc"),))
KST = dt.timezone(dt.timedelta(hours=9))


def test_headers_name_the_error_the_source_and_the_processor():
    headers = dead_letter_headers(MissingField("web event has no 'user_id'"), SOURCE,
                                  "analytics_processor", dt.datetime(2024, 6, 1, 21, 0, tzinfo=KST))
    assert dict(headers) == {
        "dlq.error.class": b"MissingField",
        "dlq.error.message": b"web event has no 'user_id'",
        "dlq.source.topic": b"web-events",
        "dlq.source.partition": b"2",
        "dlq.source.offset": b"1234",
        "dlq.processor": b"analytics_processor",
        "dlq.failed.at": b"2024-06-01T12:00:00.000+00:00",
    }
    assert all(isinstance(v, bytes) for _, v in headers)


def test_record_headers_keep_the_records_own_headers_first():
    headers = dead_letter_record_headers(ValueError("x"), SOURCE, "p", dt.datetime.now(dt.timezone.utc))
    assert headers[0] == ("trace-id", b"abc")
    assert [name for name, _ in headers[1:]] == [name for name, _ in dead_letter_headers(
        ValueError("x"), SOURCE, "p", dt.datetime.now(dt.timezone.utc))]


def test_long_messages_are_cut_and_non_ascii_survives():
    headers = dict(dead_letter_headers(ValueError("처리 실패 " * 500), SOURCE, "p",
                                       dt.datetime.now(dt.timezone.utc)))
    message = headers["dlq.error.message"].decode("utf-8")
    assert len(message) == MAX_MESSAGE_CHARS
    assert message.startswith("처리 실패") and message.endswith("...")


def test_reading_them_back_drops_the_prefix_and_foreign_headers():
    headers = dead_letter_record_headers(KeyError("page"), SOURCE, "p", dt.datetime.now(dt.timezone.utc))
    read = read_dead_letter_headers(list(headers))
    assert read["error.class"] == "KeyError" and read["source.offset"] == "1234"
    assert "trace-id" not in read and read_dead_letter_headers(None) == {}


# -- Reading a dead letter of either kind ---------------------------------------------------------

ENVELOPE_SCHEMA_ID = 7


def _message(value, headers=None):
    """A record at ad_events_error/0@41 with key ``k``."""
    return FakeMessage("ad_events_error", 0, 41, value, b"k", headers)


def _registry(fails_with=None):
    """A decoder whose registry knows the envelope schema under ENVELOPE_SCHEMA_ID, or fails with an error."""
    schema = load_dlq_schema()

    def fetch(schema_id):
        if fails_with is not None:
            raise fails_with
        if schema_id != ENVELOPE_SCHEMA_ID:
            raise UnknownSchemaId(f"schema id {schema_id} is not in the Schema Registry (HTTP 404)")
        return schema

    return AvroDecoder(fetch, reader_schema=schema)


def _good_value():
    envelope = _envelope(source_id="abc", source_uri="train.csv", line=3, hour=14102100, chunk=0,
                         reason="BAD_HEX", field="site_id", message="site_id is not hex", raw=b"1,0,14102100",
                         origin=Origin(), failed_at=dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc))
    return AvroEncoder(load_dlq_schema(), ENVELOPE_SCHEMA_ID).encode(envelope)


@pytest.mark.parametrize("value, cause", [
    (None, "the value is null"),
    (b"plain text", "not the wire-format magic byte 0"),
    (b"\x00\x00\x00\x00\x63\x02", "schema id 99 is not in the Schema Registry"),
    (b"\x00\x00\x00\x00\x07\xff\xff", "the value's Avro body is not a DlqEnvelope"),
])
def test_a_record_that_is_no_dead_letter_is_an_undecodable_letter_that_keeps_key_value_and_headers(value, cause):
    headers = [("written-by", b"hand"), ("empty", None)]
    letter = read_letter(_message(value, headers), _registry(), envelope_format=True)
    assert letter.undecodable and letter.reason == UNDECODABLE
    assert cause in letter.envelope["message"]
    assert letter.envelope["raw"] == (value or b"") and letter.key == b"k" and letter.headers == headers
    assert letter.envelope["headers"] == [{"key": "written-by", "value": b"hand"}, {"key": "empty", "value": None}]
    assert letter.where == "ad_events_error/0@41"


def test_a_good_dead_letter_is_read_as_it_was_written():
    letter = read_letter(_message(_good_value(), [("ingest.hour", b"14102100")]), _registry(), envelope_format=True)
    assert (letter.reason, letter.envelope["raw"], letter.undecodable) == ("BAD_HEX", b"1,0,14102100", False)
    assert letter.envelope["headers"] is None


def test_a_registry_that_does_not_answer_is_the_runs_error_not_the_records():
    with pytest.raises(ServiceUnreachable):
        read_letter(_message(b"\x00\x00\x00\x00\x63\x02"), _registry(ServiceUnreachable("down")), envelope_format=True)


def test_a_stream_record_without_dlq_headers_is_undecodable_and_a_bad_due_time_is_ignored():
    letter = read_letter(_message(None, [("dlq.retry.due_ms", b"soon")]), _registry(), envelope_format=False)
    assert letter.undecodable and "no dlq.* headers" in letter.envelope["message"] and letter.due_ms is None

"""DLQ envelopes (schemas/dlq_envelope.avsc) and checkpoints (schemas/ingest_checkpoint.avsc) as records."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json

import fastavro
import pytest

from include.ingest.checkpoint import (
    Checkpoint,
    CheckpointCodec,
    checkpoint_key,
    load_checkpoint_schema,
    plan_run,
    transactional_id,
)
from include.ingest.envelope import Origin, build_envelope, envelope_headers, envelope_id, load_dlq_schema
from include.kafka.wire import AvroDecoder, AvroEncoder

FAILED_AT = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)


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


def test_checkpoint_round_trip_and_reading_an_older_version():
    schema = load_checkpoint_schema()
    codec = CheckpointCodec(schema, 9, lambda i: schema)
    checkpoint = Checkpoint("sha256-abc", 14102105, chunks_committed=3, rows_read=300, rows_produced=297,
                            rows_dead_lettered=3, complete=False, run_id="r", updated_at=FAILED_AT, generation=1,
                            reingest_request="r", bytes_read=45_000, dead_lettered_by_reason={"BAD_HOUR": 3},
                            source_uri="train.gz")
    assert codec.decode(codec.encode(checkpoint)) == checkpoint

    # A checkpoint written with the first version of the schema reads with the new fields' defaults.
    old = json.loads(json.dumps(schema))
    old["fields"] = [f for f in old["fields"] if f["name"] not in
                     {"generation", "reingest_request", "bytes_read", "dead_lettered_by_reason", "source_uri"}]
    old_payload = AvroEncoder(old, 8).encode({k: v for k, v in checkpoint.as_record().items()
                                              if k in {f["name"] for f in old["fields"]}})
    reader = CheckpointCodec(schema, 9, lambda i: old if i == 8 else schema)
    assert reader.decode(old_payload) == Checkpoint(
        "sha256-abc", 14102105, 3, 300, 297, 3, False, "r", FAILED_AT, generation=0, reingest_request=None,
        bytes_read=0, dead_lettered_by_reason={}, source_uri=None)


def test_new_checkpoint_fields_all_have_defaults():
    # ingest_checkpoints is FULL-compatible: every field added after version 1 needs a default.
    first_version = {"source_id", "hour", "chunks_committed", "rows_read", "rows_produced", "rows_dead_lettered",
                     "complete", "run_id", "updated_at"}
    fields = load_checkpoint_schema()["fields"]
    assert [f["name"] for f in fields if f["name"] not in first_version and "default" not in f] == []
    fastavro.parse_schema(load_checkpoint_schema())


def test_keys_and_transactional_ids_are_stable_per_topic_source_and_hour():
    assert checkpoint_key("ad_events_raw", "sha256-abc", 14102105) == "ad_events_raw/sha256-abc/14102105"
    assert transactional_id("ad_events_raw", "sha256-abc", 14102105) == "avazu-ingest/ad_events_raw/sha256-abc/14102105"
    assert transactional_id("t", "s", 14102105) != transactional_id("t", "s", 14102106)


def _checkpoint(**changes) -> Checkpoint:
    values = dict(source_id="s", hour=14102100, chunks_committed=4, rows_read=400, rows_produced=390,
                  rows_dead_lettered=10, complete=False)
    values.update(changes)
    return Checkpoint(**values)


def test_plan_without_a_checkpoint_ingests_from_the_start():
    plan = plan_run(None)
    assert (plan.action, plan.generation, plan.start_row, plan.start_chunk, plan.base) == ("ingest", 0, 0, 0, None)


def test_plan_resumes_an_unfinished_hour_after_its_last_committed_chunk():
    latest = _checkpoint()
    plan = plan_run(latest)
    assert (plan.action, plan.generation, plan.start_row, plan.start_chunk, plan.base) == ("resume", 0, 400, 4, latest)


def test_plan_for_a_finished_hour_writes_nothing():
    plan = plan_run(_checkpoint(complete=True))
    assert plan.action == "already-complete" and not plan.writes


@pytest.mark.parametrize("request_id", ["run-2", None])
def test_plan_reingest_starts_the_next_generation(request_id):
    plan = plan_run(_checkpoint(complete=True, generation=1, reingest_request="run-1"), reingest=True, request_id=request_id)
    assert (plan.action, plan.generation, plan.start_row, plan.reingest_request) == ("reingest", 2, 0, request_id)


def test_plan_reingest_retry_of_the_same_request_does_not_start_another_generation():
    finished = _checkpoint(complete=True, generation=2, reingest_request="run-2")
    assert plan_run(finished, reingest=True, request_id="run-2").action == "already-complete"
    unfinished = _checkpoint(generation=2, reingest_request="run-2")
    plan = plan_run(unfinished, reingest=True, request_id="run-2")
    assert (plan.action, plan.generation, plan.start_row) == ("resume", 2, 400)


def test_plan_reingest_finishes_an_unfinished_generation_first_and_takes_it_over():
    plan = plan_run(_checkpoint(generation=1, reingest_request="run-1"), reingest=True, request_id="run-9")
    assert (plan.action, plan.generation, plan.reingest_request) == ("resume", 1, "run-9")
    assert plan_run(_checkpoint(generation=1, reingest_request="run-1")).reingest_request == "run-1"


def test_checkpoint_updated_at_is_timestamp_millis():
    schema = load_checkpoint_schema()
    record = _checkpoint(updated_at=FAILED_AT).as_record()
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, fastavro.parse_schema(schema), record)
    buffer.seek(0)
    assert fastavro.schemaless_reader(buffer, fastavro.parse_schema(schema))["updated_at"] == FAILED_AT


def test_an_oversized_line_is_kept_only_in_part_with_its_length_and_checksum():
    from include.ingest.envelope import MAX_RAW_BYTES

    raw = b"9" * (3 * 1024 * 1024)
    envelope = _envelope(raw=raw)
    assert envelope["raw"] == raw[:MAX_RAW_BYTES] and len(envelope["raw"]) < 1_000_000  # under max.message.bytes
    assert (envelope["raw_length"], envelope["raw_sha256"]) == (len(raw), hashlib.sha256(raw).hexdigest())
    payload = AvroEncoder(load_dlq_schema(), 42).encode(envelope)
    assert len(payload) < MAX_RAW_BYTES + 1024

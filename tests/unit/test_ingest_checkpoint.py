"""Ingestion checkpoints (schemas/ingest_checkpoint.avsc) as records, their keys, and the plan a run makes of them."""

from __future__ import annotations

import datetime as dt
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
from include.kafka.wire import AvroEncoder

FAILED_AT = dt.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=dt.timezone.utc)


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

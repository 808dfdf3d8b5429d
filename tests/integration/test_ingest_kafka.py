"""Hourly ingestion on the real broker and registry: exact counts, rows back field for field, DLQ lines and reasons.

A generated file with every fault kind is staged and ingested hour by hour into topics of this
module's own; a ``read_committed`` consumer then reads everything back and compares it with what
the generator says it wrote.
"""

from __future__ import annotations

import gzip
import uuid
from collections import Counter

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.reader import read_all
from include.ingest.checkpoint import checkpoint_key
from include.dead_letters import Origin
from include.ingest.config import load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.kafka.headers import GENERATION_HEADER
from include.encoding.rows import partition_key
from include.ingest.staging import find_partition, stage_source
from include.ingest.config import IngestTopics
from include.ingest.topics import provision_ingest_topics
from include.kafka.reader import read_topic
from include.kafka.wire import AvroDecoder, split_header
from include.kafka.registry import registry_client, schema_fetcher

pytestmark = pytest.mark.integration

HOURS = (14102100, 14102101)
CHUNK_ROWS = 1_500
ORIGIN = Origin("avazu_hourly_ingest", "manual__test", "ingest_hour", 1)


@pytest.fixture(scope="module")
def registry(schema_registry_url):
    return registry_client(schema_registry_url)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """A two-hour file with every fault kind, staged; and what the generator says is in it."""
    folder = tmp_path_factory.mktemp("ingest")
    source = folder / "train.csv.gz"
    truth = generate(GeneratorSpec(8_000, hours=len(HOURS), seed=77, fault_rates={kind: 0.002 for kind in FaultKind}), source)
    assert set(truth.faults) == {kind.value for kind in FaultKind}
    stage_source(str(source), str(folder / "staging"))
    good, _, _ = read_all(str(source))
    lines = gzip.decompress(source.read_bytes()).split(b"\n")
    return {
        "staging": str(folder / "staging"),
        "truth": truth,
        "good_by_hour": {hour: [r for r in good if r["hour"] == hour] for hour in HOURS},
        "line_bytes": lambda number: lines[number - 1],
    }


def _topics(kafka_config, registry) -> IngestTopics:
    suffix = uuid.uuid4().hex[:10]
    topics = IngestTopics(f"ingest_raw_{suffix}", f"ingest_dlq_{suffix}", f"ingest_ckpt_{suffix}")
    provision_ingest_topics(AdminClient(kafka_config), registry, topics)
    return topics


def _ingest(staged, hour, kafka_config, registry, topics, row_codec="native", **options):
    partition = find_partition(staged["staging"], hour)
    config = load_ingest_config().with_topics(topics).replace("test", chunk_rows=CHUNK_ROWS, row_codec=row_codec)
    return HourlyIngestor(partition, config=config, kafka_config=kafka_config, registry=registry, origin=ORIGIN,
                          **options).run()


def _bad_lines_of(staged, hour) -> dict[int, str]:
    partition = find_partition(staged["staging"], hour)
    line_map = partition.line_map()
    in_partition = {line_map.source_line(i) for i in range(partition.rows)}
    return {line: reason.value for line, reason in staged["truth"].bad_lines().items() if line in in_partition}


@pytest.fixture(scope="module", params=["native", "arrow"])
def ingested(request, staged, kafka_config, registry):
    """Both hours ingested once into topics of their own, by each batch encoder (the C codec and its fallback)."""
    topics = _topics(kafka_config, registry)
    results = {hour: _ingest(staged, hour, kafka_config, registry, topics, row_codec=request.param) for hour in HOURS}
    assert {result.row_codec for result in results.values()} == {request.param}
    return topics, results


def test_counts_reconcile_exactly_with_every_fault_kind(staged, ingested):
    _, results = ingested
    truth = staged["truth"]
    for hour, result in results.items():
        partition = find_partition(staged["staging"], hour)
        bad = _bad_lines_of(staged, hour)
        assert result.action == "ingest" and result.complete
        assert result.rows_read == partition.rows == result.rows_produced + result.rows_dead_lettered
        assert result.rows_produced == len(staged["good_by_hour"][hour])
        assert result.dead_lettered_by_reason == dict(Counter(bad.values()))
        assert result.chunks == -(-partition.rows // CHUNK_ROWS)
        assert result.bytes_read > 0 and result.rows_per_s > 0
    assert sum(r.rows_read for r in results.values()) == truth.rows
    assert sum(r.rows_dead_lettered for r in results.values()) == len(truth.bad_lines())


def test_a_read_committed_consumer_gets_every_good_row_back_field_for_field(staged, ingested, kafka_config, registry):
    topics, _ = ingested
    records = read_topic(kafka_config, topics.raw)
    decoder = AvroDecoder(schema_fetcher(registry))
    registered_id = registry.get_latest_version(f"{topics.raw}-value").schema_id
    decoded = []
    for record in records:
        assert split_header(record.value)[0] == registered_id
        row = decoder.decode(record.value)
        assert record.key == partition_key(row).encode()
        decoded.append(row)
    expected = [row for hour in HOURS for row in staged["good_by_hour"][hour]]
    # A multiset of whole rows: duplicate ids in the source must arrive exactly as often as written.
    assert Counter(tuple(sorted(r.items())) for r in decoded) == Counter(tuple(sorted(r.items())) for r in expected)
    assert len(decoded) == len(expected)
    assert len({r.partition for r in records}) == 3  # the key spreads rows over every partition


def test_each_dlq_envelope_names_the_right_line_and_reason(staged, ingested, kafka_config, registry):
    topics, results = ingested
    decoder = AvroDecoder(schema_fetcher(registry))
    records = read_topic(kafka_config, topics.dlq)
    envelopes = [decoder.decode(r.value) for r in records]
    assert {e["source"]["line"]: e["reason"] for e in envelopes} == {line: reason.value for line, reason in staged["truth"].bad_lines().items()}
    assert len(envelopes) == len(staged["truth"].bad_lines())
    fields = staged["truth"].fault_fields
    for record, envelope in zip(records, envelopes):
        line = envelope["source"]["line"]
        assert envelope["raw"] == staged["line_bytes"](line)  # the input exactly as read, invalid UTF-8 included
        assert dict(record.headers)["dlq.reason"] == envelope["reason"].encode()
        assert record.key == envelope["envelope_id"].encode() == f"{results[HOURS[0]].source_id}:{line}".encode()
        assert envelope["origin"] == ORIGIN.as_dict() and envelope["stage"] == "ingest"
        assert envelope["source"]["hour"] in HOURS and envelope["source"]["uri"].endswith("train.csv.gz")
        if envelope["reason"] in {"NOT_INTEGER", "EMPTY_REQUIRED", "BAD_HOUR"}:
            assert envelope["field"] == fields[line]


def test_the_checkpoint_marks_each_hour_complete(ingested, kafka_config, registry):
    topics, results = ingested
    decoder = AvroDecoder(schema_fetcher(registry))
    latest = {}
    for record in read_topic(kafka_config, topics.checkpoints):
        latest[record.key.decode()] = decoder.decode(record.value)
    for hour, result in results.items():
        checkpoint = latest[checkpoint_key(topics.raw, result.source_id, hour)]
        assert checkpoint["complete"] and checkpoint["chunks_committed"] == result.chunks
        assert (checkpoint["rows_read"], checkpoint["rows_produced"], checkpoint["rows_dead_lettered"]) == (
            result.rows_read, result.rows_produced, result.rows_dead_lettered)
        assert checkpoint["run_id"] == ORIGIN.run_id and checkpoint["generation"] == 0


def _end_offsets(kafka_config, topics: IngestTopics) -> dict:
    from confluent_kafka import Consumer

    consumer = Consumer({**kafka_config, "group.id": f"offsets-{uuid.uuid4().hex}"})
    try:
        ends = {}
        for topic in (topics.raw, topics.dlq, topics.checkpoints):
            for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                ends[(topic, partition)] = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
        return ends
    finally:
        consumer.close()


def test_a_finished_hour_adds_nothing_and_reingest_writes_one_new_generation(staged, kafka_config, registry):
    topics = _topics(kafka_config, registry)
    hour = HOURS[1]
    first = _ingest(staged, hour, kafka_config, registry, topics)
    ends = _end_offsets(kafka_config, topics)

    again = _ingest(staged, hour, kafka_config, registry, topics)
    assert again.action == "already-complete"
    assert (again.rows_read, again.rows_produced, again.rows_dead_lettered, again.chunks) == (0, 0, 0, 0)
    assert (again.hour_rows_read, again.complete) == (first.rows_read, True)
    assert _end_offsets(kafka_config, topics) == ends  # not a single record, not even a transaction marker

    reingested = _ingest(staged, hour, kafka_config, registry, topics, reingest=True, request_id="reingest-1")
    assert (reingested.action, reingested.generation, reingested.rows_read) == ("reingest", 1, first.rows_read)
    retried = _ingest(staged, hour, kafka_config, registry, topics, reingest=True, request_id="reingest-1")
    assert retried.action == "already-complete" and retried.generation == 1

    raw = read_topic(kafka_config, topics.raw)
    generations = Counter(dict(r.headers).get(GENERATION_HEADER, b"0") for r in raw)
    assert generations == {b"0": first.rows_produced, b"1": first.rows_produced}
    dlq = read_topic(kafka_config, topics.dlq)
    assert Counter(dict(r.headers)[GENERATION_HEADER] for r in dlq) == {b"0": first.rows_dead_lettered, b"1": first.rows_dead_lettered}
    # The envelope ids repeat across generations: reprocessing can tell it has seen a line.
    assert len({r.key for r in dlq}) == first.rows_dead_lettered


def test_missing_schemas_or_topics_fail_with_one_sentence(staged, kafka_config, registry):
    import json

    from confluent_kafka.schema_registry import Schema

    from include.ingest.checkpoint import load_checkpoint_schema
    from include.dead_letters import load_dlq_schema
    from include.kafka.errors import TopicsMissing
    from include.encoding.rows import load_ad_event_schema
    from include.kafka.registry import SchemaNotRegistered

    suffix = uuid.uuid4().hex[:10]
    topics = IngestTopics(f"absent_raw_{suffix}", f"absent_dlq_{suffix}", f"absent_ckpt_{suffix}")
    with pytest.raises(SchemaNotRegistered, match=f"subject absent_raw_{suffix}-value .* run the kafka_provisioning DAG"):
        _ingest(staged, HOURS[0], kafka_config, registry, topics)
    for topic, schema in ((topics.raw, load_ad_event_schema()), (topics.dlq, load_dlq_schema()),
                          (topics.checkpoints, load_checkpoint_schema())):
        registry.register_schema(f"{topic}-value", Schema(json.dumps(schema, separators=(",", ":")), "AVRO"))
    with pytest.raises(TopicsMissing, match=f"absent_raw_{suffix}, absent_dlq_{suffix}, absent_ckpt_{suffix} do not exist"):
        _ingest(staged, HOURS[0], kafka_config, registry, topics)

"""Exactly once across crashes: SIGKILL the ingesting process at several points, retry, count every row.

Each attempt is ``python -m include.ingest ingest`` in a subprocess that kills itself with SIGKILL
at a chosen chunk and phase (``AVAZU_INGEST_KILL_AT``) - mid-produce, after produce but before
commit, right after begin, right after commit - the way a lost worker dies, with no cleanup. The
next attempt resumes; at the end a ``read_committed`` consumer over the whole topics must see
every source row exactly once, in the raw topic or in the DLQ.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient

from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.reader import read_all
from include.ingest.__main__ import KILL_AT_ENV
from include.ingest.checkpoint import transactional_id
from include.ingest.config import load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import find_partition, stage_source
from include.ingest.config import IngestTopics
from include.ingest.topics import provision_ingest_topics
from include.kafka.errors import ProducerFenced
from include.kafka.reader import read_topic
from include.kafka.wire import AvroDecoder
from include.kafka.registry import registry_client, schema_fetcher

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOUR = 14102100
CHUNK_ROWS = 1_000
# (chunk, phase) of each killed attempt, in order; every attempt resumes where the last commit left off.
KILLS = [(1, "mid_produce"), (3, "before_commit"), (5, "after_begin"), (7, "after_commit"), (9, "before_commit")]


@pytest.fixture
def setup(tmp_path, kafka_config, schema_registry_url, unique_name):
    source = tmp_path / "train.csv.gz"
    truth = generate(GeneratorSpec(12_000, hours=1, seed=404, fault_rates={kind: 0.002 for kind in FaultKind}), source)
    staging = tmp_path / "staging"
    stage_source(str(source), str(staging))
    registry = registry_client(schema_registry_url)
    topics = IngestTopics(unique_name("raw"), unique_name("dlq"), unique_name("ckpt"))
    provision_ingest_topics(AdminClient(kafka_config), registry, topics)
    good, _, _ = read_all(str(source))
    return {"source": source, "staging": staging, "truth": truth, "registry": registry, "topics": topics, "good": good}


def _attempt(setup, kill_at: str | None) -> subprocess.CompletedProcess:
    topics = setup["topics"]
    env = {key: value for key, value in os.environ.items() if key != KILL_AT_ENV}
    if kill_at:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run(
        [sys.executable, "-m", "include.ingest", "ingest", "--staging", str(setup["staging"]), "--hour", str(HOUR),
         "--chunk-rows", str(CHUNK_ROWS), "--raw-topic", topics.raw, "--dlq-topic", topics.dlq,
         "--checkpoint-topic", topics.checkpoints],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )


def test_killed_anywhere_and_retried_every_row_arrives_exactly_once(setup, kafka_config):
    topics, registry = setup["topics"], setup["registry"]
    for chunk, phase in KILLS:
        attempt = _attempt(setup, f"{chunk}:{phase}")
        assert attempt.returncode == -signal.SIGKILL, attempt.stderr[-2000:]
        assert f"{KILL_AT_ENV}={chunk}:{phase}" in attempt.stderr

    finished = _attempt(setup, None)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    partition = find_partition(str(setup["staging"]), HOUR)
    assert result["action"] == "resume" and result["resumed_from_chunk"] == KILLS[-1][0]
    assert result["complete"] and result["hour_rows_read"] == partition.rows == setup["truth"].rows
    assert result["hour_chunks"] == -(-partition.rows // CHUNK_ROWS)

    decoder = AvroDecoder(schema_fetcher(registry))
    raw = [decoder.decode(r.value) for r in read_topic(kafka_config, topics.raw)]
    expected = Counter(tuple(sorted(r.items())) for r in setup["good"])
    assert Counter(tuple(sorted(r.items())) for r in raw) == expected  # none missing, none twice
    assert len(raw) == result["hour_rows_produced"] == len(setup["good"])
    lines = Counter(decoder.decode(r.value)["source"]["line"] for r in read_topic(kafka_config, topics.dlq))
    assert lines == Counter(setup["truth"].bad_lines().keys())  # each bad line once
    assert result["hour_rows_dead_lettered"] == len(setup["truth"].bad_lines())

    # The kills really landed between produce and commit: the log holds aborted records.
    uncommitted = read_topic(kafka_config, topics.raw, committed_only=False)
    assert len(uncommitted) > len(raw)

    # A retried finished hour adds nothing.
    again = _attempt(setup, None)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout.strip().splitlines()[-1])["action"] == "already-complete"
    assert len(read_topic(kafka_config, topics.raw, committed_only=False)) == len(uncommitted)


def test_a_retry_fences_the_zombie_of_the_previous_try(setup, kafka_config):
    """A still-running earlier attempt (same transactional id) cannot commit once a retry has started."""
    topics = setup["topics"]
    partition = find_partition(str(setup["staging"]), HOUR)
    zombie = Producer({**kafka_config, "transactional.id": transactional_id(topics.raw, partition.source_id, HOUR)})
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(topics.raw, value=b"zombie", key=b"zombie")
    assert zombie.flush(30) == 0

    config = load_ingest_config().with_topics(topics).replace("test", chunk_rows=5_000)
    result = HourlyIngestor(partition, config=config, kafka_config=kafka_config, registry=setup["registry"]).run()
    assert result.complete and result.rows_read == partition.rows

    with pytest.raises(KafkaException) as fenced:
        zombie.commit_transaction(30)
    assert fenced.value.args[0].fatal() or "fenced" in str(fenced.value).lower()
    assert all(r.value != b"zombie" for r in read_topic(kafka_config, topics.raw))


def test_an_ingestion_fenced_mid_run_ends_with_the_projects_message(setup, kafka_config, caplog):
    """A newer attempt takes the transactional id while this one is about to commit a chunk."""
    topics = setup["topics"]
    partition = find_partition(str(setup["staging"]), HOUR)
    newer = Producer({**kafka_config, "transactional.id": transactional_id(topics.raw, partition.source_id, HOUR)})

    def fence(phase: str, chunk: int) -> None:
        if (chunk, phase) == (1, "before_commit"):
            newer.init_transactions(30)  # bumps the epoch: the running attempt is a zombie now

    config = load_ingest_config().with_topics(topics).replace("test", chunk_rows=CHUNK_ROWS)
    ingestor = HourlyIngestor(partition, config=config, kafka_config=kafka_config, registry=setup["registry"],
                              phase_hook=fence)
    with pytest.raises(ProducerFenced) as fenced:
        ingestor.run()
    # The project's sentence is what the task ends with, not librdkafka's _FENCED from a flush on the way out.
    assert f"another instance with transactional.id {ingestor.transactional_id} has started" in str(fenced.value)
    assert str(fenced.value).startswith(f"hour {HOUR} of {partition.source_id}: fenced while trying to commit")
    # librdkafka's _FENCED is not printed as a second traceback beside it ("from None").
    assert fenced.value.__suppress_context__ and fenced.value.__cause__ is None
    # Only chunk 0 was committed; chunk 1 of the zombie is not visible.
    assert len(read_topic(kafka_config, topics.raw)) + len(read_topic(kafka_config, topics.dlq)) == CHUNK_ROWS

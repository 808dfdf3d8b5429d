"""Staging from and to S3 (the local stack's S3 endpoint, a bucket per test), and ingesting an hour staged there."""

from __future__ import annotations

import gzip
import os
import uuid

import pytest
from confluent_kafka.admin import AdminClient

from include import storage
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.ingest.config import load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import MANIFEST_NAME, find_partition, stage_source
from include.ingest.config import IngestTopics
from include.ingest.topics import provision_ingest_topics
from include.kafka.reader import read_topic
from include.kafka.registry import registry_client

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_endpoint_url, monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_endpoint_url)
    for key, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")):
        if key not in os.environ:
            monkeypatch.setenv(key, value)
    name = f"ingest-{uuid.uuid4().hex[:12]}"
    storage.s3_client().create_bucket(Bucket=name)
    return name


def _upload(bucket: str, key: str, path) -> str:
    storage.s3_client().upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


def _keys(prefix: str) -> list[str]:
    return [uri.removeprefix(prefix + "/") for uri in storage.list_uris(prefix)]


def test_s3_source_to_s3_staging_is_idempotent_and_matches_local_staging(bucket, tmp_path):
    local = tmp_path / "train.csv.gz"
    truth = generate(GeneratorSpec(6_000, hours=3, seed=8, fault_rates={kind: 0.003 for kind in FaultKind}), local)
    source = _upload(bucket, "raw/train.csv.gz", local)
    staging = f"s3://{bucket}/staging"

    result = stage_source(source, staging)
    assert (result.action, result.rows, result.bad_rows, result.hours) == ("staged", truth.rows, len(truth.bad_lines()), 3)
    assert result.source_id.startswith("etag-")
    assert sorted(_keys(staging)) == sorted(
        [MANIFEST_NAME] + [f"hour={h}/{name}" for h in truth.hours for name in ("_partition.json", f"part-{result.source_id}.csv.gz")])

    local_result = stage_source(str(local), str(tmp_path / "staging"))
    for hour in truth.hours:
        remote, here = find_partition(staging, hour), find_partition(str(tmp_path / "staging"), hour)
        assert (remote.rows, remote.bad_rows, remote.line_runs) == (here.rows, here.bad_rows, here.line_runs)
        assert gzip.decompress(storage.read_bytes(remote.data_uri)) == gzip.decompress(storage.read_bytes(here.data_uri))
    assert local_result.rows_per_hour == result.rows_per_hour

    again = stage_source(source, staging)
    assert again.action == "unchanged" and again.source_id == result.source_id


def test_a_changed_s3_object_is_restaged(bucket, tmp_path):
    first_file, second_file = tmp_path / "a.csv.gz", tmp_path / "b.csv.gz"
    generate(GeneratorSpec(3_000, hours=3, seed=1), first_file)
    generate(GeneratorSpec(2_000, start_hour=14102101, hours=1, seed=2), second_file)
    staging = f"s3://{bucket}/staging"
    first = stage_source(_upload(bucket, "raw/train.csv.gz", first_file), staging)
    second = stage_source(_upload(bucket, "raw/train.csv.gz", second_file), staging)
    assert second.action == "restaged" and second.source_id != first.source_id
    assert sorted(_keys(staging)) == [MANIFEST_NAME, "hour=14102101/_partition.json", f"hour=14102101/part-{second.source_id}.csv.gz"]


def test_a_local_source_staged_to_s3_ingests_from_there(bucket, tmp_path, kafka_config, schema_registry_url, unique_name):
    local = tmp_path / "train.csv.gz"
    truth = generate(GeneratorSpec(3_000, hours=1, seed=9, fault_rates={FaultKind.BAD_HOUR: 0.01}), local)
    staging = f"s3://{bucket}/staging"
    stage_source(str(local), staging)
    registry = registry_client(schema_registry_url)
    topics = IngestTopics(unique_name("raw"), unique_name("dlq"), unique_name("ckpt"))
    provision_ingest_topics(AdminClient(kafka_config), registry, topics)
    partition = find_partition(staging, 14102100)
    assert partition.data_uri.startswith(f"s3://{bucket}/staging/hour=14102100/")
    config = load_ingest_config().with_topics(topics).replace("test", chunk_rows=1_000)
    result = HourlyIngestor(partition, config=config, kafka_config=kafka_config, registry=registry).run()
    assert (result.rows_read, result.rows_dead_lettered, result.complete) == (3_000, len(truth.bad_lines()), True)
    assert len(read_topic(kafka_config, topics.raw)) == 3_000 - len(truth.bad_lines())


def test_a_missing_s3_source_is_one_sentence(bucket):
    from include.storage import SourceMissing

    with pytest.raises(SourceMissing, match=f"source s3://{bucket}/raw/nope.csv.gz does not exist"):
        stage_source(f"s3://{bucket}/raw/nope.csv.gz", f"s3://{bucket}/staging")

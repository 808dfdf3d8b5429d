"""Reading Avazu files from S3 and writing samples, statistics and the report to an S3 prefix.

Runs against a real S3 HTTP endpoint (the local stack's moto server) through boto3; each test
uses its own bucket.
"""

from __future__ import annotations

import gzip
import json
import os
import uuid

import pytest

from include import storage
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.reader import AvazuReader, TruncatedInputError, read_all
from include.eda.report import write_report
from include.eda.sampling import SamplingPlan
from include.eda.survey import survey

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(s3_endpoint_url, monkeypatch):
    """A fresh bucket; the code under test finds the endpoint through the environment."""
    monkeypatch.setenv("S3_ENDPOINT_URL", s3_endpoint_url)
    for key, value in (
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ):
        if key not in os.environ:
            monkeypatch.setenv(key, value)
    name = f"avazu-{uuid.uuid4().hex[:12]}"
    storage.s3_client().create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def local_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s3src")
    spec = GeneratorSpec(20_000, seed=51, fault_rates={kind: 0.003 for kind in FaultKind})
    gz_truth = generate(spec, folder / "train.csv.gz")
    generate(spec, folder / "train.csv")
    cut_truth = generate(
        GeneratorSpec(20_000, seed=52, truncate_fraction=0.7), folder / "cut.csv.gz"
    )
    return folder, gz_truth, cut_truth


def _upload(bucket: str, key: str, path) -> str:
    storage.s3_client().upload_file(str(path), bucket, key)
    return f"s3://{bucket}/{key}"


@pytest.mark.parametrize("name", ["train.csv.gz", "train.csv"])
def test_reads_gzip_and_plain_from_s3_exactly_like_local(bucket, local_files, name):
    folder, truth, _ = local_files
    uri = _upload(bucket, f"raw/{name}", folder / name)
    records, bad, progress = read_all(uri, chunk_rows=3_000)
    local_records, local_bad, _ = read_all(str(folder / name))
    assert records == local_records and bad == local_bad
    assert {b.line_number: b.reason for b in bad} == truth.bad_lines()
    assert (
        progress.rows_read == 20_000 and progress.bytes_compressed == (folder / name).stat().st_size
    )


def test_truncated_object_on_s3_raises_with_position(bucket, local_files):
    folder, _, cut_truth = local_files
    uri = _upload(bucket, "raw/cut.csv.gz", folder / "cut.csv.gz")
    rows = 0
    with pytest.raises(TruncatedInputError) as error:
        for chunk in AvazuReader(uri, chunk_rows=4_000):
            rows += chunk.rows_read
    assert error.value.lines_read == cut_truth.complete_lines_after_truncation == rows + 1
    assert uri in str(error.value)


def test_survey_and_report_write_everything_to_an_s3_prefix(bucket, local_files):
    folder, truth, _ = local_files
    source = _upload(bucket, "raw/train.csv.gz", folder / "train.csv.gz")
    prefix = f"s3://{bucket}/eda/run-1"
    plan = SamplingPlan(
        head_sizes=(100, 1_000), uniform_size=500, per_hour_size=3, seed=7, compress=True
    )
    result = survey(source, prefix, plan)
    written = write_report(prefix)

    keys = {uri.removeprefix(f"{prefix}/") for uri in storage.list_uris(prefix)}
    assert keys == {
        "data_stats.json",
        "eda_report.md",
        "plots/ctr_by_hour.png",
        "plots/rows_per_hour.png",
        "plots/ctr_by_banner_pos_and_device_type.png",
        "samples/train_sample_100.csv.gz",
        "samples/train_sample_1k.csv.gz",
        "samples/train_uniform_500.csv.gz",
        "samples/train_per_hour_3.csv.gz",
        "samples/bad_rows_head.csv",
    }
    stats = json.loads(storage.read_bytes(result.stats_uri))
    assert stats["rows"] == {
        "read": 20_000,
        "good": 20_000 - len(truth.bad_lines()),
        "bad": len(truth.bad_lines()),
    }
    assert stats["duplicate_ids"]["duplicate_rows"] == len(truth.faults["duplicate_id"])
    sample = (
        gzip.decompress(storage.read_bytes(f"{prefix}/samples/train_uniform_500.csv.gz"))
        .decode()
        .splitlines()
    )
    assert len(sample) == 501
    assert storage.read_bytes(written["plot_uris"][0])[:4] == b"\x89PNG"
    assert "## Overview" in storage.read_bytes(written["report_uri"]).decode()


def test_storage_helpers_on_s3(bucket):
    uri = f"s3://{bucket}/a/b.txt"
    assert not storage.exists(uri)
    storage.write_text(uri, "hello")
    assert storage.exists(uri) and storage.size_of(uri) == 5
    assert storage.read_bytes(uri) == b"hello"
    assert storage.list_uris(f"s3://{bucket}/a") == [uri]

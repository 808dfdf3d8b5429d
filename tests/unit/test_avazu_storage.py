"""Local side of include.storage (the S3 side runs in tests/integration/test_avazu_s3.py)."""

from __future__ import annotations

import pytest

from include import storage


def test_s3_uris_are_split_and_checked():
    assert storage.split_s3_uri("s3://bucket/a/b.csv.gz") == ("bucket", "a/b.csv.gz")
    assert storage.split_s3_uri("s3://bucket") == ("bucket", "")
    with pytest.raises(ValueError, match="no bucket"):
        storage.split_s3_uri("s3:///key")
    with pytest.raises(ValueError, match="not an s3"):
        storage.split_s3_uri("/tmp/x")


def test_relative_paths_are_taken_from_the_project_root(tmp_path):
    assert storage.resolve_local("data/avazu/x.csv") == str(
        storage.PROJECT_ROOT / "data/avazu/x.csv"
    )
    assert storage.resolve_local(str(tmp_path)) == str(tmp_path)
    assert storage.resolve_local("s3://b/k") == "s3://b/k"
    assert (storage.PROJECT_ROOT / "include" / "storage.py").is_file()


def test_join_uri():
    assert storage.join_uri("s3://b/prefix/", "samples", "/x.csv") == "s3://b/prefix/samples/x.csv"
    assert storage.join_uri("/tmp/out", "plots/a.png") == "/tmp/out/plots/a.png"


def test_local_write_read_list(tmp_path):
    target = str(tmp_path / "deep" / "er" / "file.txt")
    assert not storage.exists(target)
    storage.write_text(target, "héllo")
    assert storage.exists(target) and storage.size_of(target) == len("héllo".encode())
    assert storage.read_bytes(target).decode() == "héllo"
    storage.write_bytes(str(tmp_path / "a.bin"), b"\x00")
    assert storage.list_uris(str(tmp_path)) == sorted([str(tmp_path / "a.bin"), target])


def test_s3_client_uses_the_endpoint_from_the_environment(monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    assert storage.s3_client().meta.endpoint_url == "http://127.0.0.1:1"
    monkeypatch.delenv("S3_ENDPOINT_URL")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:2")
    assert storage.s3_client().meta.endpoint_url == "http://127.0.0.1:2"

"""Open, write and list files by URI: a local path or ``s3://bucket/key``.

S3 goes through boto3. The endpoint comes from ``S3_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL``)
when set, so the same code talks to AWS, MinIO or a moto server. Relative local paths are taken
from the project root, so DAG params such as ``data/avazu/train_sample.csv.gz`` mean the same
file whatever the worker's current directory is.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from include.errors import PermanentError, RetriableError
from include.paths import PROJECT_ROOT


_NOT_FOUND_CODES = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")
_DENIED_CODES = ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken")


class SourceMissing(PermanentError):
    """A file or S3 object that should be there is not."""


class StorageAccessDenied(PermanentError):
    """S3 refused the request: no credentials, wrong credentials or no permission."""


class StorageUnavailable(RetriableError):
    """The S3 endpoint did not answer, or answered with a server error."""


@contextmanager
def storage_errors(uri: str) -> Iterator[None]:
    """Turn the I/O errors of reading or writing ``uri`` into the project's, with one sentence each."""
    try:
        yield
    except FileNotFoundError:
        raise SourceMissing(f"{uri} does not exist") from None
    except Exception as error:
        translated = _s3_error(uri, error)
        if translated is None:
            raise
        raise translated from None


def _s3_error(uri: str, error: Exception) -> Exception | None:
    try:
        from botocore import exceptions
    except ImportError:
        return None
    endpoint = os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    if isinstance(error, (exceptions.NoCredentialsError, exceptions.PartialCredentialsError)):
        return StorageAccessDenied(f"no AWS credentials were found for {uri}: set AWS_ACCESS_KEY_ID and "
                                   "AWS_SECRET_ACCESS_KEY (or a profile or role) for the task")
    if isinstance(error, (exceptions.EndpointConnectionError, exceptions.ConnectTimeoutError,
                          exceptions.ReadTimeoutError)):
        return StorageUnavailable(f"the S3 endpoint {endpoint} did not answer for {uri}: {error}")
    if isinstance(error, exceptions.ClientError):
        code = str(error.response.get("Error", {}).get("Code"))
        if code in _NOT_FOUND_CODES:
            return SourceMissing(f"{uri} does not exist ({code})")
        if code in _DENIED_CODES:
            return StorageAccessDenied(f"S3 refused access to {uri} ({code}): check the task's AWS credentials")
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if status >= 500 or code in ("SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError"):
            return StorageUnavailable(f"S3 failed for {uri} ({code}); another try may pass")
        return StorageAccessDenied(f"S3 refused the request for {uri} ({code}: {error})")
    return None


# Above this size an S3 upload spills from memory to a temporary file, so writing a large
# object never holds it all in memory.
_SPOOL_LIMIT_BYTES = 16 * 1024 * 1024
_READ_BUFFER_BYTES = 1024 * 1024


def is_s3_uri(uri: str) -> bool:
    """True for ``s3://`` URIs."""
    return uri.startswith("s3://")


def split_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty for a bucket root."""
    if not is_s3_uri(uri):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} has no bucket name")
    return bucket, key


def resolve_local(uri: str) -> str:
    """``uri`` unchanged for S3, else an absolute local path (relative to the project root)."""
    if is_s3_uri(uri):
        return uri
    path = Path(uri).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)


def join_uri(prefix: str, *parts: str) -> str:
    """Join a folder URI (local or S3) with relative parts using ``/``."""
    uri = prefix.rstrip("/")
    for part in parts:
        uri = f"{uri}/{part.strip('/')}"
    return uri


def s3_client():
    """A boto3 S3 client, pointed at ``S3_ENDPOINT_URL`` or ``AWS_ENDPOINT_URL`` when set."""
    import boto3  # imported lazily: local-only runs and DAG parsing never pay for it

    endpoint = os.environ.get("S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint)


def exists(uri: str) -> bool:
    """True when the local file or S3 object exists."""
    if not is_s3_uri(uri):
        return Path(resolve_local(uri)).is_file()
    bucket, key = split_s3_uri(uri)
    try:
        with storage_errors(uri):
            s3_client().head_object(Bucket=bucket, Key=key)
    except SourceMissing:
        return False
    return True


def size_of(uri: str) -> int:
    """Size in bytes of a local file or S3 object."""
    with storage_errors(uri):
        if not is_s3_uri(uri):
            return Path(resolve_local(uri)).stat().st_size
        bucket, key = split_s3_uri(uri)
        return int(s3_client().head_object(Bucket=bucket, Key=key)["ContentLength"])


def open_read(uri: str) -> BinaryIO:
    """Open a local file or S3 object for streaming binary reads (the caller closes it)."""
    with storage_errors(uri):
        if not is_s3_uri(uri):
            return open(resolve_local(uri), "rb")
        bucket, key = split_s3_uri(uri)
        body = s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    return io.BufferedReader(_S3Body(body), buffer_size=_READ_BUFFER_BYTES)


class _S3Body(io.RawIOBase):
    """Adapts botocore's StreamingBody to the ``io`` raw protocol so it can be buffered."""

    def __init__(self, body) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


@contextmanager
def open_write(uri: str) -> Iterator[BinaryIO]:
    """Open a local file or S3 object for binary writing; the object appears when the block ends.

    Local parent folders are created. For S3 the bytes are spooled (memory, then a temporary
    file) and uploaded on a clean exit; nothing is uploaded if the block raises.
    """
    if not is_s3_uri(uri):
        path = Path(resolve_local(uri))
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            yield handle
        return
    bucket, key = split_s3_uri(uri)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_LIMIT_BYTES) as spool:
        yield spool
        spool.seek(0)
        with storage_errors(uri):
            s3_client().upload_fileobj(spool, bucket, key)


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object or file."""
    with open_write(uri) as handle:
        handle.write(data)


def write_text(uri: str, text: str) -> None:
    """Write a whole text object or file as UTF-8."""
    write_bytes(uri, text.encode("utf-8"))


def read_bytes(uri: str) -> bytes:
    """Read a whole object or file (meant for small files: stats, reports)."""
    with open_read(uri) as handle:
        return handle.read()


def delete(uri: str) -> None:
    """Remove a file or S3 object; one that does not exist is no error."""
    with storage_errors(uri):
        if not is_s3_uri(uri):
            Path(resolve_local(uri)).unlink(missing_ok=True)
            return
        bucket, key = split_s3_uri(uri)
        s3_client().delete_object(Bucket=bucket, Key=key)


def list_uris(prefix: str) -> list[str]:
    """Every file below a local folder or S3 prefix, as URIs, sorted."""
    if not is_s3_uri(prefix):
        root = Path(resolve_local(prefix))
        return sorted(str(p) for p in root.rglob("*") if p.is_file())
    bucket, key = split_s3_uri(prefix)
    key = key.rstrip("/") + "/" if key else ""
    paginator = s3_client().get_paginator("list_objects_v2")
    uris = []
    with storage_errors(prefix):
        for page in paginator.paginate(Bucket=bucket, Prefix=key):
            uris.extend(f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", []))
    return sorted(uris)

"""Split an Avazu source once into per-hour partitions, so each hourly run reads only its hour.

Layout under the staging location (a local folder or an ``s3://`` prefix)::

    _manifest.json                      the source (URI, size, checksum or ETag), totals, hours
    hour=14102100/_partition.json       that hour's rows, bad lines by reason, source line runs
    hour=14102100/part-<source>.csv.gz  the hour's lines, byte for byte, under the Avazu header

One streaming pass with bounded memory: the source is inflated block by block, every line is
checked against the contract (for the manifest's counts; ingestion checks again and must agree)
and appended to its hour's gzip file in a local temporary folder, then the partitions are moved
or uploaded into place. The clean rows of a block - nearly all - are recognised in one call of the
ingestion's C codec (:mod:`include.encoding.native`, outside the interpreter) and only the lines it
declines go through :func:`parse_line` one by one, which decides them as before; without the C
codec every line goes through :func:`parse_line`. A line goes to the hour in its ``hour`` field; a line whose hour cannot
be read (a broken row) goes to the hour of the line before it, so every line of the source is in
exactly one partition and is dead-lettered, with its original line number, by that hour's run.
``line_runs`` maps a partition's lines back to source line numbers.

Staging again is a no-op while the source is unchanged: same size and same checksum (sha256 of
a local file; the ETag of an S3 object). A local file whose size and modification time equal the
manifest's is taken as unchanged without hashing it again (hashing 8 GB every hour is waste); any
other change is hashed, and a different checksum re-stages. ``_manifest.json`` is written last,
so a staging that dies midway is simply done again. Partition files are named after the source,
so an ingestion reading an hour while a changed source is being re-staged keeps reading the file
its ``_partition.json`` names.
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import fcntl
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from include import storage
from include.avazu.contract import AVAZU_HOUR_SET, HEADER_LINE, parse_line
from include.avazu.generator import GeneratorSpec, generate_if_missing
from include.avazu.lines import LineSource, TextLines, UndecodableLine
from include.avazu.reader import AvazuInputError
from include.encoding.batch import RowCodecUnavailable
from include.encoding.native import NativeColumns

log = logging.getLogger(__name__)

MANIFEST_NAME = "_manifest.json"
PARTITION_MANIFEST_NAME = "_partition.json"
FORMAT_VERSION = 1
# Lines before the first line with a readable hour wait in memory for that hour; a file that
# has none for this long is not an Avazu file worth staging.
_MAX_PENDING_LINES = 1_000_000
_HASH_BLOCK_BYTES = 4 * 1024 * 1024
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


class StagingError(AvazuInputError):
    """The source cannot be staged (it changed during the pass, or holds no hour at all)."""


def hour_folder(staging_uri: str, hour: int) -> str:
    """Where an hour's partition lives: ``<staging>/hour=YYMMDDHH``."""
    return storage.join_uri(storage.resolve_local(staging_uri), f"hour={hour}")


def partition_manifest_uri(staging_uri: str, hour: int) -> str:
    """The file whose presence means the hour is staged."""
    return storage.join_uri(hour_folder(staging_uri, hour), PARTITION_MANIFEST_NAME)


@dataclass(frozen=True)
class SourceIdentity:
    """What makes a source "the same": its size and checksum (sha256) or S3 ETag."""

    uri: str
    size: int
    checksum: str
    checksum_kind: str  # "sha256" | "etag"
    mtime_ns: int | None = None  # local files only; lets an unchanged file skip re-hashing

    @property
    def source_id(self) -> str:
        """Short stable id used in checkpoint keys, transactional ids and DLQ envelope ids."""
        if self.checksum_kind == "sha256":
            return f"sha256-{self.checksum[:32]}"
        return _SAFE_ID.sub("_", f"etag-{self.checksum}-{self.size}")

    def same_content(self, other: SourceIdentity | None) -> bool:
        return other is not None and (self.size, self.checksum, self.checksum_kind) == (other.size, other.checksum, other.checksum_kind)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "source_id": self.source_id}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SourceIdentity:
        return cls(data["uri"], int(data["size"]), data["checksum"], data["checksum_kind"], data.get("mtime_ns"))


def identify_source(uri: str, previous: SourceIdentity | None = None) -> SourceIdentity:
    """Size and checksum of a local file (sha256) or S3 object (ETag).

    A local file whose size and mtime equal ``previous`` keeps ``previous``'s checksum unhashed.
    """
    uri = storage.resolve_local(uri)
    if storage.is_s3_uri(uri):
        bucket, key = storage.split_s3_uri(uri)
        with storage.storage_errors(f"source {uri}"):
            head = storage.s3_client().head_object(Bucket=bucket, Key=key)
        return SourceIdentity(uri, int(head["ContentLength"]), head["ETag"].strip('"'), "etag")
    with storage.storage_errors(f"source {uri}"):
        stat = os.stat(uri)
    if previous is not None and previous.uri == uri and previous.checksum_kind == "sha256" \
            and previous.size == stat.st_size and previous.mtime_ns == stat.st_mtime_ns:
        return previous
    digest = hashlib.sha256()
    with open(uri, "rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return SourceIdentity(uri, stat.st_size, digest.hexdigest(), "sha256", stat.st_mtime_ns)


class LineMap:
    """Partition row index (0-based, header excluded) -> line number in the source file."""

    def __init__(self, runs: list[list[int]] | list[tuple[int, int]]):
        self._firsts = [int(first) for first, _ in runs]
        self._starts: list[int] = []
        total = 0
        for _, count in runs:
            self._starts.append(total)
            total += int(count)
        self.rows = total

    def source_line(self, index: int) -> int:
        if not 0 <= index < self.rows:
            raise IndexError(f"row {index} is outside the partition's {self.rows} rows")
        run = bisect.bisect_right(self._starts, index) - 1
        return self._firsts[run] + index - self._starts[run]


@dataclass
class HourPartition:
    """One staged hour: where its lines are, how many, and how they map to source lines."""

    hour: int
    source_id: str
    source_uri: str
    file: str
    rows: int
    good_rows: int
    bad_rows: int
    bad_by_reason: dict[str, int]
    bytes: int
    line_runs: list[list[int]]
    staged_at: str
    staging_uri: str = ""

    @property
    def data_uri(self) -> str:
        return storage.join_uri(hour_folder(self.staging_uri, self.hour), self.file)

    @property
    def manifest_uri(self) -> str:
        return partition_manifest_uri(self.staging_uri, self.hour)

    def line_map(self) -> LineMap:
        return LineMap(self.line_runs)

    def to_json(self) -> str:
        data = asdict(self)
        data.pop("staging_uri")
        return json.dumps({"format": FORMAT_VERSION, **data}, indent=1)

    @classmethod
    def from_json(cls, text: str, staging_uri: str) -> HourPartition:
        data = json.loads(text)
        data.pop("format", None)
        return cls(**data, staging_uri=storage.resolve_local(staging_uri))


def find_partition(staging_uri: str, hour: int) -> HourPartition | None:
    """The staged partition of ``hour``, or None when there is none (yet)."""
    uri = partition_manifest_uri(staging_uri, hour)
    if not storage.exists(uri):
        return None
    return HourPartition.from_json(storage.read_bytes(uri).decode(), staging_uri)


@dataclass
class StagingResult:
    """What a staging call did, with the counts of the source (JSON-ready via as_dict)."""

    action: str  # staged | restaged | unchanged
    source_uri: str
    source_id: str
    staging_uri: str
    rows: int
    good_rows: int
    bad_rows: int
    bad_by_reason: dict[str, int]
    hours: int
    first_hour: int | None
    last_hour: int | None
    rows_per_hour: dict[str, int]
    bytes_read: int = 0
    elapsed_s: float = 0.0
    rows_per_s: float = 0.0
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_manifest(staging_uri: str) -> dict[str, Any] | None:
    """The staging location's ``_manifest.json``, or None when nothing is staged there."""
    uri = storage.join_uri(storage.resolve_local(staging_uri), MANIFEST_NAME)
    if not storage.exists(uri):
        return None
    return json.loads(storage.read_bytes(uri))


class _Compressor:
    """One thread that deflates the hour files' blocks in order, beside the thread that reads and splits.

    zlib releases the GIL while it deflates, so the two overlap on two cores. At most
    ``max_pending`` blocks wait for it (bounded memory); its first failure is raised by the next
    :meth:`submit` or by :meth:`close`.
    """

    def __init__(self, max_pending: int = 64):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="staging-deflate")
        self._slots = threading.BoundedSemaphore(max_pending)
        self._failure: BaseException | None = None

    def submit(self, write, data: bytes) -> None:
        if self._failure is not None:
            raise self._failure
        self._slots.acquire()
        self._pool.submit(self._run, write, data)

    def _run(self, write, data: bytes) -> None:
        try:
            if self._failure is None:
                write(data)
        except BaseException as error:  # raised in the splitting thread, never lost
            self._failure = error
        finally:
            self._slots.release()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._failure is not None:
            raise self._failure

    def abandon(self) -> None:
        """Drop what still waits (the staging failed: its scratch folder goes away)."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class _HourWriter:
    """One hour's gzip file in the temporary folder, with its counts and source line runs."""

    def __init__(self, hour: int, path: Path, compressor: _Compressor):
        self.hour = hour
        self.path = path
        self._compressor = compressor
        self._raw = open(path, "wb")
        # mtime=0: the same lines always give the same bytes, whoever stages them.
        self._gzip = gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=1, mtime=0)
        self._gzip.write(HEADER_LINE.encode() + b"\n")
        self.rows = 0
        self.bytes = 0
        self.bad_by_reason: Counter[str] = Counter()
        self.runs: list[list[int]] = []

    def write(self, first_line: int, data: bytes, count: int) -> None:
        """Append ``count`` complete lines (``data`` ends with a line break) starting at ``first_line``."""
        self._compressor.submit(self._gzip.write, data)
        self.rows += count
        self.bytes += len(data)
        if self.runs and self.runs[-1][0] + self.runs[-1][1] == first_line:
            self.runs[-1][1] += count
        else:
            self.runs.append([first_line, count])

    def close(self) -> None:
        self._gzip.close()
        self._raw.close()


class _Splitter:
    """Routes the source's lines to hour writers (see the module doc for the rule)."""

    def __init__(self, folder: Path, clean_rows: NativeColumns | None = None):
        self.folder = folder
        # Recognises a block's clean rows at once; None: every line is parsed.
        self.clean_rows = clean_rows
        self.compressor = _Compressor()
        self.writers: dict[int, _HourWriter] = {}
        self.current: int | None = None
        # Lines seen before any readable hour: (first_line, data, count, reasons).
        self.pending: list[tuple[int, bytes, int, Counter[str]]] = []
        self.pending_lines = 0

    def _writer(self, hour: int) -> _HourWriter:
        writer = self.writers.get(hour)
        if writer is None:
            writer = self.writers[hour] = _HourWriter(hour, self.folder / f"hour={hour}.csv.gz", self.compressor)
        return writer

    def _emit(self, hour: int | None, first_line: int, data: bytes, count: int, reasons: Counter[str]) -> None:
        if hour is None:
            self.pending.append((first_line, data, count, reasons))
            self.pending_lines += count
            if self.pending_lines > _MAX_PENDING_LINES:
                raise StagingError(f"the first {self.pending_lines:,} lines have no readable hour; this is not an Avazu file worth staging")
            return
        writer = self._writer(hour)
        if self.pending:
            for pending in self.pending:
                writer.write(*pending[:3])
                writer.bad_by_reason.update(pending[3])
            self.pending = []
            self.pending_lines = 0
        writer.write(first_line, data, count)
        writer.bad_by_reason.update(reasons)

    def add_text(self, item: TextLines) -> int:
        """Route a block of decodable lines; returns how many were bad."""
        if self.clean_rows is not None:
            return self._add_text_clean_first(item)
        lines, first = item.lines, item.first_line
        parse = parse_line
        run_hour = self.current
        run_start = 0
        reasons: Counter[str] = Counter()
        bad = 0
        for index, line in enumerate(lines):
            result = parse(line)
            if type(result) is dict:
                hour = result["hour"]
            else:
                bad += 1
                hour = _readable_hour(line)
                if hour is None:
                    hour = run_hour
            if hour != run_hour:
                if index > run_start:
                    self._emit(run_hour, first + run_start, ("\n".join(lines[run_start:index]) + "\n").encode(), index - run_start, reasons)
                    reasons = Counter()
                run_hour, run_start = hour, index
            if type(result) is not dict:
                reasons[result.reason.value] += 1
        if len(lines) > run_start:
            self._emit(run_hour, first + run_start, ("\n".join(lines[run_start:]) + "\n").encode(), len(lines) - run_start, reasons)
        self.current = run_hour
        return bad

    def _add_text_clean_first(self, item: TextLines) -> int:
        """:meth:`add_text` with the C codec: the clean rows' hours come from it, packed.

        A clean row's hour field is a valid Avazu hour (the codec checked it); the lines it declines
        are parsed, and a bad one without a readable hour stays in the hour of the line before it.
        """
        lines, first = item.lines, item.first_line
        clean, declined = self.clean_rows.columns(lines)
        hours = np.zeros(len(lines), np.int64)  # 0: no readable hour
        if declined:
            taken = np.ones(len(lines), bool)
            taken[declined] = False
            hours[taken] = clean["hour"]
        else:
            hours[:] = clean["hour"]
        bad_at: dict[int, str] = {}
        for index in declined:
            result = parse_line(lines[index])
            if type(result) is dict:
                hours[index] = result["hour"]
            else:
                bad_at[index] = result.reason.value
                hours[index] = _readable_hour(lines[index]) or 0
        if bad_at:  # the lines without a readable hour take the hour before them
            readable = np.where(hours > 0, np.arange(len(hours)), -1)
            np.maximum.accumulate(readable, out=readable)
            hours = np.where(readable >= 0, hours[np.maximum(readable, 0)], self.current or 0)
        starts = np.flatnonzero(np.concatenate([[hours[0] != (self.current or 0)], hours[1:] != hours[:-1]]))
        bounds = [0, *starts.tolist(), len(lines)] if len(starts) == 0 or starts[0] != 0 else [*starts.tolist(), len(lines)]
        run_hours = hours[bounds[:-1]].tolist()
        for hour, start, end in zip(run_hours, bounds[:-1], bounds[1:]):
            if end > start:
                self._emit_run(hour or None, lines, first, start, end, bad_at)
        self.current = run_hours[-1] or None
        return len(bad_at)

    def _emit_run(self, hour: int | None, lines: list[str], first: int, start: int, end: int,
                  bad_at: dict[int, str]) -> None:
        reasons = Counter(reason for index, reason in bad_at.items() if start <= index < end)
        self._emit(hour, first + start, ("\n".join(lines[start:end]) + "\n").encode(), end - start, reasons)

    def add_undecodable(self, item: UndecodableLine) -> None:
        self._emit(self.current, item.line, item.raw + b"\n", 1, Counter({item.reason.value: 1}))

    def close(self) -> None:
        self.compressor.close()  # every block written before the files are closed
        for writer in self.writers.values():
            writer.close()
        if self.pending:
            raise StagingError(f"none of the source's {self.pending_lines:,} lines has a readable hour; nothing to stage")


def _readable_hour(line: str) -> int | None:
    """The hour field of a broken line, when it is one of the Avazu hours."""
    fields = line.split(",", 3)
    if len(fields) < 3:
        return None
    text = fields[2]
    if len(text) != 8 or not text.isdigit() or not text.isascii():
        return None
    hour = int(text)
    return hour if hour in AVAZU_HOUR_SET else None


def stage_source(source_uri: str, staging_uri: str, *, force: bool = False, progress_every_s: float = 10.0,
                 generate: GeneratorSpec | None = None) -> StagingResult:
    """Stage ``source_uri`` into ``staging_uri`` unless it is staged there already (see module doc).

    One run stages at a time: runs that start together (two hourly runs, a backfill) wait for
    the one that stages and then find its result. What a killed staging left behind (its
    ``.staging-*`` scratch folder) is removed by the next one. With ``generate``, a missing local
    source is generated first (the configured default source, never one a user named).
    """
    source_uri, staging_uri = storage.resolve_local(source_uri), storage.resolve_local(staging_uri)
    with _staging_lock(staging_uri):
        _remove_leftovers(staging_uri)
        if generate is not None and not storage.is_s3_uri(source_uri):
            truth = generate_if_missing(generate, source_uri)
            if truth is not None:
                log.info("the default source %s was missing: generated %s rows over %s hours (seed %s) in %.1f s",
                         source_uri, f"{truth.rows:,}", len(truth.hours), truth.seed, truth.elapsed_s)
        return _stage(source_uri, staging_uri, force, progress_every_s)


@contextlib.contextmanager
def _staging_lock(staging_uri: str) -> Iterator[None]:
    """An exclusive lock per staging location, for the runs on this machine (a file lock in the temp folder).

    Runs on several machines staging one location (Celery workers, an S3 prefix) are not ordered
    by it; they stay consistent because every file is moved or uploaded into place whole and the
    manifest is written last.
    """
    digest = hashlib.sha256(staging_uri.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"avazu-staging-{digest}.lock"
    with open(path, "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another run is staging into %s; waiting for it to finish", staging_uri)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(staging_uri: str) -> None:
    """Scratch folders of a staging that was killed (under the lock, no other staging is running)."""
    if storage.is_s3_uri(staging_uri):
        return
    for leftover in Path(staging_uri).glob(".staging-*"):
        log.warning("removing %s, left behind by a staging that did not finish", leftover)
        shutil.rmtree(leftover, ignore_errors=True)


def _stage(source_uri: str, staging_uri: str, force: bool, progress_every_s: float) -> StagingResult:
    started = time.monotonic()
    manifest = read_manifest(staging_uri)
    previous = SourceIdentity.from_dict(manifest["source"]) if manifest else None
    identity = identify_source(source_uri, previous)
    if manifest and not force and identity.same_content(previous):
        missing = _missing_partitions(staging_uri, manifest)
        if not missing:
            if identity != previous:
                # Same content under a new mtime (touched, copied): remember it, so the next check is cheap again.
                manifest["source"] = identity.as_dict()
                _write_atomically(storage.join_uri(staging_uri, MANIFEST_NAME), json.dumps(manifest, indent=1).encode())
            result = _result_from_manifest("unchanged", manifest, staging_uri, time.monotonic() - started)
            log.info("source %s (%s) is already staged in %s: %s rows in %s hours; nothing to do",
                     source_uri, identity.source_id, staging_uri, f"{result.rows:,}", result.hours)
            return result
        reason = f"{len(missing)} staged file(s) are missing, e.g. {missing[0]}"
    elif manifest and not force:
        reason = f"the source changed (was {previous.source_id}, {previous.size:,} bytes; now {identity.source_id}, {identity.size:,} bytes)"
    else:
        reason = "forced" if force else "nothing was staged there yet"
    action = "restaged" if manifest else "staged"
    log.info("staging %s (%s) into %s: %s", source_uri, identity.source_id, staging_uri, reason)

    scratch = Path(tempfile.mkdtemp(prefix=".staging-",
                                    dir=None if storage.is_s3_uri(staging_uri) else _local_scratch_parent(staging_uri)))
    splitter = None
    try:
        splitter = _Splitter(scratch, _clean_row_codec())
        source = LineSource(source_uri)
        rows = bad = 0
        last_log = time.monotonic()
        for item in source:
            if type(item) is TextLines:
                bad += splitter.add_text(item)
                rows += len(item.lines)
            else:
                splitter.add_undecodable(item)
                rows += 1
                bad += 1
            now = time.monotonic()
            if now - last_log >= progress_every_s:
                last_log = now
                log.info("staging %s: %s rows read (%s bad), %s hours so far, %s rows/s", source_uri, f"{rows:,}",
                         f"{bad:,}", len(splitter.writers), f"{rows / (now - started):,.0f}")
        splitter.close()
        if rows == 0:
            raise StagingError(f"source {source_uri} has the Avazu header but no rows: it covers no hour, nothing to stage")
        after = identify_source(source_uri, identity)
        if not after.same_content(identity):
            raise StagingError(f"source {source_uri} changed while it was being staged; stage it again once it is complete")
        staged_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        partitions = _publish(splitter, identity, staging_uri, staged_at)
    finally:
        if splitter is not None:
            splitter.compressor.abandon()
        shutil.rmtree(scratch, ignore_errors=True)

    by_reason: Counter[str] = Counter()
    for partition in partitions:
        by_reason.update(partition.bad_by_reason)
    if sum(p.rows for p in partitions) != rows or sum(p.bad_rows for p in partitions) != bad:
        raise StagingError(f"staging lost count of rows: read {rows:,} ({bad:,} bad) but partitioned "
                           f"{sum(p.rows for p in partitions):,} ({sum(p.bad_rows for p in partitions):,} bad)")
    elapsed = time.monotonic() - started
    manifest = {
        "format": FORMAT_VERSION,
        "source": identity.as_dict(),
        "source_id": identity.source_id,
        "staged_at": staged_at,
        "rows": rows,
        "good_rows": rows - bad,
        "bad_rows": bad,
        "bad_by_reason": dict(sorted(by_reason.items())),
        "bytes_read": source.counts.bytes_compressed,
        "elapsed_s": round(elapsed, 3),
        "hours": {str(p.hour): {"rows": p.rows, "good_rows": p.good_rows, "bad_rows": p.bad_rows, "file": p.file}
                  for p in sorted(partitions, key=lambda p: p.hour)},
    }
    _write_atomically(storage.join_uri(staging_uri, MANIFEST_NAME), json.dumps(manifest, indent=1).encode())
    result = _result_from_manifest(action, manifest, staging_uri, elapsed, reason)
    log.info("staged %s into %s: %s rows (%s bad %s) in %s hours %s..%s, %.1f s, %s rows/s", source_uri, staging_uri,
             f"{rows:,}", f"{bad:,}", dict(by_reason) or "", result.hours, result.first_hour, result.last_hour,
             elapsed, f"{result.rows_per_s:,.0f}")
    return result


def _clean_row_codec() -> NativeColumns | None:
    """The C codec that recognises clean rows and reads their hours, or None without it."""
    try:
        return NativeColumns()
    except RowCodecUnavailable as problem:
        log.warning("staging parses every line in Python, several times slower: %s", problem)
        return None


def _local_scratch_parent(staging_uri: str) -> str:
    # Beside the partitions, so moving a finished file into place is a rename, not a copy.
    Path(staging_uri).mkdir(parents=True, exist_ok=True)
    return staging_uri


def _publish(splitter: _Splitter, identity: SourceIdentity, staging_uri: str, staged_at: str) -> list[HourPartition]:
    """Move or upload each hour's file and ``_partition.json``, then drop what no longer belongs."""
    part_name = f"part-{identity.source_id}.csv.gz"
    partitions = []
    for hour, writer in sorted(splitter.writers.items()):
        partition = HourPartition(
            hour=hour, source_id=identity.source_id, source_uri=identity.uri, file=part_name,
            rows=writer.rows, good_rows=writer.rows - sum(writer.bad_by_reason.values()),
            bad_rows=sum(writer.bad_by_reason.values()), bad_by_reason=dict(sorted(writer.bad_by_reason.items())),
            bytes=writer.bytes, line_runs=writer.runs, staged_at=staged_at, staging_uri=staging_uri,
        )
        _put_file(writer.path, partition.data_uri)
        _write_atomically(partition.manifest_uri, partition.to_json().encode())
        partitions.append(partition)
    keep = {p.manifest_uri for p in partitions} | {p.data_uri for p in partitions} | {storage.join_uri(staging_uri, MANIFEST_NAME)}
    for uri in storage.list_uris(staging_uri):
        relative = uri[len(staging_uri):].lstrip("/")
        if uri not in keep and relative.startswith("hour="):
            _delete(uri)
    return partitions


def _missing_partitions(staging_uri: str, manifest: dict[str, Any]) -> list[str]:
    present = set(storage.list_uris(staging_uri))
    missing = []
    for hour, entry in manifest.get("hours", {}).items():
        folder = hour_folder(staging_uri, int(hour))
        for name in (PARTITION_MANIFEST_NAME, entry["file"]):
            uri = storage.join_uri(folder, name)
            if uri not in present:
                missing.append(uri)
    return missing


def _result_from_manifest(action: str, manifest: dict[str, Any], staging_uri: str, elapsed: float, reason: str = "") -> StagingResult:
    hours = sorted(int(h) for h in manifest["hours"])
    rows = manifest["rows"]
    return StagingResult(
        action=action,
        source_uri=manifest["source"]["uri"],
        source_id=manifest["source_id"],
        staging_uri=staging_uri,
        rows=rows,
        good_rows=manifest["good_rows"],
        bad_rows=manifest["bad_rows"],
        bad_by_reason=manifest["bad_by_reason"],
        hours=len(hours),
        first_hour=hours[0] if hours else None,
        last_hour=hours[-1] if hours else None,
        rows_per_hour={h: manifest["hours"][h]["rows"] for h in sorted(manifest["hours"])},
        bytes_read=manifest.get("bytes_read", 0) if action != "unchanged" else 0,
        elapsed_s=round(elapsed, 3),
        rows_per_s=round(rows / elapsed, 1) if action != "unchanged" and elapsed > 0 else 0.0,
        reason=reason,
    )


def _put_file(path: Path, uri: str) -> None:
    if storage.is_s3_uri(uri):
        bucket, key = storage.split_s3_uri(uri)
        storage.s3_client().upload_file(str(path), bucket, key)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)


def _write_atomically(uri: str, data: bytes) -> None:
    """Readers never see half a file: an S3 PUT is atomic; locally, write aside and rename."""
    if storage.is_s3_uri(uri):
        storage.write_bytes(uri, data)
        return
    target = Path(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    aside = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}")
    aside.write_bytes(data)
    os.replace(aside, target)


def _delete(uri: str) -> None:
    """Remove a staged file (include.storage has no delete; staging is the only place that needs one)."""
    if storage.is_s3_uri(uri):
        bucket, key = storage.split_s3_uri(uri)
        storage.s3_client().delete_object(Bucket=bucket, Key=key)
        return
    Path(uri).unlink(missing_ok=True)
    try:
        Path(uri).parent.rmdir()  # only succeeds once the hour folder is empty
    except OSError:
        pass

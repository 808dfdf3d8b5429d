"""The dead-letter contract: how a failed record is written to a DLQ, and how it is read back.

Two DLQ formats hold the same facts (what failed, why, where, when) in two shapes:

* **envelopes** - the ingestion writes each row that breaks the contract as an Avro
  ``DlqEnvelope`` record (schemas/dlq_envelope.avsc, :func:`load_dlq_schema`,
  :func:`build_envelope`). An envelope carries the raw line exactly as read (at most
  :data:`MAX_RAW_BYTES` of it, with the whole line's length and checksum), why it failed (reason
  code, column, message), where it came from (source URI and line, the hour and chunk being
  ingested) and which Airflow task dead-lettered it (:class:`Origin`). ``envelope_id`` is
  ``<source id>:<line>``: the same on every retry and every re-ingestion of the same source, so
  DLQ reprocessing can recognise a row it has seen. The reason code is also a record header
  (``dlq.reason``, :func:`envelope_headers`), so a consumer can route or count dead letters
  without decoding them.
* **stream records** - a stream processor copies the failed input unchanged (value and key byte
  for byte, so a reader of the DLQ sees exactly what the producer sent), keeps the record's own
  headers and appends why and where in ``dlq.*`` headers (:func:`dead_letter_record_headers`),
  prefixed so they never collide with the producer's.

The reader, DLQ reprocessing, turns either into a :class:`DeadLetter` (:func:`read_letter`) whose
``envelope`` is a DlqEnvelope record, so classification, retries, parking and the archive have one
shape to deal with. Every record the reprocessor writes carries a fixed, small set of headers that
replace the ones before it (no header grows from hop to hop, :func:`outcome_headers`): where it
was read (``dlq.from``), the first DLQ record it descends from (``dlq.original``), its outcome, and
per outcome the repair rule, the attempt and due time, or why it was parked.

A record that cannot be read as a dead letter at all (a null value, no wire-format header, a
schema id the registry does not hold, a body that is no DlqEnvelope, a stream record without
``dlq.*`` headers) is an ``UNDECODABLE`` letter: never an error of the run, so a DLQ has no poison
record of its own. It keeps its value, key and headers (``headers``) and is parked as it is.

Header names shared with other records (the ``dlq.`` prefix, ``ingest.hour``,
``ingest.generation``) live in include.kafka.headers.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from confluent_kafka import Message

from include.kafka.headers import DLQ_HEADER_PREFIX, GENERATION_HEADER, INGEST_HOUR_HEADER
from include.kafka.wire import AvroDecoder, WireFormatError, load_schema
from include.paths import SCHEMAS_DIR

# -- The envelope: the ingestion's dead letters -------------------------------------------------

DLQ_SCHEMA_PATH = SCHEMAS_DIR / "dlq_envelope.avsc"
STAGE = "ingest"
# The most of a bad line an envelope carries: far more than any Avazu row (about 160 bytes), far
# less than the DLQ topic's max.message.bytes (1 MB).
MAX_RAW_BYTES = 64 * 1024


@dataclass(frozen=True)
class Origin:
    """The Airflow task instance doing the work (all None outside Airflow)."""

    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    try_number: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_dlq_schema(path: str | Path = DLQ_SCHEMA_PATH) -> dict[str, Any]:
    return load_schema(path)


def envelope_id(source_id: str, line: int) -> str:
    """The stable id of a failed source line (see module doc)."""
    return f"{source_id}:{line}"


def build_envelope(
    *,
    source_id: str,
    source_uri: str,
    line: int,
    hour: int,
    chunk: int,
    reason: str,
    field: str | None,
    message: str,
    raw: bytes,
    origin: Origin,
    failed_at: dt.datetime,
    raw_length: int | None = None,
    raw_sha256: str | None = None,
) -> dict[str, Any]:
    """One DLQ envelope as a record of schemas/dlq_envelope.avsc.

    ``raw`` is kept up to :data:`MAX_RAW_BYTES` (truncated, never stored elsewhere: a longer line
    is not an Avazu row, and the source file keeps it whole); ``raw_length`` and ``raw_sha256``
    always describe the whole input, so an envelope never outgrows the DLQ topic's
    ``max.message.bytes`` and a reprocessor knows what it is missing.
    """
    return {
        "envelope_id": envelope_id(source_id, line),
        "reason": reason,
        "message": message,
        "field": field,
        "raw": raw[:MAX_RAW_BYTES],
        "raw_length": raw_length if raw_length is not None else len(raw),
        "raw_sha256": raw_sha256 or hashlib.sha256(raw).hexdigest(),
        "source": {"uri": source_uri, "line": line, "hour": hour, "chunk": chunk},
        "origin": origin.as_dict(),
        "first_failed_at": failed_at,
        "stage": STAGE,
        "attempts": 0,
        "last_error": None,
    }


def envelope_headers(reason: str, hour: int, generation: int) -> list[tuple[str, bytes]]:
    """Headers of a DLQ record: the reason, the stage, and which hour and generation wrote it."""
    return [
        (DLQ_HEADER_PREFIX + "reason", reason.encode()),
        (DLQ_HEADER_PREFIX + "stage", STAGE.encode()),
        (INGEST_HOUR_HEADER, str(hour).encode()),
        (GENERATION_HEADER, str(generation).encode()),
    ]


# -- Stream records: the stream processors' dead letters ----------------------------------------

Headers = tuple[tuple[str, bytes], ...]
# A stack of nested errors can make a message of megabytes; a header is for people to read.
MAX_MESSAGE_CHARS = 1000


class FailedRecord(Protocol):
    """What the stream writer needs of a consumed record (include.streaming.records.InputRecord)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def headers(self) -> Headers: ...


def dead_letter_headers(error: BaseException, source: FailedRecord, processor: str,
                        failed_at: dt.datetime) -> Headers:
    """The ``dlq.*`` headers describing why ``source`` failed in ``processor``."""
    message = str(error)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS - 3] + "..."
    fields = {
        "error.class": type(error).__name__,
        "error.message": message,
        "source.topic": source.topic,
        "source.partition": str(source.partition),
        "source.offset": str(source.offset),
        "processor": processor,
        "failed.at": failed_at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds"),
    }
    return tuple((DLQ_HEADER_PREFIX + name, value.encode("utf-8")) for name, value in fields.items())


def dead_letter_record_headers(error: BaseException, source: FailedRecord, processor: str,
                               failed_at: dt.datetime) -> Headers:
    """The full header list of the DLQ copy of ``source``: its own headers, then the ``dlq.*`` ones."""
    return source.headers + dead_letter_headers(error, source, processor, failed_at)


def read_dead_letter_headers(headers: list[tuple[str, bytes]] | Headers | None) -> dict[str, str]:
    """The ``dlq.*`` headers of a DLQ record as a dict without the prefix (for readers and tests)."""
    return {
        name[len(DLQ_HEADER_PREFIX):]: (value or b"").decode("utf-8", "replace")
        for name, value in (headers or ())
        if name.startswith(DLQ_HEADER_PREFIX)
    }


# -- The reader: DLQ reprocessing's dead letters, and the headers of what it writes -------------

FROM = DLQ_HEADER_PREFIX + "from"
ORIGINAL = DLQ_HEADER_PREFIX + "original"
OUTCOME = DLQ_HEADER_PREFIX + "outcome"
ENVELOPE_ID = DLQ_HEADER_PREFIX + "envelope_id"
REPAIR_RULE = DLQ_HEADER_PREFIX + "repair.rule"
RETRY_ATTEMPT = DLQ_HEADER_PREFIX + "retry.attempt"
RETRY_DUE_MS = DLQ_HEADER_PREFIX + "retry.due_ms"
FIRST_FAILED_AT = DLQ_HEADER_PREFIX + "first_failed_at"
PARKED_WHY = DLQ_HEADER_PREFIX + "parked.why"
UNDECODABLE = "UNDECODABLE"


def coordinates(topic: str, partition: int, offset: int) -> str:
    """``topic/partition@offset``: where a record is, as the headers write it."""
    return f"{topic}/{partition}@{offset}"


@dataclass
class DeadLetter:
    """One consumed DLQ or retry record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    envelope: dict[str, Any]
    original: str  # coordinates of the first DLQ record
    due_ms: int | None = None  # retry records: not to be handled before this
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)  # as read

    @property
    def undecodable(self) -> bool:
        """The record could not be read as a dead letter; ``envelope['message']`` says why."""
        return self.reason == UNDECODABLE

    @property
    def where(self) -> str:
        return coordinates(self.topic, self.partition, self.offset)

    @property
    def reason(self) -> str:
        return self.envelope["reason"]

    @property
    def attempts(self) -> int:
        return int(self.envelope.get("attempts") or 0)

    @property
    def truncated(self) -> bool:
        """The ingestion kept only the start of an oversized line (raw_length says how long it was)."""
        length = self.envelope.get("raw_length")
        return length is not None and length > len(self.envelope["raw"])


def _headers(message: Message) -> dict[str, bytes]:
    return {name: value or b"" for name, value in (message.headers() or ())}


def read_letter(message: Message, decoder: AvroDecoder, envelope_format: bool) -> DeadLetter:
    """The dead letter in ``message``; a value that cannot be read becomes an UNDECODABLE envelope."""
    headers = _headers(message)
    here = coordinates(message.topic(), message.partition(), message.offset())
    original = headers.get(ORIGINAL, b"").decode() or here
    due = headers.get(RETRY_DUE_MS)
    if envelope_format:
        envelope = _decode_envelope(message, decoder)
    else:
        envelope = _from_headers(message, headers)
    if envelope["reason"] == UNDECODABLE:
        envelope["headers"] = [{"key": name, "value": value} for name, value in message.headers() or ()]
    return DeadLetter(message.topic(), message.partition(), message.offset(), message.key(), envelope, original,
                      int(due) if due and due.isdigit() else None, list(message.headers() or ()))


def _decode_envelope(message: Message, decoder: AvroDecoder) -> dict[str, Any]:
    """The DlqEnvelope in the value, or an UNDECODABLE one saying why it is none.

    A registry that does not answer is not the record's fault: that error (retriable) ends the run.
    """
    value = message.value()
    if value is None:
        return _undecodable(message, "the value is null (a tombstone), not a DlqEnvelope")
    try:
        return decoder.decode(value)
    except WireFormatError as error:  # no magic byte, too short, or a schema id the registry does not hold
        return _undecodable(message, f"the value cannot be read as a DlqEnvelope: {error}")
    except (ValueError, EOFError, IndexError, KeyError, TypeError) as error:
        return _undecodable(message, f"the value's Avro body is not a DlqEnvelope ({type(error).__name__}: {error})")


def _timestamp(message: Message) -> dt.datetime:
    _, millis = message.timestamp()
    return dt.datetime.fromtimestamp(max(0, millis) / 1000, dt.timezone.utc)


def _undecodable(message: Message, why: str) -> dict[str, Any]:
    return _envelope(message, UNDECODABLE, why, "reprocess", _timestamp(message))


def _from_headers(message: Message, headers: dict[str, bytes]) -> dict[str, Any]:
    """A stream processor's dead letter as an envelope: the value is the raw input, the headers say why."""
    def text(name: str) -> str | None:
        value = headers.get(DLQ_HEADER_PREFIX + name)
        return value.decode("utf-8", "replace") if value is not None else None

    failed = text("failed.at")
    try:
        failed_at = dt.datetime.fromisoformat(failed) if failed else _timestamp(message)
    except ValueError:
        failed_at = _timestamp(message)
    envelope = _envelope(message, text("error.class") or UNDECODABLE,
                         text("error.message") or "the record has no dlq.* headers saying why it failed",
                         f"stream:{text('processor') or 'unknown'}", failed_at)
    source_topic, source_offset = text("source.topic"), text("source.offset")
    if source_topic and source_offset and source_offset.isdigit():
        envelope["source"] = {"uri": f"kafka://{source_topic}/{text('source.partition') or 0}",
                              "line": int(source_offset), "hour": None, "chunk": None}
    return envelope


def _envelope(message: Message, reason: str, text: str, stage: str, failed_at: dt.datetime) -> dict[str, Any]:
    here = coordinates(message.topic(), message.partition(), message.offset())
    raw = message.value() or b""
    return {
        "envelope_id": here,
        "reason": reason,
        "message": text,
        "field": None,
        "raw": raw,
        "source": {"uri": f"kafka://{message.topic()}/{message.partition()}", "line": message.offset(),
                   "hour": None, "chunk": None},
        "origin": Origin().as_dict(),
        "first_failed_at": failed_at,
        "stage": stage,
        "attempts": 0,
        "last_error": None,
        "raw_length": len(raw),
        "raw_sha256": None,
        "headers": None,
    }


def outcome_headers(letter: DeadLetter, outcome: str, **extra: str) -> list[tuple[str, bytes]]:
    """The headers of what the reprocessor writes for ``letter`` (see the module doc)."""
    headers = {FROM: letter.where, ORIGINAL: letter.original, OUTCOME: outcome,
               ENVELOPE_ID: letter.envelope["envelope_id"],
               FIRST_FAILED_AT: letter.envelope["first_failed_at"].isoformat(timespec="milliseconds"),
               **extra}
    return [(name, value.encode("utf-8")) for name, value in headers.items()]

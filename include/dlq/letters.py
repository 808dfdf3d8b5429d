"""Dead letters as the reprocessor reads them, from either kind of DLQ, and the headers it writes.

Two DLQ formats hold the same facts in two shapes: the ingestion's Avro envelopes
(schemas/dlq_envelope.avsc) and the stream processors' records, unchanged, with why in
``dlq.*`` headers. :func:`read_letter` turns either into a :class:`DeadLetter` whose ``envelope``
is a DlqEnvelope record, so classification, retries, parking and the archive have one shape to
deal with.

Every record the reprocessor writes carries a fixed, small set of headers that replace the ones
before it (no header grows from hop to hop): where it was read (``dlq.from``), the first DLQ
record it descends from (``dlq.original``), its outcome, and per outcome the repair rule, the
attempt and due time, or why it was parked.

A record that cannot be read as a dead letter at all (a null value, no wire-format header, a
schema id the registry does not hold, a body that is no DlqEnvelope, a stream record without
``dlq.*`` headers) is an ``UNDECODABLE`` letter: never an error of the run, so a DLQ has no poison
record of its own. It keeps its value, key and headers (``headers``) and is parked as it is.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Message

from include.kafka.headers import DLQ_HEADER_PREFIX
from include.kafka.wire import AvroDecoder, WireFormatError

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
        "origin": {"dag_id": None, "run_id": None, "task_id": None, "try_number": None},
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
               FIRST_FAILED_AT: letter.envelope["first_failed_at"].isoformat(timespec="milliseconds"), **extra}
    return [(name, value.encode("utf-8")) for name, value in headers.items()]

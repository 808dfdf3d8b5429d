"""DLQ envelopes for rows that break the contract (schemas/dlq_envelope.avsc).

An envelope carries the raw line exactly as read, why it failed (reason code, column, message),
where it came from (source URI and line, the hour and chunk being ingested) and which Airflow
task dead-lettered it. ``envelope_id`` is ``<source id>:<line>``: the same on every retry and
every re-ingestion of the same source, so DLQ reprocessing can recognise a row it has seen. The
reason code is also a record header (``dlq.reason``), so a consumer can route or count
dead letters without decoding them.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from include.kafka.headers import DLQ_HEADER_PREFIX, GENERATION_HEADER, INGEST_HOUR_HEADER
from include.kafka.wire import load_schema
from include.paths import SCHEMAS_DIR

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


def load_dlq_schema(path: str | Path = DLQ_SCHEMA_PATH) -> dict[str, Any]:
    return load_schema(path)

"""Names of the record headers the project writes, in one place for writers and readers (and how to read one)."""

from __future__ import annotations

# Every dead letter's context headers start with this (reason, stage, error, source, ...).
DLQ_HEADER_PREFIX = "dlq."
# Which Avazu hour an ingestion record belongs to, and which generation wrote it (see
# include.ingest.checkpoint on generations; raw records of generation 0 carry none).
INGEST_HOUR_HEADER = "ingest.hour"
GENERATION_HEADER = "ingest.generation"


def generation_of(headers: dict[str, bytes]) -> int:
    """The generation a record's headers (by name) say wrote it: 0 when they name none."""
    return int(headers.get(GENERATION_HEADER) or 0)

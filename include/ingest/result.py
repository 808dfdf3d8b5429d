"""What one ingestion run did and where its hour stands, and the check that every count adds up."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from include.errors import PermanentError


class ReconciliationError(PermanentError):
    """Rows read, produced and dead-lettered do not add up; the message says which counts differ."""


@dataclass
class IngestResult:
    """What one run did (its own counts) and where the hour stands (cumulative); JSON-ready via as_dict."""

    hour: int
    source_id: str
    source_uri: str
    partition_uri: str
    topics: dict[str, str]
    transactional_id: str
    action: str
    generation: int
    chunk_rows: int
    resumed_from_chunk: int
    chunks: int = 0
    rows_read: int = 0
    rows_produced: int = 0
    rows_dead_lettered: int = 0
    dead_lettered_by_reason: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    bytes_produced: int = 0
    chunk_attempts_aborted: int = 0
    duration_s: float = 0.0
    rows_per_s: float = 0.0
    seconds_producing: float = 0.0
    seconds_committing: float = 0.0
    hour_chunks: int = 0
    hour_rows_read: int = 0
    hour_rows_produced: int = 0
    hour_rows_dead_lettered: int = 0
    hour_dead_lettered_by_reason: dict[str, int] = field(default_factory=dict)
    complete: bool = False
    partition_rows: int = 0
    partition_bad_rows: int = 0
    # Errors librdkafka reported and retried by itself (e.g. a broker restart), by name.
    client_errors: dict[str, int] = field(default_factory=dict)
    # What encoded the clean rows: native (the C codec) or arrow (see include.encoding.batch).
    row_codec: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def run_summary(self) -> dict[str, Any]:
        """What the run did in a few figures (the extra of the asset event pipeline_health times)."""
        return {"hour": self.hour, "source_id": self.source_id, "raw_topic": self.topics.get("raw", ""),
                "action": self.action, "generation": self.generation,
                "rows_read": self.rows_read, "rows_dead_lettered": self.rows_dead_lettered,
                "rows_per_s": round(self.rows_per_s, 1), "duration_s": round(self.duration_s, 3),
                "complete": self.complete}


@dataclass
class ChunkCounts:
    """What one chunk's transaction holds; added to the run's result once it commits."""

    rows_read: int = 0
    rows_produced: int = 0
    bytes_read: int = 0
    bytes_produced: int = 0
    dead_lettered: Counter = field(default_factory=Counter)

    @property
    def rows_dead_lettered(self) -> int:
        return sum(self.dead_lettered.values())


def reconcile(result: IngestResult) -> None:
    """Raise :class:`ReconciliationError` unless every count of the run and of the hour adds up."""
    problems = []
    if result.rows_read != result.rows_produced + result.rows_dead_lettered:
        problems.append(f"this run read {result.rows_read:,} rows but produced {result.rows_produced:,} "
                        f"and dead-lettered {result.rows_dead_lettered:,}")
    if sum(result.dead_lettered_by_reason.values()) != result.rows_dead_lettered:
        problems.append(f"this run's dead letters by reason {result.dead_lettered_by_reason} do not add up to {result.rows_dead_lettered:,}")
    if result.hour_rows_read != result.hour_rows_produced + result.hour_rows_dead_lettered:
        problems.append(f"the hour's checkpoint counts {result.hour_rows_read:,} rows read but {result.hour_rows_produced:,} "
                        f"produced and {result.hour_rows_dead_lettered:,} dead-lettered")
    if result.complete:
        if result.hour_rows_read != result.partition_rows:
            problems.append(f"the hour is complete with {result.hour_rows_read:,} rows read but its partition has {result.partition_rows:,}")
        if result.hour_rows_dead_lettered != result.partition_bad_rows:
            problems.append(f"the hour dead-lettered {result.hour_rows_dead_lettered:,} rows but staging found "
                            f"{result.partition_bad_rows:,} bad lines")
    if problems:
        raise ReconciliationError(f"hour {result.hour} of {result.source_id} does not reconcile: " + "; ".join(problems))

"""An hour's ingestion progress on the compacted checkpoint topic, and what a run does with it.

One record per committed chunk, keyed ``<raw topic>/<source id>/<hour>`` (compaction keeps the
latest per key), written in the same transaction as the chunk's rows, so the checkpoint and the
rows are visible together or not at all. A run reads the latest checkpoint of its key with a
``read_committed`` consumer *after* ``init_transactions()`` has fenced any older producer of the
same transactional id and aborted its open transaction, so what it reads is final.

:func:`plan_run` turns the latest checkpoint into the run's plan:

* no checkpoint: ingest the hour from its first row, generation 0;
* an unfinished generation: resume it after its last committed chunk;
* a finished generation: write nothing - unless re-ingestion is requested;
* re-ingestion: the hour is written again as the next *generation*. Kafka cannot take back what
  a finished generation wrote, so re-ingestion is a deliberate second copy, never a silent
  duplicate: its raw records carry an ``ingest.generation`` header (generation 0 carries none,
  which saves a third of the per-row produce cost), its DLQ records carry it too, and the DLQ
  envelope id stays the same, so a consumer keeps one generation or deduplicates by row id. A re-ingestion request is identified (the Airflow run id), so a
  retry of the same request finishes or leaves alone its own generation instead of starting
  yet another one.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from confluent_kafka import Consumer

from include.kafka.reader import read_to_end
from include.kafka.wire import AvroDecoder, AvroEncoder, load_schema
from include.paths import SCHEMAS_DIR

CHECKPOINT_SCHEMA_PATH = SCHEMAS_DIR / "ingest_checkpoint.avsc"


def checkpoint_key(raw_topic: str, source_id: str, hour: int) -> str:
    """The checkpoint topic key of one hour of one source ingested into one raw topic.

    Topic names cannot contain ``/``, so the key is unambiguous.
    """
    return f"{raw_topic}/{source_id}/{hour}"


def checkpoint_keys_of(raw_topic: str) -> bytes:
    """The start every checkpoint key of ``raw_topic``'s hours has (see :func:`checkpoint_key`)."""
    return f"{raw_topic}/".encode()


def transactional_id(raw_topic: str, source_id: str, hour: int, prefix: str = "avazu-ingest") -> str:
    """Stable per raw topic, source and hour: a retried task gets the same id and fences its zombie."""
    return f"{prefix}/{checkpoint_key(raw_topic, source_id, hour)}"


@dataclass
class Checkpoint:
    """One record of schemas/ingest_checkpoint.avsc (cumulative over its generation)."""

    source_id: str
    hour: int
    chunks_committed: int = 0
    rows_read: int = 0
    rows_produced: int = 0
    rows_dead_lettered: int = 0
    complete: bool = False
    run_id: str | None = None
    updated_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    generation: int = 0
    reingest_request: str | None = None
    bytes_read: int = 0
    dead_lettered_by_reason: dict[str, int] = field(default_factory=dict)
    source_uri: str | None = None

    def as_record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Checkpoint:
        return cls(**{k: record[k] for k in cls.__dataclass_fields__ if k in record})

    def summary(self) -> dict[str, Any]:
        """JSON-ready totals for results and logs."""
        data = asdict(self)
        data["updated_at"] = self.updated_at.isoformat(timespec="seconds") if self.updated_at else None
        return data


@dataclass(frozen=True)
class RunPlan:
    """What one run does: its generation, where it starts and a word for the log and XCom."""

    action: str  # ingest | resume | reingest | already-complete
    generation: int
    start_row: int
    start_chunk: int
    reingest_request: str | None
    base: Checkpoint | None  # the counts the run continues from (None: from zero)

    @property
    def writes(self) -> bool:
        return self.action != "already-complete"


def plan_run(latest: Checkpoint | None, *, reingest: bool = False, request_id: str | None = None) -> RunPlan:
    """Decide what a run does from the hour's latest checkpoint (see the module doc)."""
    if latest is None:
        return RunPlan("ingest", 0, 0, 0, request_id if reingest else None, None)
    if not latest.complete:
        # An unfinished generation is always finished first; a re-ingestion request takes it over,
        # so that its own retries recognise it.
        request = request_id if reingest else latest.reingest_request
        return RunPlan("resume", latest.generation, latest.rows_read, latest.chunks_committed, request, latest)
    if not reingest or (request_id is not None and latest.reingest_request == request_id):
        return RunPlan("already-complete", latest.generation, latest.rows_read, latest.chunks_committed,
                       latest.reingest_request, latest)
    return RunPlan("reingest", latest.generation + 1, 0, 0, request_id, None)


def load_checkpoint_schema(path: str | Path = CHECKPOINT_SCHEMA_PATH) -> dict[str, Any]:
    return load_schema(path)


class CheckpointCodec:
    """Checkpoints <-> wire-format payloads: written with the registered schema id, read with any.

    Older checkpoint versions are read through the current schema, so fields added since then
    take their defaults.
    """

    def __init__(self, schema: dict[str, Any], schema_id: int, fetch_schema):
        self._encoder = AvroEncoder(schema, schema_id)
        self._decoder = AvroDecoder(fetch_schema, reader_schema=schema)

    def encode(self, checkpoint: Checkpoint) -> bytes:
        return self._encoder.encode(checkpoint.as_record())

    def decode(self, payload: bytes) -> Checkpoint:
        return Checkpoint.from_record(self._decoder.decode(payload))


def read_checkpoints(consumer: Consumer, topic: str, decode: Callable[[bytes], Checkpoint], *,
                     keep: Callable[[bytes], bool] = lambda key: True, timeout: float = 120.0,
                     batch: int = 1000) -> dict[str, Checkpoint]:
    """The last committed checkpoint of every key on ``topic`` that ``keep`` takes, reading every partition to its end.

    Create ``consumer`` with :func:`include.kafka.reader.reader_config`; it is assigned (no group
    offsets are read or committed). ``decode`` turns a payload into a checkpoint (e.g.
    :meth:`CheckpointCodec.decode`); only the last payload of each key is decoded, and a tombstone
    removes its key.
    """
    latest: dict[bytes, bytes] = {}
    for message in read_to_end(consumer, [topic], timeout=timeout, batch=batch):
        key = message.key()
        if key is None or not keep(key):
            continue
        if message.value() is None:
            latest.pop(key, None)
        else:
            latest[key] = message.value()
    return {key.decode(): decode(value) for key, value in latest.items()}


def read_latest_checkpoint(consumer: Consumer, topic: str, key: str, codec: CheckpointCodec,
                           timeout: float = 60.0) -> Checkpoint | None:
    """The last committed checkpoint of ``key`` on ``topic`` (see :func:`read_checkpoints`), or None."""
    wanted = key.encode()
    return read_checkpoints(consumer, topic, codec.decode, keep=lambda found: found == wanted,
                            timeout=timeout).get(key)

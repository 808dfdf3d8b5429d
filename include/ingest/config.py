"""The ingestion settings (include/config/ingest.yaml): read once, checked, overridable by DAG params.

Every problem is reported as one :class:`IngestConfigError` sentence naming the file and the key,
before anything touches Kafka or the staging area.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from include.encoding.batch import RowCodec
from include.errors import PermanentError
from include.ingest.hours import Mode
from include.kafka_admin.catalog import DeclarationError, TopicCatalog, declared_catalog
from include.paths import CONFIG_DIR, settings_file
from include.settings import Checks, read_yaml_file

DEFAULT_CONFIG_PATH = CONFIG_DIR / "ingest.yaml"

# Kafka's own rule for topic names.
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
# Settings the exactly-once design depends on; a config that changes them would silently break it.
RESERVED_PRODUCER_SETTINGS = frozenset({
    "transactional.id", "enable.idempotence", "acks", "request.required.acks",
    "transaction.timeout.ms", "bootstrap.servers", "isolation.level",
    "max.in.flight.requests.per.connection", "max.in.flight",
})
# A chunk is held in memory and committed as one transaction; keep both bounded.
MAX_CHUNK_ROWS = 2_000_000

_TOP_KEYS = {"source_uri", "staging_uri", "stage_before_ingest", "mode", "replay", "chunk_rows",
             "partition_wait", "progress_every_s", "transaction", "producer", "row_codec", "generate_if_missing"}
_GENERATE_KEYS = {"rows", "seed", "fault_rate"}
_REPLAY_KEYS = {"offset_hours", "wrap"}
_WAIT_KEYS = {"timeout_s", "poke_interval_s"}
_TRANSACTION_KEYS = {"timeout_ms", "max_chunk_attempts"}
# DAG params that override config values, and the config field each one sets.
PARAM_OVERRIDES = {
    "source_uri": "source_uri",
    "staging_uri": "staging_uri",
    "mode": "mode",
    "chunk_rows": "chunk_rows",
    "raw_topic": "raw_topic",
    "dlq_topic": "dlq_topic",
    "checkpoint_topic": "checkpoint_topic",
    "partition_wait_s": "partition_wait_timeout_s",
}


class IngestConfigError(PermanentError, ValueError):
    """The ingestion settings are wrong; the message names the file and the key."""


@dataclass(frozen=True)
class IngestTopics:
    """Where the rows, the dead letters and the checkpoints go; the fields are the topics' catalog roles."""

    raw: str
    dlq: str
    checkpoints: str

    @classmethod
    def declared(cls, catalog: TopicCatalog | None = None) -> IngestTopics:
        """The topics include/config/topics.yaml declares for these roles."""
        catalog = catalog or declared_catalog()
        return cls(**{role.name: catalog.topic_for(role.name) for role in dataclasses.fields(cls)})

    def as_dict(self) -> dict[str, str]:
        """``{role: name}``, as :func:`include.kafka_admin.sandbox.provision_sandbox` takes copies."""
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GenerateIfMissing:
    """Avazu-format data generated at the default source when it is missing (all 240 hours)."""

    rows: int = 1_000_000
    seed: int = 7
    fault_rate: float = 0.0002


@dataclass(frozen=True)
class ReplaySettings:
    """How replay mode maps a wall-clock hour onto an Avazu hour."""

    offset_hours: int = 0
    wrap: bool = True


@dataclass(frozen=True)
class IngestConfig:
    """Checked ingestion settings. ``source`` names where they came from, for error messages."""

    source_uri: str
    staging_uri: str
    raw_topic: str
    dlq_topic: str
    checkpoint_topic: str
    stage_before_ingest: bool = True
    mode: Mode = Mode.AUTO
    replay: ReplaySettings = field(default_factory=ReplaySettings)
    chunk_rows: int = 100_000
    partition_wait_timeout_s: float = 900.0
    partition_poke_interval_s: float = 60.0
    progress_every_s: float = 10.0
    transaction_timeout_ms: int = 120_000
    max_chunk_attempts: int = 3
    producer: dict[str, Any] = field(default_factory=dict)
    row_codec: RowCodec = RowCodec.AUTO
    # Set while source_uri is the file's own default (a source given by params is never invented).
    generate_if_missing: GenerateIfMissing | None = None
    source: str = "<defaults>"

    @property
    def topics(self) -> IngestTopics:
        return IngestTopics(self.raw_topic, self.dlq_topic, self.checkpoint_topic)

    def with_overrides(self, params: Mapping[str, Any] | None) -> IngestConfig:
        """A copy with the DAG params that are set (not None, not empty) applied, checked again."""
        changes = {PARAM_OVERRIDES[param]: value for param, value in (params or {}).items()
                   if param in PARAM_OVERRIDES and value is not None and value != ""}
        if not changes:
            return self
        given = [param for param in PARAM_OVERRIDES if PARAM_OVERRIDES[param] in changes]
        if "source_uri" in changes:
            changes["generate_if_missing"] = None
        return self.replace(f"params {', '.join(given)}", **changes)

    def with_topics(self, topics: IngestTopics) -> IngestConfig:
        """A copy writing to ``topics`` (sandbox copies in tests and benchmarks), checked again."""
        return self.replace("sandbox topics", raw_topic=topics.raw, dlq_topic=topics.dlq, checkpoint_topic=topics.checkpoints)

    def replace(self, why: str, **changes: Any) -> IngestConfig:
        """A copy with ``changes`` applied and checked again; errors name the file and ``why``."""
        return _checked(dataclasses.replace(self, **changes, source=f"{self.source} with {why}"))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the DAG hands from task to task)."""
        data = dataclasses.asdict(self)
        data["mode"] = self.mode.value
        data["row_codec"] = self.row_codec.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IngestConfig:
        """Rebuild from :meth:`as_dict` output, checked again."""
        values = dict(data)
        values["replay"] = ReplaySettings(**values.get("replay", {}))
        if values.get("generate_if_missing") is not None:
            values["generate_if_missing"] = GenerateIfMissing(**values["generate_if_missing"])
        return _checked(cls(**values))


_CHECK = Checks(IngestConfigError)


def _checked(config: IngestConfig) -> IngestConfig:
    """Check every field of a config (also after overrides) and normalise types."""
    where = config.source
    mode = Mode(_CHECK.choice(f"{where}: mode", getattr(config.mode, "value", config.mode), [m.value for m in Mode]))
    row_codec = RowCodec(_CHECK.choice(f"{where}: row_codec", getattr(config.row_codec, "value", config.row_codec),
                                       [c.value for c in RowCodec]))
    for name in ("raw_topic", "dlq_topic", "checkpoint_topic"):
        value = getattr(config, name)
        if not isinstance(value, str) or not _TOPIC_NAME.fullmatch(value) or value in {".", ".."}:
            raise IngestConfigError(f"{where}: {name} {value!r} is not a valid Kafka topic name")
    topics = {config.raw_topic, config.dlq_topic, config.checkpoint_topic}
    if len(topics) != 3:
        raise IngestConfigError(f"{where}: the raw, DLQ and checkpoint topics must be three different topics")
    _CHECK.flag(f"{where}: stage_before_ingest", config.stage_before_ingest)
    _CHECK.flag(f"{where}: replay.wrap", config.replay.wrap)
    _CHECK.whole(f"{where}: replay.offset_hours", config.replay.offset_hours, -(10**7), 10**7)
    reserved = sorted(set(config.producer) & RESERVED_PRODUCER_SETTINGS)
    if reserved:
        raise IngestConfigError(
            f"{where}: producer setting(s) {', '.join(reserved)} are set by the ingestion itself "
            "(exactly-once needs them) and cannot be configured")
    for key, value in config.producer.items():
        if not isinstance(key, str) or not isinstance(value, (str, int, float, bool)):
            raise IngestConfigError(f"{where}: producer.{key} must be a plain value, not {value!r}")
    return dataclasses.replace(
        config,
        source_uri=_CHECK.text(f"{where}: source_uri", config.source_uri),
        staging_uri=_CHECK.text(f"{where}: staging_uri", config.staging_uri),
        mode=mode,
        row_codec=row_codec,
        chunk_rows=_CHECK.whole(f"{where}: chunk_rows", config.chunk_rows, 1, MAX_CHUNK_ROWS),
        partition_wait_timeout_s=_CHECK.seconds(f"{where}: partition_wait.timeout_s", config.partition_wait_timeout_s),
        partition_poke_interval_s=max(1.0, _CHECK.seconds(f"{where}: partition_wait.poke_interval_s", config.partition_poke_interval_s)),
        progress_every_s=_CHECK.seconds(f"{where}: progress_every_s", config.progress_every_s),
        transaction_timeout_ms=_CHECK.whole(f"{where}: transaction.timeout_ms", config.transaction_timeout_ms, 1_000, 900_000),
        max_chunk_attempts=_CHECK.whole(f"{where}: transaction.max_chunk_attempts", config.max_chunk_attempts, 1, 20),
        producer=dict(config.producer),
    )


def parse_ingest_config(document: Any, source: str, catalog: TopicCatalog | None = None) -> IngestConfig:
    """Check a parsed YAML document and turn it into an :class:`IngestConfig` writing to ``catalog``'s topics."""
    if isinstance(document, dict) and "topics" in document:
        raise IngestConfigError(f"{source}: topics: the ingestion writes to the topics with roles raw, dlq and "
                                "checkpoints in include/config/topics.yaml; remove this key")
    top = _CHECK.mapping(source, document, _TOP_KEYS)
    _CHECK.required(source, top, ("source_uri", "staging_uri"))
    try:
        topics = IngestTopics.declared(catalog)
    except DeclarationError as error:
        raise IngestConfigError(f"{source}: {error}") from None
    replay = _CHECK.mapping(f"{source}: replay", top.get("replay"), _REPLAY_KEYS)
    wait = _CHECK.mapping(f"{source}: partition_wait", top.get("partition_wait"), _WAIT_KEYS)
    transaction = _CHECK.mapping(f"{source}: transaction", top.get("transaction"), _TRANSACTION_KEYS)
    generate = top.get("generate_if_missing")
    if generate is not None:
        generate = _CHECK.mapping(f"{source}: generate_if_missing", generate, _GENERATE_KEYS)
        defaults_generate = GenerateIfMissing()
        generate = GenerateIfMissing(
            rows=_CHECK.whole(f"{source}: generate_if_missing.rows", generate.get("rows", defaults_generate.rows), 1),
            seed=_CHECK.whole(f"{source}: generate_if_missing.seed", generate.get("seed", defaults_generate.seed), 0),
            fault_rate=_CHECK.fraction(f"{source}: generate_if_missing.fault_rate",
                                       generate.get("fault_rate", defaults_generate.fault_rate)))
    producer = top.get("producer") or {}
    if not isinstance(producer, dict):
        raise IngestConfigError(f"{source}: producer must be a mapping of librdkafka settings")
    defaults = IngestConfig("", "", "", "", "")
    return _checked(IngestConfig(
        source_uri=top["source_uri"],
        staging_uri=top["staging_uri"],
        raw_topic=topics.raw,
        dlq_topic=topics.dlq,
        checkpoint_topic=topics.checkpoints,
        stage_before_ingest=top.get("stage_before_ingest", defaults.stage_before_ingest),
        mode=top.get("mode", defaults.mode.value),
        replay=ReplaySettings(replay.get("offset_hours", 0), replay.get("wrap", True)),
        chunk_rows=top.get("chunk_rows", defaults.chunk_rows),
        partition_wait_timeout_s=wait.get("timeout_s", defaults.partition_wait_timeout_s),
        partition_poke_interval_s=wait.get("poke_interval_s", defaults.partition_poke_interval_s),
        progress_every_s=top.get("progress_every_s", defaults.progress_every_s),
        transaction_timeout_ms=transaction.get("timeout_ms", defaults.transaction_timeout_ms),
        max_chunk_attempts=transaction.get("max_chunk_attempts", defaults.max_chunk_attempts),
        producer={str(k): v for k, v in producer.items()},
        row_codec=top.get("row_codec", defaults.row_codec.value),
        generate_if_missing=generate,
        source=source,
    ))


def load_ingest_config(path: str | Path | None = None) -> IngestConfig:
    """Read and check the settings file (default: :func:`include.paths.settings_file`); one sentence if wrong."""
    path = Path(path) if path is not None else settings_file(DEFAULT_CONFIG_PATH.name)
    document = read_yaml_file(path, IngestConfigError, "ingestion settings file")
    return parse_ingest_config(document, str(path))

"""The topic declarations (include/config/topics.yaml), loaded and checked before any broker call."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from include.errors import PermanentError
from include.kafka.wire import WireFormatError, load_schema
from include.paths import CONFIG_DIR, SCHEMAS_DIR, settings_file
from include.settings import Checks, did_you_mean, read_yaml_file

DEFAULT_DECLARATIONS = CONFIG_DIR / "topics.yaml"

# Topic-level configs of Apache Kafka 4.x (kafka-configs --describe --all lists the same names).
# Checked here so a typo fails validation instead of reaching the broker.
KNOWN_TOPIC_CONFIGS = frozenset({
    "cleanup.policy", "compression.type", "compression.gzip.level", "compression.lz4.level",
    "compression.zstd.level", "delete.retention.ms", "file.delete.delay.ms", "flush.messages",
    "flush.ms", "follower.replication.throttled.replicas", "index.interval.bytes",
    "leader.replication.throttled.replicas", "local.retention.bytes", "local.retention.ms",
    "max.compaction.lag.ms", "max.message.bytes", "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms", "message.timestamp.type", "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms", "min.insync.replicas", "preallocate", "remote.storage.enable",
    "remote.log.copy.disable", "remote.log.delete.on.disable", "retention.bytes", "retention.ms",
    "segment.bytes", "segment.index.bytes", "segment.jitter.ms", "segment.ms",
    "unclean.leader.election.enable",
})
ENUM_CONFIGS = {
    "cleanup.policy": {"delete", "compact", "compact,delete", "delete,compact"},
    "compression.type": {"uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"},
    "message.timestamp.type": {"CreateTime", "LogAppendTime"},
}
BOOLEAN_CONFIGS = {"preallocate", "remote.storage.enable", "unclean.leader.election.enable",
                   "remote.log.copy.disable", "remote.log.delete.on.disable"}
TEXT_CONFIGS = {"follower.replication.throttled.replicas", "leader.replication.throttled.replicas",
                "min.cleanable.dirty.ratio"} | set(ENUM_CONFIGS)
COMPATIBILITY_LEVELS = {"BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE",
                        "FULL", "FULL_TRANSITIVE", "NONE"}

TOPIC_KEYS = {"name", "role", "description", "partitions", "replication_factor", "configs",
              "value_schema", "key_schema", "compatibility"}
DEFAULT_KEYS = {"replication_factor", "configs", "compatibility"}
FILE_KEYS = {"defaults", "topics", "access"}
ACCESS_KEYS = {"principal", "group_prefixes", "transactional_id_prefixes"}
# A role is how code and the other settings files name a topic; it stays when the name changes.
_ROLE = re.compile(r"[a-z][a-z0-9_]*")


class DeclarationError(PermanentError, ValueError):
    """The declarations are wrong; the message names the file, the topic and the key."""


_CHECK = Checks(DeclarationError)


@dataclass(frozen=True)
class TopicSpec:
    """One declared topic, with the defaults already applied."""

    name: str
    role: str
    description: str
    partitions: int
    replication_factor: int
    configs: dict[str, str]
    value_schema: Path | None = None
    key_schema: Path | None = None
    compatibility: str = "BACKWARD"

    def subjects(self) -> dict[str, Path]:
        """Schema Registry subjects of this topic (TopicNameStrategy) and their schema files."""
        found = {}
        if self.value_schema:
            found[f"{self.name}-value"] = self.value_schema
        if self.key_schema:
            found[f"{self.name}-key"] = self.key_schema
        return found


@dataclass(frozen=True)
class Access:
    """What the pipeline's principal may use beside the declared topics (``access`` in the file):
    consumer groups and transactional ids, by prefix. The ACLs are derived from it and the topics
    (include/kafka_admin/acls.py)."""

    principal: str = "pipeline"
    group_prefixes: tuple[str, ...] = ()
    transactional_id_prefixes: tuple[str, ...] = ()

    def covers_group(self, group_id: str) -> bool:
        """Whether the principal's ACLs let it use consumer group ``group_id`` (it has a declared prefix)."""
        return any(group_id.startswith(prefix) for prefix in self.group_prefixes)


@dataclass(frozen=True)
class TopicCatalog:
    source: Path
    topics: tuple[TopicSpec, ...] = field(default_factory=tuple)
    access: Access = field(default_factory=Access)

    def __getitem__(self, name: str) -> TopicSpec:
        for topic in self.topics:
            if topic.name == name:
                return topic
        raise KeyError(name)

    def names(self) -> list[str]:
        return [t.name for t in self.topics]

    def spec_for(self, role: str) -> TopicSpec:
        """The topic declared with ``role``; one sentence naming the file when there is none."""
        for topic in self.topics:
            if topic.role == role:
                return topic
        roles = [t.role for t in self.topics]
        named = [t.role for t in self.topics if t.name == role]
        hint = (f" ({role!r} is the name of role {named[0]!r}: name topics by role)" if named
                else did_you_mean(role, roles))
        raise DeclarationError(f"{self.source} declares no topic with role {role!r}{hint}; "
                               f"roles: {', '.join(roles)}")

    def topic_for(self, role: str) -> str:
        """The name of the topic declared with ``role`` (how code refers to a topic)."""
        return self.spec_for(role).name


def _config_value(where: str, name: str, value: Any) -> str:
    """Kafka takes every config as a string; check the value's shape first."""
    if name not in KNOWN_TOPIC_CONFIGS:
        raise DeclarationError(
            f"{where}: unknown Kafka topic config {name!r}{did_you_mean(name, KNOWN_TOPIC_CONFIGS)}")
    if name in BOOLEAN_CONFIGS:
        return str(_CHECK.flag(f"{where}: {name}", value)).lower()
    if name in ENUM_CONFIGS:
        return _CHECK.choice(f"{where}: {name}", value, sorted(ENUM_CONFIGS[name]))
    if name in TEXT_CONFIGS:
        return str(value)
    return str(_CHECK.whole(f"{where}: {name}", value, -1))


def _schema_path(where: str, key: str, value: Any, schemas_dir: Path) -> Path | None:
    if value is None:
        return None
    path = schemas_dir / str(value)
    try:
        load_schema(path)
    except WireFormatError as error:
        raise DeclarationError(f"{where}: {key}: {error}") from None
    return path


def _prefixes(where: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise DeclarationError(f"{where} must be a list of non-empty prefixes, not {value!r}")
    return tuple(value)


def _access(source: Path, raw: Any) -> Access:
    where = f"{source}: access"
    raw = _CHECK.mapping(where, raw, ACCESS_KEYS)
    principal = raw.get("principal", Access.principal)
    if not isinstance(principal, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", principal):
        raise DeclarationError(f"{where}: principal must be a user name (letters, digits, '_', '.', '-'), not {principal!r}")
    return Access(principal=principal,
                  group_prefixes=_prefixes(f"{where}: group_prefixes", raw.get("group_prefixes", [])),
                  transactional_id_prefixes=_prefixes(f"{where}: transactional_id_prefixes",
                                                      raw.get("transactional_id_prefixes", [])))


def parse_catalog(document: Any, source: Path, schemas_dir: Path = SCHEMAS_DIR) -> TopicCatalog:
    """Check a parsed declarations document and turn it into a catalog."""
    if not isinstance(document, dict):
        raise DeclarationError(f"{source}: expected a mapping with 'topics', got {type(document).__name__}")
    _CHECK.mapping(str(source), document, FILE_KEYS)
    defaults = _CHECK.mapping(f"{source}: defaults", document.get("defaults"), DEFAULT_KEYS)
    default_configs = {
        name: _config_value(f"{source}: defaults", name, value)
        for name, value in (defaults.get("configs") or {}).items()
    }
    raw_topics = document.get("topics")
    if not isinstance(raw_topics, list) or not raw_topics:
        raise DeclarationError(f"{source}: 'topics' must be a non-empty list")

    topics: list[TopicSpec] = []
    for index, raw in enumerate(raw_topics):
        if not isinstance(raw, dict) or not raw.get("name"):
            raise DeclarationError(f"{source}: topic #{index + 1} has no name")
        name = str(raw["name"])
        where = f"{source}: topic {name}"
        _CHECK.mapping(where, raw, TOPIC_KEYS)
        if name in {t.name for t in topics}:
            raise DeclarationError(f"{where}: declared twice")
        role = raw.get("role")
        if not isinstance(role, str) or not _ROLE.fullmatch(role):
            raise DeclarationError(f"{where}: role must be a lower-case identifier (what code calls the topic), "
                                   f"not {role!r}")
        if role in {t.role for t in topics}:
            raise DeclarationError(f"{where}: role {role!r} is already topic {next(t.name for t in topics if t.role == role)}'s")
        if "partitions" not in raw:
            raise DeclarationError(f"{where}: partitions is missing")
        configs = dict(default_configs)
        for config_name, value in (raw.get("configs") or {}).items():
            configs[config_name] = _config_value(where, config_name, value)
        compatibility = _CHECK.choice(f"{where}: compatibility",
                                      raw.get("compatibility", defaults.get("compatibility", "BACKWARD")),
                                      sorted(COMPATIBILITY_LEVELS))
        topics.append(TopicSpec(
            name=name,
            role=role,
            description=str(raw.get("description", "")),
            partitions=_CHECK.whole(f"{where}: partitions", raw["partitions"], 1),
            replication_factor=_CHECK.whole(f"{where}: replication_factor",
                                            raw.get("replication_factor", defaults.get("replication_factor", 1)), 1),
            configs=configs,
            value_schema=_schema_path(where, "value_schema", raw.get("value_schema"), schemas_dir),
            key_schema=_schema_path(where, "key_schema", raw.get("key_schema"), schemas_dir),
            compatibility=compatibility,
        ))
    return TopicCatalog(source, tuple(topics), _access(source, document.get("access")))


def load_catalog(path: str | Path | None = None, schemas_dir: Path = SCHEMAS_DIR) -> TopicCatalog:
    """Read and check the declarations file (default: :func:`include.paths.settings_file`); one sentence if wrong."""
    path = Path(path) if path is not None else settings_file(DEFAULT_DECLARATIONS.name)
    document = read_yaml_file(path, DeclarationError, "declarations file")
    return parse_catalog(document, path, schemas_dir)


@functools.lru_cache(maxsize=8)
def _declared(path: Path) -> TopicCatalog:
    return load_catalog(path)


def declared_catalog() -> TopicCatalog:
    """The catalog in use (:func:`include.paths.settings_file`), read once per process and file."""
    return _declared(settings_file(DEFAULT_DECLARATIONS.name))


def topic_for(role: str) -> str:
    """The declared name of the topic with ``role``: ``topic_for("raw")``. Roles are written in code, names only in topics.yaml."""
    return declared_catalog().topic_for(role)

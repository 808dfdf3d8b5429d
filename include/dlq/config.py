"""The DLQ reprocessing settings (include/config/dlq.yaml): read once, checked, one sentence when wrong."""

from __future__ import annotations

import dataclasses
import enum
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from include.dlq.repairs import REPAIRS
from include.errors import PermanentError
from include.kafka_admin.catalog import DeclarationError, TopicCatalog, declared_catalog
from include.paths import CONFIG_DIR, settings_file
from include.settings import Checks, read_yaml_file

DEFAULT_CONFIG_PATH = CONFIG_DIR / "dlq.yaml"

_TOP_KEYS = {"retry", "archive_uri", "batch_records", "linger_s", "progress_every_s", "dlqs"}
_RETRY_KEYS = {"max_attempts", "base_s", "multiplier", "cap_s", "jitter", "max_age_s"}
_DLQ_KEYS = {"name", "topic", "format", "repaired_topic", "retry_topics", "parked_topic", "rules", "group_id"}
_RULE_KEYS = {"reason", "stage", "action", "repairs"}


class DlqConfigError(PermanentError, ValueError):
    """The DLQ reprocessing settings are wrong; the message names the file and the key."""


_CHECK = Checks(DlqConfigError)


class Action(str, enum.Enum):
    """What happens to a dead letter (see include/config/dlq.yaml)."""

    REPAIR = "repair"
    RETRY = "retry"
    PARK = "park"


class DlqFormat(str, enum.Enum):
    """How a DLQ's records say why they failed."""

    ENVELOPE = "envelope"  # Avro DlqEnvelope values (the ingestion's)
    HEADERS = "headers"  # the failed record unchanged, why in dlq.* headers (the stream processors')


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff and jitter."""

    max_attempts: int = 3
    base_s: float = 5.0
    multiplier: float = 4.0
    cap_s: float = 600.0
    jitter: float = 0.1
    max_age_s: float = 86_400.0

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds before ``attempt`` (1 = the first retry) is due, jitter included."""
        delay = min(self.cap_s, self.base_s * self.multiplier ** (attempt - 1))
        spread = delay * self.jitter
        return max(0.0, delay + (rng or random).uniform(-spread, spread))


@dataclass(frozen=True)
class Rule:
    """Dead letters with this reason (and stage, when set) get this action."""

    reason: str
    action: Action
    stage: str | None = None
    repairs: tuple[str, ...] = ()

    def matches(self, reason: str, stage: str | None) -> bool:
        return self.reason == reason and (self.stage is None or self.stage == stage)


@dataclass(frozen=True)
class DlqSpec:
    """One DLQ: where its records are, where each outcome goes and how they are classified."""

    name: str
    topic: str
    format: DlqFormat
    parked_topic: str
    repaired_topic: str | None = None
    retry_topics: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = ()
    group_id: str = ""

    def rule_for(self, reason: str, stage: str | None) -> Rule | None:
        """The first rule for ``reason`` (and ``stage``); None: unknown, so parked."""
        return next((rule for rule in self.rules if rule.matches(reason, stage)), None)

    def retry_topic(self, attempt: int) -> str:
        """Retry topic of ``attempt`` (1-based): one per attempt, the last one for the rest."""
        return self.retry_topics[min(attempt, len(self.retry_topics)) - 1]

    def sandboxed(self, topics: dict[str, str], group_id: str | None = None) -> DlqSpec:
        """This DLQ on other topics (``{role: name}``, roles dlq, repaired, parked, retry1..N) and group."""
        retry = list(self.retry_topics)
        for role, name in topics.items():
            if role.startswith("retry") and role[5:].isdigit() and 1 <= int(role[5:]) <= len(retry):
                retry[int(role[5:]) - 1] = name
            elif role not in ("dlq", "repaired", "parked"):
                raise DlqConfigError(f"unknown topic role {role!r}: use dlq, repaired, parked or retry1..retry{len(retry)}")
        return dataclasses.replace(
            self, topic=topics.get("dlq", self.topic), repaired_topic=topics.get("repaired", self.repaired_topic),
            parked_topic=topics.get("parked", self.parked_topic), retry_topics=tuple(retry),
            group_id=group_id or self.group_id)

    @property
    def consumed_topics(self) -> list[str]:
        """What the reprocessor of this DLQ reads: the DLQ itself and its retry topics."""
        return [self.topic, *self.retry_topics]

    @property
    def transactional_id(self) -> str:
        """Stable per DLQ and group, so a retried run fences a still-running older one."""
        return f"dlq-reprocessing/{self.group_id}"


@dataclass(frozen=True)
class DlqConfig:
    """Checked reprocessing settings; ``source`` names the file, for messages."""

    dlqs: tuple[DlqSpec, ...]
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    archive_uri: str = "data/dlq/archive"
    batch_records: int = 2000
    linger_s: float = 30.0
    progress_every_s: float = 10.0
    source: str = "<defaults>"

    def dlq(self, name: str) -> DlqSpec:
        for spec in self.dlqs:
            if spec.name == name:
                return spec
        raise DlqConfigError(f"{self.source} declares no DLQ named {name!r}; it declares "
                             f"{', '.join(s.name for s in self.dlqs)}")

    def names(self) -> list[str]:
        return [spec.name for spec in self.dlqs]


def _rule(where: str, raw: Any, format: DlqFormat, has_retry: bool) -> Rule:
    raw = _CHECK.mapping(where, raw, _RULE_KEYS)
    _CHECK.required(where, raw, ("reason", "action"))
    action = Action(_CHECK.choice(f"{where}: action", raw["action"], [a.value for a in Action]))
    repairs = tuple(raw.get("repairs") or ())
    if action is Action.REPAIR:
        if not repairs:
            raise DlqConfigError(f"{where}: a repair rule names no repairs")
        if format is not DlqFormat.ENVELOPE:
            raise DlqConfigError(f"{where}: only Avazu rows (format envelope) can be repaired")
        for name in repairs:
            _CHECK.choice(f"{where}: repairs", name, list(REPAIRS))
    elif repairs:
        raise DlqConfigError(f"{where}: repairs are only for action repair, not {action.value}")
    if action is Action.RETRY and not has_retry:
        raise DlqConfigError(f"{where}: a retry rule needs retry_topics on its DLQ")
    stage = raw.get("stage")
    return Rule(_CHECK.text(f"{where}: reason", raw["reason"]), action,
                _CHECK.text(f"{where}: stage", stage) if stage is not None else None, repairs)


def _dlq(where: str, raw: Any, catalog: TopicCatalog) -> DlqSpec:
    raw = _CHECK.mapping(where, raw, _DLQ_KEYS)
    _CHECK.required(where, raw, ("topic", "format", "parked_topic"))

    def topic(key: str, role: Any) -> str:
        """The declared name of the topic ``role`` (the settings name topics by role)."""
        try:
            return catalog.topic_for(_CHECK.text(f"{where}: {key}", role))
        except DeclarationError as error:
            raise DlqConfigError(f"{where}: {key}: {error}") from None

    dlq_topic = topic("topic", raw["topic"])
    # A DLQ is called by its topic's name unless it says otherwise (its group id derives from it).
    name = _CHECK.text(f"{where}: name", raw.get("name", dlq_topic))
    where = f"{where.rsplit(':', 1)[0]}: dlq {name}"
    format = DlqFormat(_CHECK.choice(f"{where}: format", raw["format"], [f.value for f in DlqFormat]))
    retry_topics = tuple(topic("retry_topics", t) for t in raw.get("retry_topics") or ())
    rules = tuple(_rule(f"{where}: rule #{i + 1}", r, format, bool(retry_topics)) for i, r in enumerate(raw.get("rules") or ()))
    repaired = topic("repaired_topic", raw["repaired_topic"]) if raw.get("repaired_topic") else None
    if any(rule.action is Action.REPAIR for rule in rules) and not repaired:
        raise DlqConfigError(f"{where}: repair rules need a repaired_topic")
    parked = topic("parked_topic", raw["parked_topic"])
    topics = [dlq_topic, parked, *retry_topics, *([repaired] if repaired else [])]
    if len(set(topics)) != len(topics):
        raise DlqConfigError(f"{where}: the DLQ, repaired, retry and parked topics must all differ")
    return DlqSpec(
        name=name,
        topic=dlq_topic,
        format=format,
        parked_topic=parked,
        repaired_topic=repaired,
        retry_topics=retry_topics,
        rules=rules,
        group_id=_CHECK.text(f"{where}: group_id", raw.get("group_id") or f"dlq-reprocessing.{name}"),
    )


def parse_dlq_config(document: Any, source: str, catalog: TopicCatalog | None = None) -> DlqConfig:
    """Check a parsed YAML document and turn it into a :class:`DlqConfig`, its topic roles into ``catalog``'s names."""
    top = _CHECK.mapping(source, document, _TOP_KEYS)
    _CHECK.required(source, top, ("dlqs",))
    retry = _CHECK.mapping(f"{source}: retry", top.get("retry"), _RETRY_KEYS)
    defaults = RetryPolicy()
    policy = RetryPolicy(
        max_attempts=_CHECK.whole(f"{source}: retry.max_attempts", retry.get("max_attempts", defaults.max_attempts), 1, 100),
        base_s=_CHECK.seconds(f"{source}: retry.base_s", retry.get("base_s", defaults.base_s)),
        multiplier=_CHECK.seconds(f"{source}: retry.multiplier", retry.get("multiplier", defaults.multiplier)),
        cap_s=_CHECK.seconds(f"{source}: retry.cap_s", retry.get("cap_s", defaults.cap_s)),
        jitter=_CHECK.fraction(f"{source}: retry.jitter", retry.get("jitter", defaults.jitter)),
        max_age_s=_CHECK.seconds(f"{source}: retry.max_age_s", retry.get("max_age_s", defaults.max_age_s)),
    )
    if policy.multiplier < 1:
        raise DlqConfigError(f"{source}: retry.multiplier must be 1 or more, not {policy.multiplier!r}")
    raw_dlqs = top["dlqs"]
    if not isinstance(raw_dlqs, list) or not raw_dlqs:
        raise DlqConfigError(f"{source}: dlqs must be a non-empty list")
    catalog = catalog or declared_catalog()
    dlqs = tuple(_dlq(f"{source}: dlqs #{i + 1}", raw, catalog) for i, raw in enumerate(raw_dlqs))
    names = [spec.name for spec in dlqs]
    if len(set(names)) != len(names):
        raise DlqConfigError(f"{source}: two DLQs have the same name")
    return DlqConfig(
        dlqs=dlqs,
        retry=policy,
        archive_uri=_CHECK.text(f"{source}: archive_uri", top.get("archive_uri", "data/dlq/archive")),
        batch_records=_CHECK.whole(f"{source}: batch_records", top.get("batch_records", 2000), 1, 100_000),
        linger_s=_CHECK.seconds(f"{source}: linger_s", top.get("linger_s", 30)),
        progress_every_s=_CHECK.seconds(f"{source}: progress_every_s", top.get("progress_every_s", 10)),
        source=source,
    )


def load_dlq_config(path: str | Path | None = None) -> DlqConfig:
    """Read and check the settings file (default: :func:`include.paths.settings_file`); one sentence if wrong."""
    path = Path(path) if path is not None else settings_file(DEFAULT_CONFIG_PATH.name)
    return parse_dlq_config(read_yaml_file(path, DlqConfigError, "DLQ reprocessing settings file"), str(path))

"""Reprocess one DLQ exactly once: classify each dead letter, then repair, retry or park it.

    result = DlqReprocessor(spec, config, kafka_config=..., registry=...).run()

A run reads the DLQ and its retry topics as the DLQ's consumer group (``read_committed``, from
the group's committed offsets to the end) and decides each record by the first rule for its
reason (include/config/dlq.yaml):

* **repaired** - a repair the row contract accepts: the row goes to the repaired topic
  (``ad_events_raw``), keyed like the ingestion's rows, with headers naming the rule and the DLQ
  record it came from;
* **retried** - a retriable failure (a retry rule, or a repaired row that could not be written
  because the registry or the broker did not answer): the envelope goes to retry topic
  ``attempts + 1`` with its due time; a record read there before it is due holds its partition
  (nothing after it is committed) until a later pass or run. After ``max_attempts``, or once the
  dead letter is older than ``max_age_s``, it is parked;
* **parked** - permanent, unknown reason, no repair fits, out of retries, or not a dead letter at
  all (``UNDECODABLE``: kept as it was, value, key and headers, with the cause in
  ``dlq.parked.why``; see include.dead_letters): the envelope goes to the parked topic and into the
  archive (Avro container files, one object per consumed partition
  and first offset of the transaction, written before the transaction commits; a re-run after a
  crash overwrites the same object).

Outcomes and consumed offsets commit in one Kafka transaction of up to ``batch_records``
records, a transaction of :class:`include.kafka.transactions.TransactionUnit` (``OnAbort.RAISE``:
an aborted transaction fails the run, whose retry redoes it): killed anywhere, a retry
of the run leaves every consumed record with exactly one outcome for a ``read_committed``
reader. The run ends when every partition is read to its end or held by a retry due later than
``linger_s`` from now; it returns its counts and checks consumed = repaired + retried + parked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import logging
import random
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import fastavro
from confluent_kafka import Consumer
from confluent_kafka.schema_registry import SchemaRegistryClient

from include import storage
from include.crash_points import PhaseHook
from include.dead_letters import (
    PARKED_WHY,
    REPAIR_RULE,
    RETRY_ATTEMPT,
    RETRY_DUE_MS,
    DeadLetter,
    load_dlq_schema,
    outcome_headers,
    read_letter,
)
from include.dlq.config import Action, DlqConfig, DlqFormat, DlqSpec
from include.dlq.repairs import repair
from include.encoding.rows import AdEventEncoder, load_ad_event_schema, partition_key
from include.errors import PermanentError, RetriableError
from include.kafka.headers import INGEST_HOUR_HEADER
from include.kafka.reader import read_to_end, reader_config
from include.kafka.registry import lookup_schema_id, schema_fetcher
from include.kafka.transactions import (
    UNIT_PHASES,
    OnAbort,
    OpenTransaction,
    TransactionalProducer,
    TransactionPolicy,
    TransactionUnit,
)
from include.kafka.wire import AvroDecoder, AvroEncoder

log = logging.getLogger(__name__)

REPAIRED, RETRIED, PARKED = "repaired", "retried", "parked"
OUTCOMES = (REPAIRED, RETRIED, PARKED)
# The crash points: the transaction unit's.
PHASES = UNIT_PHASES
TRANSACTIONS = TransactionPolicy(call_timeout_s=60.0, init_timeout_s=60.0)
# After a registry or broker failure on a repaired row, the next rows of the transaction go
# straight to retry instead of each waiting for the same failure.
_UNAVAILABLE_FOR_S = 5.0


class ReprocessingMismatch(PermanentError):
    """The run's counts do not add up: consumed records without exactly one outcome."""


@dataclass
class ReprocessResult:
    """What one run did, by outcome and by reason; JSON-ready via as_dict."""

    dlq: str
    topics: list[str]
    consumed: int = 0
    repaired: int = 0
    retried: int = 0
    parked: int = 0
    # Retry records read before they were due (and so left uncommitted for a later pass or run).
    held_not_due: int = 0
    by_reason: dict[str, dict[str, int]] = field(default_factory=dict)
    repairs_by_rule: dict[str, int] = field(default_factory=dict)
    transactions: int = 0
    passes: int = 0
    archived: list[str] = field(default_factory=list)
    next_due_at: str | None = None
    seconds: float = 0.0
    records_per_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def table(self) -> str:
        """The counts by reason and outcome, as a text table for the task log."""
        rows = [("reason", *OUTCOMES, "total")]
        for reason, counts in sorted(self.by_reason.items()):
            rows.append((reason, *(str(counts.get(o, 0)) for o in OUTCOMES), str(sum(counts.values()))))
        rows.append(("total", str(self.repaired), str(self.retried), str(self.parked), str(self.consumed)))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                                   enumerate(zip(row, widths))) for row in rows)


def reconcile(result: ReprocessResult) -> None:
    """Raise :class:`ReprocessingMismatch` unless every consumed record has exactly one outcome."""
    outcomes = result.repaired + result.retried + result.parked
    by_reason = sum(sum(counts.values()) for counts in result.by_reason.values())
    if not result.consumed == outcomes == by_reason:
        raise ReprocessingMismatch(
            f"DLQ {result.dlq} does not reconcile: consumed {result.consumed:,} but repaired {result.repaired:,} + "
            f"retried {result.retried:,} + parked {result.parked:,} = {outcomes:,} (by reason: {by_reason:,})")


class _Codecs:
    """The encoders a run writes with, looked up once; the repaired topic's lazily (see the module doc)."""

    def __init__(self, registry: SchemaRegistryClient, spec: DlqSpec):
        self.registry = registry
        self.spec = spec
        self.envelope_schema = load_dlq_schema()
        self.parsed_envelope = fastavro.parse_schema(self.envelope_schema)
        self.decoder = AvroDecoder(schema_fetcher(registry), reader_schema=self.envelope_schema)
        self.envelopes: dict[str, AvroEncoder] = {}
        for topic in [spec.parked_topic, *spec.retry_topics]:
            schema_id = lookup_schema_id(registry, f"{topic}-value", self.envelope_schema)
            self.envelopes[topic] = AvroEncoder(self.envelope_schema, schema_id)
        if spec.format is DlqFormat.ENVELOPE:
            # Envelopes written with this schema are read without a registry call.
            self.decoder.know(lookup_schema_id(registry, f"{spec.topic}-value", self.envelope_schema), self.envelope_schema)
            for topic in spec.retry_topics:
                self.decoder.know(self.envelopes[topic].schema_id, self.envelope_schema)
        self._rows: AdEventEncoder | None = None
        self._unavailable: tuple[float, str] | None = None

    def forget_failures(self) -> None:
        """A new transaction asks the registry again."""
        self._unavailable = None

    def rows(self) -> AdEventEncoder:
        """The repaired topic's row encoder; a :class:`RetriableError` while the registry does not answer."""
        if self._rows is None:
            if self._unavailable and time.monotonic() < self._unavailable[0]:
                raise RetriableError(self._unavailable[1])
            schema = load_ad_event_schema()
            try:
                schema_id = lookup_schema_id(self.registry, f"{self.spec.repaired_topic}-value", schema)
            except RetriableError as error:
                self._unavailable = (time.monotonic() + _UNAVAILABLE_FOR_S, str(error))
                raise
            self._rows = AdEventEncoder(schema_id, schema)
        return self._rows


def _count(txn: OpenTransaction, letter: DeadLetter, outcome: str) -> None:
    """One letter's outcome in the open transaction's counts (the result adds them up at the commit)."""
    txn.counts["records"] += 1
    txn.counts[outcome] += 1
    txn.counts[("reason", letter.reason, outcome)] += 1


class DlqReprocessor:
    """Reprocess one declared DLQ (see the module doc); create one per run and call :meth:`run`."""

    def __init__(self, spec: DlqSpec, config: DlqConfig, *, kafka_config: dict[str, Any],
                 registry: SchemaRegistryClient, phase_hook: PhaseHook | None = None,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None):
        self.spec = spec
        self.config = config
        self.kafka_config = dict(kafka_config)
        self.registry = registry
        self.phase_hook = phase_hook or (lambda phase, number: None)
        self.clock = clock
        self.rng = rng or random.Random()
        self._next_due_ms: int | None = None

    def run(self) -> ReprocessResult:
        started = time.monotonic()
        spec = self.spec
        result = ReprocessResult(spec.name, spec.consumed_topics)
        codecs = _Codecs(self.registry, spec)
        producer = TransactionalProducer({"linger.ms": 5, "transaction.timeout.ms": 120_000, **self.kafka_config},
                                         spec.transactional_id, label=f"DLQ {spec.name}", policy=TRANSACTIONS)
        # Parked records are archived before their transaction commits: nothing committed is unarchived.
        unit = TransactionUnit(producer, on_abort=OnAbort.RAISE, phase_hook=self.phase_hook,
                               before_commit=lambda txn: result.archived.extend(self._archive(txn, codecs)))
        try:
            outputs = [spec.parked_topic, *spec.retry_topics, *([spec.repaired_topic] if spec.repaired_topic else [])]
            producer.check_topics([*spec.consumed_topics, *outputs])
            producer.init()
            log.info("DLQ %s: reading %s as group %s; repaired -> %s, retries -> %s, parked -> %s, archive %s",
                     spec.name, ", ".join(spec.consumed_topics), spec.group_id, spec.repaired_topic or "-",
                     ", ".join(spec.retry_topics) or "-", spec.parked_topic, self.config.archive_uri)
            while True:
                result.passes += 1
                next_due_ms = self._pass(unit, codecs, result, started)
                if next_due_ms is None:
                    result.next_due_at = None
                    break
                wait = next_due_ms / 1000 - self.clock()
                result.next_due_at = dt.datetime.fromtimestamp(next_due_ms / 1000, dt.timezone.utc).isoformat(
                    timespec="seconds")
                if wait > self.config.linger_s:
                    break
                log.info("DLQ %s: a retry falls due in %.1f s; waiting for it", spec.name, max(0.0, wait))
                time.sleep(max(0.0, wait))
        finally:
            producer.close()
        self._take_counts(unit, result)
        result.seconds = round(time.monotonic() - started, 3)
        result.records_per_s = round(result.consumed / result.seconds, 1) if result.seconds > 0 else 0.0
        reconcile(result)
        log.info("DLQ %s: %s consumed = %s repaired + %s retried + %s parked in %s transaction(s), %.1f s "
                 "(%s records/s)%s\n%s", spec.name, f"{result.consumed:,}", f"{result.repaired:,}",
                 f"{result.retried:,}", f"{result.parked:,}", result.transactions, result.seconds,
                 f"{result.records_per_s:,.0f}",
                 f"; next retry due {result.next_due_at}" if result.next_due_at else "", result.table())
        return result

    # -- one pass over the topics -------------------------------------------------------------

    def _pass(self, unit: TransactionUnit, codecs: _Codecs, result: ReprocessResult, started: float) -> int | None:
        """Read every consumed topic to its end once; when the next retry falls due (epoch ms), or None.

        That is the earliest due time of a partition held by a retry read too early, or of a retry
        this pass wrote (it lands after this pass read its topic to the end).
        """
        spec, producer = self.spec, unit.producer
        self._next_due_ms = None
        # A static member: the next run (or pass) after a crash takes the partitions back at once,
        # instead of waiting out the dead member's session.
        consumer = Consumer({**reader_config(self.kafka_config, spec.group_id),
                             "group.instance.id": spec.transactional_id})
        unit.consumer = consumer
        held: dict[tuple[str, int], int] = {}
        last_log = time.monotonic()
        try:
            for message in read_to_end(consumer, spec.consumed_topics, from_committed=True, commit=False,
                                       timeout=600.0, batch=1000):
                tp = (message.topic(), message.partition())
                if tp in held:
                    continue  # behind a retry that is not due: read again by a later pass or run
                letter = read_letter(message, codecs.decoder, spec.format is DlqFormat.ENVELOPE)
                if letter.due_ms is not None and letter.due_ms > self.clock() * 1000:
                    held[tp] = letter.due_ms
                    result.held_not_due += 1
                    continue
                if unit.open is None:
                    codecs.forget_failures()
                txn = unit.begin()
                if txn.payload is None:
                    txn.payload = defaultdict(list)  # parked envelopes by consumed partition, for the archive
                _count(txn, letter, self._handle(letter, producer, codecs, txn))
                txn.consumed(letter.topic, letter.partition, letter.offset)
                if txn.counts["records"] >= self.config.batch_records:
                    unit.commit()
                if time.monotonic() - last_log >= self.config.progress_every_s:
                    last_log = time.monotonic()
                    done = unit.committed["records"] + (unit.open.counts["records"] if unit.open else 0)
                    log.info("DLQ %s: %s records handled, %s records/s", spec.name, f"{done:,}",
                             f"{done / (last_log - started):,.0f}")
            unit.commit()
        except BaseException:
            unit.abort_quietly()
            raise
        finally:
            consumer.close()
        due = [*held.values(), *([self._next_due_ms] if self._next_due_ms is not None else [])]
        return min(due) if due else None

    @staticmethod
    def _take_counts(unit: TransactionUnit, result: ReprocessResult) -> None:
        """The run's counts: what its committed transactions hold, by outcome, reason and repair rule."""
        committed = unit.committed
        result.transactions = unit.transactions
        result.consumed = committed["records"]
        result.repaired, result.retried, result.parked = (committed[o] for o in OUTCOMES)
        for key, n in sorted(committed.items(), key=lambda item: str(item[0])):
            if isinstance(key, tuple) and key[0] == "reason":
                result.by_reason.setdefault(key[1], {})[key[2]] = n
            elif isinstance(key, tuple) and key[0] == "rule":
                result.repairs_by_rule[key[1]] = n

    # -- one record ---------------------------------------------------------------------------

    def _handle(self, letter: DeadLetter, producer: TransactionalProducer, codecs: _Codecs, txn: OpenTransaction) -> str:
        spec = self.spec
        if letter.undecodable:
            return self._park(letter, producer, codecs, txn, letter.envelope["message"])
        if letter.truncated:
            return self._park(letter, producer, codecs, txn,
                              f"the ingestion kept {len(letter.envelope['raw']):,} of the line's "
                              f"{letter.envelope['raw_length']:,} bytes; the whole line is in the source file")
        rule = spec.rule_for(letter.reason, letter.envelope.get("stage"))
        if rule is None:
            return self._park(letter, producer, codecs, txn, f"no rule for reason {letter.reason}: parked, never looped")
        if rule.action is Action.PARK:
            return self._park(letter, producer, codecs, txn, f"reason {letter.reason} is permanent")
        if rule.action is Action.RETRY:
            return self._retry(letter, producer, codecs, txn, letter.envelope.get("last_error") or letter.reason)
        repaired = repair(letter.envelope["raw"], list(rule.repairs))
        if repaired is None:
            return self._park(letter, producer, codecs, txn,
                              f"none of the repairs {', '.join(rule.repairs)} gives a row the contract accepts")
        try:
            encoder = codecs.rows()
        except RetriableError as error:
            return self._retry(letter, producer, codecs, txn, f"writing the repaired row failed: {error}")
        record = repaired.record
        headers = outcome_headers(letter, REPAIRED, **{REPAIR_RULE: repaired.rule})
        headers.append((INGEST_HOUR_HEADER, str(record["hour"]).encode()))
        producer.produce(spec.repaired_topic, encoder.encode(record), partition_key(record), headers)
        txn.counts[("rule", repaired.rule)] += 1
        return REPAIRED

    def _retry(self, letter: DeadLetter, producer: TransactionalProducer, codecs: _Codecs, txn: OpenTransaction,
               error: str) -> str:
        policy = self.config.retry
        attempt = letter.attempts + 1
        first_failed = letter.envelope["first_failed_at"]
        age = self.clock() - first_failed.timestamp()
        if attempt > policy.max_attempts:
            return self._park(letter, producer, codecs, txn, f"still failing after {policy.max_attempts} "
                                                             f"attempt(s): {error}")
        if age > policy.max_age_s:
            return self._park(letter, producer, codecs, txn, f"first failed {age:,.0f} s ago, more than "
                                                             f"max_age_s {policy.max_age_s:,.0f}: {error}")
        due_ms = int((self.clock() + policy.delay_s(attempt, self.rng)) * 1000)
        envelope = {**letter.envelope, "attempts": attempt, "stage": "retry", "last_error": error[:1000]}
        topic = self.spec.retry_topic(attempt)
        headers = outcome_headers(letter, RETRIED, **{RETRY_ATTEMPT: str(attempt), RETRY_DUE_MS: str(due_ms)})
        producer.produce(topic, codecs.envelopes[topic].encode(envelope), letter.key, headers)
        self._next_due_ms = due_ms if self._next_due_ms is None else min(self._next_due_ms, due_ms)
        return RETRIED

    def _park(self, letter: DeadLetter, producer: TransactionalProducer, codecs: _Codecs, txn: OpenTransaction,
              why: str) -> str:
        envelope = {**letter.envelope, "last_error": why[:1000]}
        topic = self.spec.parked_topic
        headers = outcome_headers(letter, PARKED, **{PARKED_WHY: why[:1000]})
        if letter.undecodable:
            # Parked as it was: its own headers first, then ours (which replace any of the same name).
            ours = {name for name, _ in headers}
            headers = [(name, value) for name, value in letter.headers if name not in ours] + headers
        producer.produce(topic, codecs.envelopes[topic].encode(envelope), letter.key, headers)
        txn.payload[(letter.topic, letter.partition)].append(envelope)
        return PARKED

    # -- the archive --------------------------------------------------------------------------

    def _archive(self, txn: OpenTransaction, codecs: _Codecs) -> list[str]:
        """One Avro container per consumed partition of the transaction, named by its first offset.

        Written before the commit, so nothing is committed that is not archived; a retry after a
        crash starts at the same offset and overwrites the same object. A partition that parked
        nothing this time removes what an aborted attempt may have left under its name.
        """
        written = []
        for (topic, partition), first in txn.first_offsets.items():
            uri = archive_uri(self.config.archive_uri, self.spec.name, topic, partition, first)
            envelopes = txn.payload.get((topic, partition)) if txn.payload else None
            if not envelopes:
                storage.delete(uri)
                continue
            buffer = io.BytesIO()
            fastavro.writer(buffer, codecs.parsed_envelope, envelopes, codec="deflate", metadata={
                "dlq.topic": topic, "dlq.partition": str(partition), "dlq.first_offset": str(first),
                "dlq.next_offset": str(txn.offsets[(topic, partition)]),
                "dlq.sha256": hashlib.sha256(b"".join(e["raw"] for e in envelopes)).hexdigest(),
            })
            storage.write_bytes(uri, buffer.getvalue())
            written.append(uri)
        return written


def archive_uri(root: str, dlq: str, topic: str, partition: int, first_offset: int) -> str:
    """Where the parked records of one transaction's partition are archived."""
    return storage.join_uri(root, dlq, topic, f"partition={partition}", f"offset={first_offset:020d}.avro")


def read_archive(uri: str) -> list[dict[str, Any]]:
    """The parked envelopes of one archive object."""
    return list(fastavro.reader(io.BytesIO(storage.read_bytes(uri))))

"""Consumer lag per group and partition, in records and in seconds, judged over a window of samples.

``kafka-consumer-groups --describe`` gives lag = log end - committed, once. Two things make that
wrong or unhelpful for this pipeline, and this module does them differently:

* Our topics are written in transactions, so the high watermark counts commit markers and the
  records of open or aborted transactions: a caught-up group shows phantom lag. The end offset
  here is the last stable offset (``list_offsets`` as ``read_committed``).
* A lag in records says nothing about how late a consumer is. The lag in seconds here is the age
  of the oldest record the group has not consumed: the timestamp of the record at its committed
  offset. It is exact (no interpolation of log-end offsets over time), 0 when the group is caught
  up (never NaN), and does not grow on an idle topic where nothing waits.

Like LinkedIn's Burrow, a partition is judged over a window of samples kept between runs, not by
one reading, and the statuses follow Burrow's names:

* ``OK``: caught up, or committing and not in breach (an idle, caught-up group is OK: no false STOP);
* ``WARN``: committing, but the lag grew over the whole window (it falls behind);
* ``STALL``: records wait and the committed offset has not moved for ``stall_after_s``, while the
  group has members;
* ``STOP``: the same, and the group has no member;
* ``REWIND``: the committed offset went back (a reset): reported, not failed;
* ``LOST``: the committed offset is below the log start: retention deleted records the group never
  read. That fails at once.

Any other breach (STALL, STOP or a lag over ``max_records`` / ``max_seconds``) fails the check only
when it holds for the newest ``breach_samples`` samples, so one slow moment is not an incident.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    IsolationLevel,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from include.health.config import LagLimits, matches
from include.health.outcome import CheckOutcome, Metric, first_problems
from include.kafka.errors import KafkaUnavailable
from include.kafka.reader import reader_config

if TYPE_CHECKING:
    from include.health.checks import HealthInputs

log = logging.getLogger(__name__)

# Group states in which no consumer is a member (a STOP rather than a STALL).
_MEMBERLESS = {"EMPTY", "DEAD"}


@dataclass(frozen=True)
class LagSample:
    """One reading of one group's partition."""

    at: float  # when (Unix seconds)
    committed: int  # the group's committed offset (-1: none yet)
    end: int  # the last stable offset (read_committed end), less commit markers nothing follows
    start: int  # the log start offset
    lag_seconds: float  # age of the oldest record not consumed (0 when caught up)
    state: str  # the group's state (STABLE, EMPTY, ...)
    members: int

    @property
    def lag(self) -> int:
        if self.committed < 0:
            return max(0, self.end - self.start)
        return max(0, self.end - max(self.committed, self.start))

    @property
    def lost(self) -> int:
        """Records retention deleted before the group read them."""
        return max(0, self.start - self.committed) if self.committed >= 0 else 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PartitionKey:
    group: str
    topic: str
    partition: int

    def text(self) -> str:
        return f"{self.group}|{self.topic}|{self.partition}"

    @classmethod
    def parse(cls, text: str) -> PartitionKey:
        group, topic, partition = text.rsplit("|", 2)
        return cls(group, topic, int(partition))

    def where(self) -> str:
        return f"group {self.group} on {self.topic}[{self.partition}]"


@dataclass(frozen=True)
class Verdict:
    status: str  # OK | WARN | STALL | STOP | REWIND | LOST
    breach: bool  # this sample is in breach (see the module doc)
    failing: bool  # the breach held long enough (or LOST): the check fails
    reason: str


def watched(group: str, limits: LagLimits) -> bool:
    return matches(group, limits.groups) and not matches(group, limits.exclude)


def _result(future, what: str):
    try:
        return future.result()
    except KafkaException as error:
        raise KafkaUnavailable(f"{what} failed: {error.args[0].str()}") from None


def sample_groups(admin: AdminClient, kafka_config: dict[str, Any], limits: LagLimits,
                  now: float | None = None, timeout: float = 30.0) -> dict[PartitionKey, LagSample]:
    """One sample of every partition every watched group has committed offsets for."""
    listed = _result(admin.list_consumer_groups(request_timeout=timeout), "listing the consumer groups")
    groups = sorted(g.group_id for g in listed.valid if watched(g.group_id, limits))
    if not groups:
        return {}
    described = {g: _result(f, f"describing group {g}")
                 for g, f in admin.describe_consumer_groups(groups, request_timeout=timeout).items()}
    committed: dict[PartitionKey, int] = {}
    for group in groups:
        future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                   request_timeout=timeout)[group]
        for tp in _result(future, f"reading the offsets of group {group}").topic_partitions:
            if tp.error is None and tp.offset >= 0:
                committed[PartitionKey(group, tp.topic, tp.partition)] = tp.offset
    partitions = sorted({(k.topic, k.partition) for k in committed})
    ends = _list_offsets(admin, partitions, OffsetSpec.latest(), timeout)
    starts = _list_offsets(admin, partitions, OffsetSpec.earliest(), timeout)
    committed = {k: o for k, o in committed.items() if (k.topic, k.partition) in ends and (k.topic, k.partition) in starts}
    at = time.time() if now is None else now
    # Where each group reads next: its committed offset, or the log start when retention passed it.
    positions = {k: max(offset, starts[(k.topic, k.partition)]) for k, offset in committed.items()}
    waiting = {(k.topic, k.partition, position) for k, position in positions.items()
               if ends[(k.topic, k.partition)] > position}
    stamps = oldest_waiting_timestamps(kafka_config, waiting, timeout=timeout)
    samples = {}
    for key, offset in sorted(committed.items(), key=lambda item: item[0].text()):
        tp = (key.topic, key.partition)
        position = positions[key]
        end = ends[tp]
        stamp = stamps.get((key.topic, key.partition, position), 0.0)
        if stamp is None:
            # Only commit markers follow the committed offset (a transactional producer's last
            # offset is its marker): that is no lag, however the offsets differ.
            end, stamp = position, None
        group = described[key.group]
        samples[key] = LagSample(
            at=at, committed=offset, end=end, start=starts[tp],
            lag_seconds=max(0.0, at - stamp) if stamp else 0.0,
            state=getattr(group.state, "name", str(group.state)), members=len(group.members))
    return samples


def _list_offsets(admin: AdminClient, partitions: list[tuple[str, int]], spec, timeout: float) -> dict[tuple[str, int], int]:
    """Offsets of ``partitions``; a partition whose topic was deleted (a group's leftover offsets) is left out."""
    if not partitions:
        return {}
    request = {TopicPartition(t, p): spec for t, p in partitions}
    futures = admin.list_offsets(request, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout)
    found = {}
    for tp, future in futures.items():
        try:
            found[(tp.topic, tp.partition)] = future.result().offset
        except KafkaException as error:
            if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise KafkaUnavailable(f"listing the offsets of {tp.topic}[{tp.partition}] failed: "
                                       f"{error.args[0].str()}") from None
            log.info("offsets committed on %s[%s], which no longer exists: not watched", tp.topic, tp.partition)
    return found


def oldest_waiting_timestamps(kafka_config: dict[str, Any], positions: set[tuple[str, int, int]],
                              timeout: float = 30.0) -> dict[tuple[str, int, int], float | None]:
    """The timestamp (Unix seconds) of the first committed record at or after each (topic, partition, offset).

    None where there is none: only transaction markers (or aborted records) lie between the
    offset and the end, so nothing waits there.
    """
    if not positions:
        return {}
    consumer = Consumer(reader_config(kafka_config, f"pipeline-health-lag-{uuid.uuid4().hex}"))
    found: dict[tuple[str, int, int], float | None] = {}
    wanted = {(t, p): o for t, p, o in positions}
    try:
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in wanted.items()])
        deadline = time.monotonic() + timeout
        while wanted and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=len(wanted), timeout=0.5):
                tp = (message.topic(), message.partition())
                if tp not in wanted:
                    continue
                error = message.error()
                if error is None:
                    found[(*tp, wanted.pop(tp))] = message.timestamp()[1] / 1000.0
                elif error.code() == KafkaError._PARTITION_EOF:
                    found[(*tp, wanted.pop(tp))] = None
                else:
                    continue
                consumer.pause([TopicPartition(*tp)])
    finally:
        consumer.close()
    return found


def judge(window: list[LagSample], limits: LagLimits) -> Verdict:
    """The partition's status from its window of samples (oldest first; see the module doc)."""
    latest = window[-1]
    if latest.lost:
        return Verdict("LOST", True, True, f"its committed offset {latest.committed:,} is below the log start "
                                            f"{latest.start:,}: {latest.lost:,} records were deleted by retention before it read them")
    # Only the newest breach_samples samples decide whether the breach held.
    newest = [_sample_verdict(window[:i + 1], limits)
              for i in range(max(0, len(window) - limits.breach_samples), len(window))]
    status, breach, reason = newest[-1]
    failing = len(newest) >= limits.breach_samples and all(b for _, b, _ in newest)
    if not breach and status == "OK" and len(window) >= 3 and all(
            b.lag > a.lag and b.committed > a.committed for a, b in zip(window, window[1:])):
        status, reason = "WARN", f"its lag grew at every one of the last {len(window)} samples"
    return Verdict(status, breach, failing, reason)


def _sample_verdict(window: list[LagSample], limits: LagLimits) -> tuple[str, bool, str]:
    """The status of the window's newest sample, given the samples before it."""
    sample = window[-1]
    previous = window[-2] if len(window) > 1 else None
    if previous is not None and sample.committed < previous.committed:
        return "REWIND", False, f"its committed offset went back from {previous.committed:,} to {sample.committed:,}"
    if sample.lag == 0:
        return "OK", False, "caught up"
    over = []
    if sample.lag > limits.max_records:
        over.append(f"{sample.lag:,} records behind (limit {limits.max_records:,})")
    if sample.lag_seconds > limits.max_seconds:
        over.append(f"its oldest waiting record is {sample.lag_seconds:,.0f} s old (limit {limits.max_seconds:,.0f} s)")
    # How long the committed offset has stood still: since the oldest sample of the run of samples
    # with this offset. A consumer that commits in batches or runs on a schedule stands still
    # between its runs; only a standstill longer than stall_after_s is a STALL or a STOP.
    still_since = sample
    for earlier in reversed(window[:-1]):
        if earlier.committed != sample.committed:
            break
        still_since = earlier
    still = sample.at - still_since.at
    if previous is not None and still >= limits.stall_after_s:
        if sample.state in _MEMBERLESS or sample.members == 0:
            return "STOP", True, (f"it has no member (state {sample.state}) and its committed offset "
                                  f"{sample.committed:,} has not moved for {still:,.0f} s while {sample.lag:,} records wait")
        return "STALL", True, (f"it has {sample.members} member(s) (state {sample.state}) but its committed offset "
                               f"{sample.committed:,} has not moved for {still:,.0f} s while {sample.lag:,} records wait")
    if over:
        return "OK", True, "; ".join(over)
    if previous is not None and still > 0:
        return "OK", False, (f"{sample.lag:,} records behind; committed offset still for {still:,.0f} s "
                             f"(a STALL or STOP after {limits.stall_after_s:,.0f} s)")
    return "OK", False, f"{sample.lag:,} records behind and committing"


def window_after(window: list[LagSample], sample: LagSample, limits: LagLimits) -> list[LagSample]:
    """The window with ``sample`` added, samples too old dropped, at most ``window_samples`` kept."""
    kept = [s for s in window if sample.at - s.at <= limits.max_sample_age_s and s.at < sample.at]
    return [*kept, sample][-limits.window_samples:]


def consumption_rate(window: list[LagSample]) -> float | None:
    """Records per second the group consumed between its last two samples, while records waited.

    None unless that is its speed: records waited at both samples (a group that caught up in
    between could have gone faster) and its committed offset moved (a group standing still is the
    lag check's STALL or STOP, not a slow one).
    """
    if len(window) < 2:
        return None
    a, b = window[-2], window[-1]
    if b.at <= a.at or a.lag == 0 or b.lag == 0 or b.committed <= a.committed:
        return None
    return (b.committed - a.committed) / (b.at - a.at)


_COLUMNS = ["group", "topic", "partition", "committed", "end", "lag", "lag_s", "state", "status", "reason"]


def check_consumer_lag(inputs: HealthInputs) -> CheckOutcome:
    """Sample every watched group, add the samples to their windows (kept between runs) and judge them."""
    from include.health.state import HealthState, load_state, save_state  # state stores this module's samples

    limits = inputs.config.lag
    samples = sample_groups(inputs.admin, inputs.kafka_config, limits, now=inputs.now)
    state = load_state(inputs.config.state_uri)
    windows = {key: window_after(state.windows.get(key, []), sample, limits) for key, sample in samples.items()}
    save_state(inputs.config.state_uri, HealthState(windows))
    rows, problems, metrics = [], [], []
    for key, window in windows.items():
        sample, verdict = window[-1], judge(window, limits)
        if verdict.failing:
            held = "" if verdict.status == "LOST" else f" for the last {limits.breach_samples} samples"
            problems.append(f"{key.where()} is {verdict.status}{held}: {verdict.reason}")
        rows.append({"group": key.group, "topic": key.topic, "partition": key.partition,
                     "committed": sample.committed, "end": sample.end, "lag": sample.lag,
                     "lag_s": f"{sample.lag_seconds:.1f}", "state": sample.state,
                     "status": verdict.status + ("!" if verdict.failing else ""), "reason": verdict.reason})
        labels = {"group": key.group, "topic": key.topic, "partition": str(key.partition)}
        metrics.append(Metric("consumer_lag_records", sample.lag, labels, "Records not yet consumed (read_committed end)"))
        metrics.append(Metric("consumer_lag_seconds", sample.lag_seconds, labels,
                              "Age of the oldest record the group has not consumed"))
    series = {"lag": {key.text(): [{"at": s.at, "lag": s.lag, "lag_seconds": s.lag_seconds} for s in window]
                      for key, window in windows.items()}}
    if problems:
        summary = (f"{len(problems)} of {len(rows)} partition(s) are in breach: {first_problems(problems)}; "
                   "look at the group's consumers (their task logs) and `kafka-consumer-groups --describe --group <group>`")
        return CheckOutcome("consumer_lag", False, summary, _COLUMNS, rows, metrics, series)
    if not rows:
        return CheckOutcome("consumer_lag", True, f"no watched group ({', '.join(limits.groups)}) has committed offsets",
                            _COLUMNS, rows, metrics, series)
    worst = max(rows, key=lambda r: r["lag"])
    groups = len({r["group"] for r in rows})
    return CheckOutcome("consumer_lag", True, f"{groups} group(s) over {len(rows)} partition(s) within limits; "
                        f"largest lag {worst['lag']:,} records ({worst['group']} on {worst['topic']}[{worst['partition']}])",
                        _COLUMNS, rows, metrics, series)

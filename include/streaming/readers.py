"""The final consumers of the stream pipelines: read what a processor committed and report it.

Like the seed's last KafkaConsumer, a report reader is a consumer group that starts from the
earliest offset; unlike it, it stops at the end of the topic (so it can be a bounded task), reads
with ``isolation.level=read_committed`` (only committed transactions), and commits its offsets at
the end, so the next report of the same group covers only what came after. The loop is
:func:`include.kafka.reader.read_to_end`'s; create the consumer with
:func:`include.kafka.reader.reader_config`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Callable

from confluent_kafka import Consumer

from include.kafka.reader import read_to_end

from include.errors import PermanentError

log = logging.getLogger(__name__)

# How many records a report logs one by one, like the seed's consumer prints them.
LOGGED_RECORDS = 20


@dataclass
class AnalyticsReport:
    """What a reader of analytics-events saw."""

    topic: str
    records: int = 0
    by_event_type: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, int] = field(default_factory=dict)
    users: int = 0
    revenue: dict[str, str] = field(default_factory=dict)
    # Events made from the same input record more than once: exactly-once means 0.
    duplicates: int = 0
    undecodable: int = 0
    first_occurred_at: str | None = None
    last_occurred_at: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def read_analytics_report(consumer: Consumer, topic: str, decode: Callable[[bytes], dict[str, Any]],
                     timeout: float = 60.0) -> AnalyticsReport:
    """Read analytics-events to its end and count it by event type, source, user and currency."""
    began = time.monotonic()
    report = AnalyticsReport(topic)
    by_type: Counter[str] = Counter()
    by_source: Counter[str] = Counter()
    revenue: dict[str, Decimal] = {}
    users: set[str] = set()
    # Every origin is kept to count duplicates: fine for a bounded run's report, not for years.
    seen: set[tuple[str, int, int]] = set()
    first: dt.datetime | None = None
    last: dt.datetime | None = None
    for message in read_to_end(consumer, [topic], from_committed=True, timeout=timeout):
        report.records += 1
        try:
            event = decode(message.value())
        except Exception as exc:  # counted and logged: a report never hides a bad record
            report.undecodable += 1
            log.warning("undecodable record %s[%d]@%d: %s", message.topic(), message.partition(),
                        message.offset(), exc)
            continue
        if report.records <= LOGGED_RECORDS:
            log.info("Consumed from %s: %s %s %s", topic, event["event_type"], event["user_id"],
                     event["event_id"])
        by_type[event["event_type"]] += 1
        by_source[event["source"]] += 1
        users.add(event["user_id"])
        first = min(first or event["occurred_at"], event["occurred_at"])
        last = max(last or event["occurred_at"], event["occurred_at"])
        if event.get("amount") is not None:
            revenue[event["currency"]] = revenue.get(event["currency"], Decimal(0)) + event["amount"]
        origin = (event["source_topic"], event["source_partition"], event["source_offset"])
        if origin in seen:
            report.duplicates += 1
        seen.add(origin)
    report.by_event_type = dict(sorted(by_type.items()))
    report.by_source = dict(sorted(by_source.items()))
    report.users = len(users)
    report.revenue = {currency: str(total) for currency, total in sorted(revenue.items())}
    if first is not None:
        report.first_occurred_at = first.isoformat()
        report.last_occurred_at = last.isoformat()
    report.seconds = round(time.monotonic() - began, 3)
    log.info("%s: %d analytics events (%s), %d users, %d duplicates, %d undecodable", topic,
             report.records, report.by_event_type, report.users, report.duplicates,
             report.undecodable)
    return report


@dataclass
class WordsReport:
    """What a reader of output-topic saw, in partition order."""

    topic: str
    records: int = 0
    by_partition: dict[int, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        # XCom keys are strings in JSON.
        return {**asdict(self), "by_partition": {str(p): w for p, w in self.by_partition.items()}}


def read_words_report(consumer: Consumer, topic: str, timeout: float = 60.0) -> WordsReport:
    """Read output-topic to its end; the words of each partition in the order they were written."""
    began = time.monotonic()
    report = WordsReport(topic)
    for message in read_to_end(consumer, [topic], from_committed=True, timeout=timeout):
        word = (message.value() or b"").decode("utf-8", "replace")
        report.records += 1
        report.by_partition.setdefault(message.partition(), []).append(word)
        if report.records <= LOGGED_RECORDS:
            log.info("Consumed from %s: %s", topic, word)
    report.by_partition = dict(sorted(report.by_partition.items()))
    report.seconds = round(time.monotonic() - began, 3)
    log.info("%s: %d words from %d partition(s)", topic, report.records, len(report.by_partition))
    return report


class PipelineMismatch(PermanentError, AssertionError):
    """An end-to-end run did not deliver exactly what was sent."""


def check_analytics_run(report: dict[str, Any], simulations: list[dict[str, Any]],
                        processed: dict[str, Any]) -> dict[str, Any]:
    """Compare a bounded seed 004 run end to end: every good event once, every bad one in the DLQ.

    Holds when the topics carried only this run's events past the groups' committed offsets.
    Returns the comparison; raises PipelineMismatch naming each difference.
    """
    good = sum(s["good"] for s in simulations)
    bad = sum(s["bad"] for s in simulations)
    comparison = {"sent": good + bad, "expected_analytics": good, "expected_dead_letters": bad,
                  "processed_in": processed["records_in"], "dead_lettered": processed["dead_lettered"],
                  "analytics_seen": report["records"], "duplicates": report["duplicates"]}
    problems = []
    if processed["records_in"] != good + bad:
        problems.append(f"the processor read {processed['records_in']} of the {good + bad} events sent "
                        f"(stopped by {processed['stop_reason']})")
    if processed["dead_lettered"] != bad:
        problems.append(f"{processed['dead_lettered']} events went to the DLQ, {bad} were sent bad")
    if report["records"] != good:
        problems.append(f"the final consumer saw {report['records']} analytics events, "
                        f"{good} good events were sent")
    if report["duplicates"] or report["undecodable"]:
        problems.append(f"{report['duplicates']} duplicate and {report['undecodable']} undecodable "
                        "analytics events")
    if problems:
        raise PipelineMismatch("; ".join(problems))
    return comparison


def check_words_run(report: dict[str, Any], words: list[str]) -> dict[str, Any]:
    """Compare a bounded seed 003 run end to end: each word once, upper-cased."""
    seen = sorted(w for ws in report["by_partition"].values() for w in ws)
    expected = sorted(w.upper() for w in words)
    if seen != expected:
        raise PipelineMismatch(f"the final consumer saw {len(seen)} words {seen[:10]}..., expected "
                               f"{len(expected)} words {expected[:10]}...")
    return {"words_sent": len(words), "words_seen": len(seen)}

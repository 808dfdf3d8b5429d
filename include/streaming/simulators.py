"""Event simulators for the stream pipelines: seed 004's web and purchase producers, seed 003's words.

Generation is separate from producing: ``web_events``/``purchase_events`` yield the events a seed
makes (a ``bad_ratio`` share deliberately broken, chosen by a seeded random generator, so the same
arguments give the same bytes), and ``publish`` sends any such events at a given rate and returns a
report naming every bad event it sent by sequence number and fault.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

from confluent_kafka import Producer

from include.errors import RetriableError

WEB_FIELDS_THAT_GO_MISSING = ("event_id", "user_id", "event_type", "page", "timestamp")
PURCHASE_FAULTS = ("broken_json", "not_json", "not_object", "wrong_type:amount",
                   "wrong_type:quantity", "wrong_type:user_id", "wrong_type:paid_at")
_WEB_TYPE_WEIGHTS = {"page_view": 6, "click": 3, "add_to_cart": 1}
_CURRENCIES = ("USD", "EUR", "GBP")


class SimulationFailed(RetriableError):
    """The broker did not acknowledge every simulated event."""


@dataclass(frozen=True, slots=True)
class SimulatedEvent:
    """One event as sent: ``fault`` is None for a good event, else what was broken on purpose."""

    seq: int
    key: bytes | None
    value: bytes
    fault: str | None = None


@dataclass
class SimulationReport:
    """What one publish sent: counts, and exactly which events were bad."""

    topic: str
    produced: int = 0
    delivered: int = 0
    good: int = 0
    bad: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    bad_events: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _start_time(start: dt.datetime | None) -> dt.datetime:
    return (start or dt.datetime.now(dt.timezone.utc)).astimezone(dt.timezone.utc)


def _user(rng: random.Random) -> str:
    return f"u{rng.randrange(500):04d}"


def web_events(count: int, seed: int = 0, bad_ratio: float = 0.1,
               start: dt.datetime | None = None) -> Iterator[SimulatedEvent]:
    """Web events (seed 004's producer_web.py); a bad one lacks one required field."""
    rng = random.Random(f"web-{seed}")
    began = _start_time(start)
    types, weights = zip(*_WEB_TYPE_WEIGHTS.items())
    for seq in range(count):
        user = _user(rng)
        event: dict[str, Any] = {
            "event_id": f"web-{seed}-{seq:07d}",
            "user_id": user,
            "session_id": f"s{rng.randrange(10**6):06d}",
            "event_type": rng.choices(types, weights)[0],
            "page": f"/products/p{rng.randrange(200):03d}" if rng.random() < 0.7 else "/",
            "timestamp": (began + dt.timedelta(milliseconds=seq * 100 + rng.randrange(100)))
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        }
        fault = None
        if rng.random() < bad_ratio:
            missing = rng.choice(WEB_FIELDS_THAT_GO_MISSING)
            del event[missing]
            fault = f"missing:{missing}"
        yield SimulatedEvent(seq, user.encode(), json.dumps(event).encode(), fault)


def purchase_events(count: int, seed: int = 0, bad_ratio: float = 0.1,
                    start: dt.datetime | None = None) -> Iterator[SimulatedEvent]:
    """Purchase events (seed 004's producer_purchase.py); a bad one is malformed or mistyped."""
    rng = random.Random(f"purchase-{seed}")
    began = _start_time(start)
    for seq in range(count):
        user = _user(rng)
        quantity = rng.randint(1, 5)
        event: dict[str, Any] = {
            "order_id": f"ord-{seed}-{seq:07d}",
            "user_id": user,
            "product_id": f"p{rng.randrange(200):03d}",
            "quantity": quantity,
            "amount": round(quantity * rng.uniform(1, 200), 2),
            "currency": rng.choice(_CURRENCIES),
            "paid_at": int(began.timestamp() * 1000) + seq * 250 + rng.randrange(250),
        }
        fault = None
        value = None
        if rng.random() < bad_ratio:
            fault = rng.choice(PURCHASE_FAULTS)
            value = _break_purchase(event, fault, rng)
        yield SimulatedEvent(seq, user.encode(), value or json.dumps(event).encode(), fault)


def _break_purchase(event: dict[str, Any], fault: str, rng: random.Random) -> bytes:
    text = json.dumps(event)
    if fault == "broken_json":
        # A proper prefix of a flat object lacks its closing brace, so it never parses.
        return text[: rng.randrange(1, len(text) - 1)].encode()
    if fault == "not_json":
        # Bytes from another system on the wrong topic: not even UTF-8.
        return b"\xff\xfe" + f"ORDER|{event['order_id']}|{event['amount']}".encode("utf-16-le")
    if fault == "not_object":
        return json.dumps(list(event.values())).encode()
    name = fault.split(":", 1)[1]
    mistyped = {
        "amount": f"{event['amount']} {event['currency']}",
        "quantity": str(event["quantity"]),
        "user_id": int(event["user_id"][1:]),
        "paid_at": dt.datetime.fromtimestamp(event["paid_at"] / 1000, dt.timezone.utc).isoformat(),
    }[name]
    return json.dumps({**event, name: mistyped}).encode()


def word_events(words: Iterable[str]) -> Iterator[SimulatedEvent]:
    """The seed 003 messages: each word unkeyed, as the seed's KafkaProducer sends them."""
    for seq, word in enumerate(words):
        yield SimulatedEvent(seq, None, word.encode("utf-8"))


def publish(producer: Producer, topic: str, events: Iterable[SimulatedEvent],
            rate: float | None = None, flush_timeout: float = 30.0) -> SimulationReport:
    """Send events to topic at ``rate`` events/s (None: as fast as possible) and report them.

    Raises SimulationFailed when an event is not acknowledged: the report would then lie.
    """
    report = SimulationReport(topic)
    faults: Counter[str] = Counter()
    failures: list[str] = []
    began = time.monotonic()

    def on_delivery(error, message):
        if error is None:
            report.delivered += 1
        else:
            failures.append(str(error))

    for index, event in enumerate(events):
        if rate:
            # Paced against the start, not the previous send, so small sleeps do not drift.
            ahead = began + index / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                producer.produce(topic, key=event.key, value=event.value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        report.produced += 1
        if event.fault is None:
            report.good += 1
        else:
            report.bad += 1
            faults[event.fault] += 1
            report.bad_events.append((event.seq, event.fault))
    remaining = producer.flush(flush_timeout)
    report.faults = dict(sorted(faults.items()))
    report.seconds = round(time.monotonic() - began, 3)
    if remaining:
        raise SimulationFailed(f"{remaining} event(s) for {topic} were still unacknowledged after "
                               f"{flush_timeout:.0f} s")
    if failures:
        raise SimulationFailed(f"{len(failures)} event(s) for {topic} failed delivery, first: "
                               f"{failures[0]}")
    return report


# Producer settings for the simulators: acknowledged by all replicas, no duplicates on retry.
SIMULATOR_PRODUCER_SETTINGS = {"acks": "all", "enable.idempotence": True, "linger.ms": 5}

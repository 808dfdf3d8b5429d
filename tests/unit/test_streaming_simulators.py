"""The event simulators: deterministic, bad exactly where they say, and counted when published."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest

from include.streaming.simulators import (
    PURCHASE_FAULTS,
    WEB_FIELDS_THAT_GO_MISSING,
    SimulationFailed,
    publish,
    purchase_events,
    web_events,
    word_events,
)
from include.streaming.words import SEED_WORDS

START = dt.datetime(2024, 6, 1, tzinfo=dt.timezone.utc)


class RecordingProducer:
    """Stands in for confluent_kafka.Producer: keeps what it is given, acknowledges on poll/flush."""

    def __init__(self, fail_every: int = 0):
        self.sent: list[tuple[str, bytes | None, bytes]] = []
        self._pending = []
        self.fail_every = fail_every

    def produce(self, topic, key=None, value=None, on_delivery=None):
        self.sent.append((topic, key, value))
        self._pending.append(on_delivery)

    def poll(self, timeout=0):
        while self._pending:
            callback = self._pending.pop(0)
            failed = self.fail_every and len(self.sent) % self.fail_every == 0
            callback("broker said no" if failed else None, None)
        return 0

    def flush(self, timeout=0):
        self.poll()
        return 0


def test_same_seed_same_bytes_other_seed_other_events():
    assert list(web_events(50, seed=3, start=START)) == list(web_events(50, seed=3, start=START))
    assert list(purchase_events(50, seed=3, start=START)) == \
        list(purchase_events(50, seed=3, start=START))
    assert list(web_events(50, seed=3, start=START)) != list(web_events(50, seed=4, start=START))


def test_bad_ratio_zero_and_one():
    assert not any(e.fault for e in web_events(200, bad_ratio=0))
    assert not any(e.fault for e in purchase_events(200, bad_ratio=0))
    assert all(e.fault for e in web_events(200, bad_ratio=1))
    assert all(e.fault for e in purchase_events(200, bad_ratio=1))


def test_web_faults_are_missing_fields_and_the_field_is_really_missing():
    events = [e for e in web_events(2000, seed=5, bad_ratio=0.5) if e.fault]
    assert {e.fault for e in events} == {f"missing:{f}" for f in WEB_FIELDS_THAT_GO_MISSING}
    for event in events:
        assert event.fault.split(":")[1] not in json.loads(event.value)


def test_purchase_faults_cover_every_kind():
    events = [e for e in purchase_events(2000, seed=5, bad_ratio=0.5) if e.fault]
    assert {e.fault for e in events} == set(PURCHASE_FAULTS)
    for event in events:
        if event.fault == "broken_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(event.value)
        elif event.fault == "not_json":
            with pytest.raises(UnicodeDecodeError):
                event.value.decode("utf-8")
        elif event.fault.startswith("wrong_type:"):
            name = event.fault.split(":")[1]
            mistyped_as = {"amount": str, "quantity": str, "paid_at": str, "user_id": int}[name]
            assert type(json.loads(event.value)[name]) is mistyped_as


def test_events_are_keyed_by_user_and_words_are_unkeyed():
    for event in web_events(20, bad_ratio=0):
        assert json.loads(event.value)["user_id"].encode() == event.key
    assert [(e.key, e.value) for e in word_events(SEED_WORDS)] == \
        [(None, w.encode()) for w in SEED_WORDS]


def test_publish_reports_exactly_which_events_were_bad():
    events = list(purchase_events(500, seed=9, bad_ratio=0.2))
    producer = RecordingProducer()
    report = publish(producer, "purchase-events", events)
    bad = [(e.seq, e.fault) for e in events if e.fault]
    assert report.bad_events == bad
    assert (report.produced, report.delivered, report.good, report.bad) == \
        (500, 500, 500 - len(bad), len(bad))
    assert sum(report.faults.values()) == len(bad)
    assert [value for _, _, value in producer.sent] == [e.value for e in events]
    assert report.as_dict()["bad_events"] == bad


def test_publish_fails_when_a_delivery_fails():
    with pytest.raises(SimulationFailed, match="failed delivery"):
        publish(RecordingProducer(fail_every=7), "web-events", web_events(20))


def test_publish_keeps_the_rate():
    began = time.monotonic()
    publish(RecordingProducer(), "web-events", web_events(21), rate=200)
    assert time.monotonic() - began >= 0.095

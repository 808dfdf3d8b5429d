"""read_to_end's idea of a partition's end, on a scripted consumer (the broker's side is in
tests/integration/test_kafka_reader.py): an end below the high watermark waits for the markers
of a transaction just committed, and gives up on one still open."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, TopicPartition

from include.kafka import reader


class _Event:
    def __init__(self, partition: int, offset: int, eof: bool):
        self._partition, self._offset, self._eof = partition, offset, eof

    def error(self):
        return KafkaError(KafkaError._PARTITION_EOF) if self._eof else None

    def topic(self):
        return "t"

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset


class _ScriptedConsumer:
    """One partition of topic ``t``: each consume() call returns the next step of ``script``
    (then nothing); the cached high watermark is ``high``, the end a query tells ``end`` (the last
    stable offset: ``high`` unless a transaction is in the works)."""

    def __init__(self, script, high: int, end: int | None = None):
        self.script, self.high, self.end = list(script), high, high if end is None else end

    def list_topics(self, topic, timeout):
        class Described:
            partitions = {0: None}
            error = None

        class Metadata:
            topics = {topic: Described()}

        return Metadata()

    def get_watermark_offsets(self, tp: TopicPartition, timeout=None, cached=False):
        return 0, self.high if cached else self.end

    def offsets_for_times(self, partitions, timeout):
        return [TopicPartition(tp.topic, tp.partition, -1) for tp in partitions]  # nothing that recent

    def assign(self, assignment):
        self.assigned = assignment

    def unassign(self):
        pass

    def consume(self, num_messages, timeout):
        return self.script.pop(0) if self.script else []


@pytest.fixture
def clock(monkeypatch):
    now = [0.0]

    def monotonic():
        now[0] += 0.1  # every look at the clock is a tenth of a second later
        return now[0]

    monkeypatch.setattr(reader.time, "monotonic", monotonic)
    return now


def test_an_end_at_the_high_watermark_is_the_end(clock):
    consumer = _ScriptedConsumer([[_Event(0, 0, False), _Event(0, 1, False), _Event(0, 3, True)]], high=3)
    assert [m.offset() for m in reader.read_to_end(consumer, ["t"])] == [0, 1]


def test_an_end_below_the_high_watermark_waits_for_the_markers_then_reads_on(clock):
    # Just after a commit: the end is still at 0, then the markers land and the records come.
    consumer = _ScriptedConsumer([[_Event(0, 0, True)], [], [], [_Event(0, 0, False), _Event(0, 1, False)],
                                  [_Event(0, 3, True)]], high=3)
    assert [m.offset() for m in reader.read_to_end(consumer, ["t"])] == [0, 1]


def test_a_transaction_still_open_is_left_unread_after_the_wait(clock, caplog):
    consumer = _ScriptedConsumer([[_Event(0, 0, False), _Event(0, 1, True)]], high=5)
    with caplog.at_level("INFO", logger=reader.__name__):
        assert [m.offset() for m in reader.read_to_end(consumer, ["t"], timeout=60)] == [0]
    # It waited its OPEN_TRANSACTION_WAIT_S (a tenth of a second per look at the clock), not the timeout.
    assert reader.OPEN_TRANSACTION_WAIT_S <= clock[0] < reader.OPEN_TRANSACTION_WAIT_S + 1
    assert "t[0]: the records before offset 5 are in a transaction still open" in caplog.text


def test_a_partition_without_a_record_since_the_time_is_read_from_its_end(clock):
    # The end a read_committed consumer is told (3 here): what a transaction committing now adds
    # after it is still read.
    consumer = _ScriptedConsumer([[_Event(0, 3, False), _Event(0, 5, True)]], high=5, end=3)
    assert [m.offset() for m in reader.read_to_end(consumer, ["t"], since_ms=1)] == [3]
    assert [(tp.partition, tp.offset) for tp in consumer.assigned] == [(0, 3)]


class _LeaderMovingConsumer(_ScriptedConsumer):
    """The first ``refusals`` watermark queries are told the partition has no leader yet (a topic just created)."""

    def __init__(self, script, high: int, refusals: int, code=KafkaError.NOT_LEADER_FOR_PARTITION):
        super().__init__(script, high)
        self.refusals, self.code = refusals, code

    def get_watermark_offsets(self, tp, timeout=None, cached=False):
        from confluent_kafka import KafkaException

        if not cached and self.refusals:
            self.refusals -= 1
            raise KafkaException(KafkaError(self.code))
        return super().get_watermark_offsets(tp, timeout, cached)


def test_a_partition_whose_leader_is_still_elected_is_asked_again(clock, monkeypatch):
    monkeypatch.setattr(reader.time, "sleep", lambda seconds: None)
    consumer = _LeaderMovingConsumer([[_Event(0, 0, False), _Event(0, 1, True)]], high=1, refusals=3)
    assert [m.offset() for m in reader.read_to_end(consumer, ["t"])] == [0]


def test_a_leader_that_never_comes_is_a_retriable_failure_in_one_sentence(clock, monkeypatch):
    from include.kafka.errors import KafkaFatalError, KafkaUnavailable

    monkeypatch.setattr(reader.time, "sleep", lambda seconds: None)
    consumer = _LeaderMovingConsumer([], high=1, refusals=10_000)
    with pytest.raises(KafkaUnavailable, match=r"the broker did not give the offsets of t\[0\]"):
        list(reader.read_to_end(consumer, ["t"]))
    other = _LeaderMovingConsumer([], high=1, refusals=1, code=KafkaError.TOPIC_AUTHORIZATION_FAILED)
    with pytest.raises(KafkaFatalError, match=r"the broker did not give the offsets of t\[0\]"):
        list(reader.read_to_end(other, ["t"]))
    assert other.refusals == 0  # asked once: an error that is not a leader moving is not asked again


class _TwoPartitions(_ScriptedConsumer):
    def list_topics(self, topic, timeout):
        class Described:
            partitions = {0: None, 1: None}
            error = None

        class Metadata:
            topics = {topic: Described()}

        return Metadata()

    def get_watermark_offsets(self, tp: TopicPartition, timeout=None, cached=False):
        return 0, self.high[tp.partition]


def test_batches_come_in_order_and_a_record_after_an_end_reopens_its_partition(clock):
    # Partition 0 ends at 1; a record of it comes after that (in a batch of records only), so the
    # read goes on past partition 1's end until partition 0 ends again.
    consumer = _TwoPartitions([[_Event(0, 0, False), _Event(1, 0, False), _Event(0, 1, True)],
                               [_Event(1, 1, False), _Event(0, 1, False)],
                               [_Event(1, 2, True)],
                               [_Event(0, 2, False)],
                               [_Event(0, 3, True)]], high={0: 1, 1: 2})
    batches = list(reader.read_batches_to_end(consumer, ["t"]))
    assert [[(m.partition(), m.offset()) for m in batch] for batch in batches] == [
        [(0, 0), (1, 0)], [(1, 1), (0, 1)], [(0, 2)]]
    assert consumer.script == []

"""The processor loop's rules, with in-memory stand-ins for the Kafka clients (no broker).

The stand-ins keep Kafka's transactional contract in miniature: produced records and offsets
become visible only on commit, an abort drops both, and a seek moves the read position. The real
broker behaviour (fencing, rebalances, signals) is covered by tests/integration/test_stream_*.py.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

import include.streaming.processor as processor_module
from include.dead_letters import read_dead_letter_headers
from include.kafka.errors import ProducerFenced, TopicsMissing
from include.streaming.processor import ProcessorFailed, StreamProcessor
from include.streaming.records import OutputRecord
from include.streaming.words import upper_case
from tests.fake_messages import FakeMessage


@dataclass
class Broker:
    """The shared state of the fake clients: logs, committed output, committed offsets."""

    logs: dict[str, list[bytes | None]]
    partitions: dict[str, int] = field(default_factory=dict)
    committed_records: list[tuple[str, OutputRecord]] = field(default_factory=list)
    committed_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    commit_errors: list[KafkaError] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)


class FakeProducer:
    def __init__(self, broker: Broker, config: dict):
        self.broker, self.config = broker, config
        self.pending: list[tuple[str, OutputRecord]] = []
        self.pending_offsets: list[TopicPartition] = []

    def list_topics(self, timeout=None):
        topics = {name: SimpleNamespace(error=None, partitions={p: None for p in range(count)})
                  for name, count in self.broker.partitions.items()}
        return SimpleNamespace(topics=topics, brokers={1: None})  # one broker: no replicas to lose

    def init_transactions(self, timeout=None):
        self.broker.calls.append("init")

    def begin_transaction(self):
        self.broker.calls.append("begin")

    def produce(self, topic, key=None, value=None, headers=None, partition=None):
        self.pending.append((topic, OutputRecord(key, value, tuple(headers or ()), partition)))

    def send_offsets_to_transaction(self, positions, metadata, timeout=None):
        self.pending_offsets = positions

    def commit_transaction(self, timeout=None):
        if self.broker.commit_errors:
            raise KafkaException(self.broker.commit_errors.pop(0))
        self.broker.calls.append("commit")
        self.broker.committed_records += self.pending
        for tp in self.pending_offsets:
            self.broker.committed_offsets[(tp.topic, tp.partition)] = tp.offset
        self.pending, self.pending_offsets = [], []

    def abort_transaction(self, timeout=None):
        self.broker.calls.append("abort")
        self.pending, self.pending_offsets = [], []

    def poll(self, timeout=0):
        return 0

    def flush(self, timeout=None):
        return 0


class FakeConsumer:
    def __init__(self, broker: Broker, config: dict):
        self.broker, self.config = broker, config
        self.position_of: dict[tuple[str, int], int] = {}
        self.callbacks = None
        self.assigned: list[TopicPartition] = []

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        self.topics = topics
        self.callbacks = (on_assign, on_revoke, on_lost)

    def _assign_once(self):
        if not self.assigned:
            self.assigned = [TopicPartition(t, 0) for t in self.topics]
            for tp in self.assigned:
                self.position_of[(tp.topic, 0)] = self.broker.committed_offsets.get((tp.topic, 0), 0)
            self.callbacks[0](self, self.assigned)

    def _next(self):
        for tp in self.assigned:
            key = (tp.topic, tp.partition)
            offset = self.position_of[key]
            if offset < len(self.broker.logs[tp.topic]):
                self.position_of[key] = offset + 1
                return FakeMessage(tp.topic, tp.partition, offset, self.broker.logs[tp.topic][offset])
        return None

    def poll(self, timeout=None):
        self._assign_once()
        message = self._next()
        if message is None:
            self.broker.calls.append("empty poll")
        return message

    def consume(self, num_messages=1, timeout=None):
        messages = []
        while len(messages) < num_messages and (message := self._next()) is not None:
            messages.append(message)
        return messages

    def position(self, partitions):
        return [TopicPartition(tp.topic, tp.partition,
                               self.position_of.get((tp.topic, tp.partition), -1001))
                for tp in partitions]

    def committed(self, partitions, timeout=None):
        return [TopicPartition(tp.topic, tp.partition,
                               self.broker.committed_offsets.get((tp.topic, tp.partition), -1001))
                for tp in partitions]

    def seek(self, tp):
        self.position_of[(tp.topic, tp.partition)] = max(tp.offset, 0)

    def consumer_group_metadata(self):
        return object()

    def get_watermark_offsets(self, tp, cached=False, timeout=None):
        return 0, len(self.broker.logs[tp.topic])

    def close(self):
        self.callbacks[1](self, self.assigned)


@pytest.fixture
def broker(monkeypatch):
    state = Broker(logs={"in": [b"hello", b"\xff\xfe", b"world", None, b"kafka"]},
                   partitions={"in": 1, "out": 1, "dlq": 1})
    monkeypatch.setattr(processor_module, "Producer", lambda config: FakeProducer(state, config))
    monkeypatch.setattr(processor_module, "Consumer", lambda config: FakeConsumer(state, config))
    return state


def _processor(**overrides) -> StreamProcessor:
    settings = dict(name="words", transform=upper_case, client_config={"bootstrap.servers": "x:9092"},
                    input_topics=["in"], output_topic="out", group_id="g", dlq_topic="dlq",
                    poll_timeout=0.01, commit_interval=0.0)
    return StreamProcessor(**{**settings, **overrides})


def test_good_records_are_written_and_a_failing_one_goes_to_the_dlq_unchanged(broker, caplog):
    notice = "[DLQ] 처리 실패 이벤트를 {dlq_topic} 토픽으로 전송합니다."
    with caplog.at_level(logging.INFO, logger="include.streaming"):
        counts = _processor(dead_letter_notice=notice).run(idle_timeout=0.05)
    assert (counts.records_in, counts.records_out, counts.dead_lettered) == (5, 4, 1)
    assert counts.stop_reason == "idle_timeout" and counts.transactions >= 1
    out = [r.value for t, r in broker.committed_records if t == "out"]
    assert out == [b"HELLO", b"WORLD", None, b"KAFKA"]
    [(_, dead)] = [(t, r) for t, r in broker.committed_records if t == "dlq"]
    assert dead.value == b"\xff\xfe"
    why = read_dead_letter_headers(dead.headers)
    assert (why["error.class"], why["source.topic"], why["source.offset"]) == \
        ("UnicodeDecodeError", "in", "1")
    assert broker.committed_offsets == {("in", 0): 5}
    # The DLQ's name is filled in: the processor's dlq_topic ("dlq" here).
    assert [r.getMessage() for r in caplog.records].count(notice.replace("{dlq_topic}", "dlq")) == 1


def test_exactly_once_settings_win_over_overrides(broker):
    processor = _processor(producer_overrides={"acks": "1", "transactional.id": "mine"},
                           consumer_overrides={"isolation.level": "read_uncommitted",
                                               "enable.auto.commit": True})
    processor._start()
    assert processor._producer.client.config["transactional.id"] == "g-0"
    assert processor._producer.client.config["acks"] == "all"
    assert processor._consumer.config["isolation.level"] == "read_committed"
    assert processor._consumer.config["enable.auto.commit"] is False
    assert processor._consumer.config["group.instance.id"] == "g-0"
    assert broker.calls == ["init"]


def test_an_abortable_commit_error_aborts_rewinds_and_redoes_the_work_once(broker):
    broker.commit_errors.append(KafkaError(KafkaError._STATE, "coordinator moved",
                                           txn_requires_abort=True))
    counts = _processor(transform=upper_case, dlq_topic=None, commit_every=10_000,
                        commit_interval=10.0).run(idle_timeout=0.05)
    # The first checkpoint (all five records, committed once they are drained) is aborted: nothing
    # of it is visible, its records are read again from the committed offsets and committed once.
    assert counts.aborted_transactions == 1 and counts.transactions == 1
    assert counts.records_in == 5 and counts.skipped == 1 and "abort" in broker.calls
    assert [r.value for _, r in broker.committed_records] == [b"HELLO", b"WORLD", None, b"KAFKA"]


def test_a_checkpoint_commits_once_its_input_is_drained_without_waiting_for_the_interval(broker):
    counts = _processor(dlq_topic=None, batch_size=2, commit_every=10_000, commit_interval=10.0).run(idle_timeout=0.05)
    assert counts.transactions == 1 and counts.records_in == 5
    # Two full batches wait for more; the third is all that was fetched, so it commits before polling on.
    assert broker.calls.index("commit") < broker.calls.index("empty poll")


def test_abort_mid_run_rewinds_to_the_committed_offsets(broker):
    broker.commit_errors.append(KafkaError(KafkaError._STATE, "epoch bumped", txn_requires_abort=True))
    counts = _processor(dlq_topic=None, batch_size=2).run(idle_timeout=0.05)
    assert counts.aborted_transactions == 1
    assert counts.records_in == 5
    assert [r.value for _, r in broker.committed_records] == [b"HELLO", b"WORLD", None, b"KAFKA"]


def test_being_fenced_stops_with_a_clear_message_and_commits_nothing(broker):
    broker.commit_errors.append(KafkaError(KafkaError._FENCED, "fenced by a newer epoch", fatal=True))
    with pytest.raises(ProducerFenced, match="another instance with transactional.id g-0"):
        _processor().run(idle_timeout=0.05)
    assert broker.committed_records == []


def test_stop_and_max_runtime_end_the_run(broker):
    processor = _processor()
    processor.stop("task killed")
    assert processor.run().stop_reason == "task killed"
    broker.logs["in"] = []
    assert _processor().run(max_runtime=0.05).stop_reason == "max_runtime"


def test_missing_topics_and_too_few_output_partitions_fail_with_one_sentence(broker):
    del broker.partitions["dlq"]
    with pytest.raises(TopicsMissing, match="topic\\(s\\) dlq do not exist"):
        _processor().run()
    broker.partitions["dlq"] = 1

    def to_partition_three(record):
        return [OutputRecord(record.key, record.value, partition=3)]

    with pytest.raises(ProcessorFailed, match="out has only 1 partition"):
        _processor(transform=to_partition_three).run(idle_timeout=0.05)
    assert broker.committed_records == []


def test_progress_lines_report_counts_lag_and_rate(broker, caplog):
    with caplog.at_level(logging.INFO, logger="include.streaming"):
        _processor(progress_interval=0.0, batch_size=2).run(idle_timeout=0.05)
    lines = [r.getMessage() for r in caplog.records if " lag " in r.getMessage()]
    assert lines and all("records/s" in line for line in lines)
    assert lines[-1].startswith("words: 5 in, 4 out, 1 dead-lettered, lag 0,")


def test_a_dead_letter_is_one_line_in_the_task_log(broker, caplog):
    notice = "[DLQ] 처리 실패 이벤트를 analytics-dlq 토픽으로 전송합니다."
    with caplog.at_level(logging.INFO, logger="include.streaming"):
        _processor(dead_letter_notice=notice).run(idle_timeout=0.05)
    assert [r.getMessage() for r in caplog.records if "dead-lettered in[" in r.getMessage() or r.getMessage() == notice] \
        == [notice]

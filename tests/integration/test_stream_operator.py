"""StreamProcessorOperator without a scheduler: SIGTERM, on_kill and idle stop add up to once each."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from include.kafka.reader import READER_SETTINGS, read_to_end
from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS
from include.streaming.topics import ensure_topics
from include.streaming.words import upper_case

pytestmark = pytest.mark.integration


def slow_uppercase(context):
    """The seed 003 transform at about 1000 records/s, so a stop lands mid-stream."""

    def transform(record):
        time.sleep(0.001)
        return upper_case(record)

    return transform


def _operator(task_id, source, target, group, **limits):
    from kafka_pipeline.operators.stream import StreamProcessorOperator

    return StreamProcessorOperator(task_id=task_id, transform_factory=slow_uppercase,
                                   input_topics=[source], output_topic=target, group_id=group,
                                   **limits)


def _when_busy(operator, action) -> threading.Thread:
    """Run action once the operator's processor has committed some work."""

    def watch():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            processor = operator._processor
            if processor is not None and processor.counts.records_in >= 200:
                action()
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_sigterm_and_on_kill_stop_cleanly_and_runs_add_up_to_each_record_once(
        kafka_config, unique_name):
    name = unique_name("op")
    source, target, group = f"{name}_in", f"{name}_out", f"{name}_g"
    ensure_topics(AdminClient(kafka_config), [source, target], partitions=3)
    words = [f"word-{i:05d}" for i in range(2500)]
    producer = Producer({**kafka_config, **SIMULATOR_PRODUCER_SETTINGS})
    for i, word in enumerate(words):
        producer.produce(source, value=word.encode(), partition=i % 3)
    assert producer.flush(30) == 0

    # SIGTERM reaches the operator's handler (this test runs in the main thread, like a task).
    first = _operator("first", source, target, group, max_runtime=60)
    watcher = _when_busy(first, lambda: os.kill(os.getpid(), signal.SIGTERM))
    stopped = first.execute(context={})
    watcher.join()
    assert stopped["stop_reason"] == "SIGTERM" and 0 < stopped["records_in"] < len(words)
    assert signal.getsignal(signal.SIGTERM) is not None  # the previous handler is back

    second = _operator("second", source, target, group, max_runtime=60)
    watcher = _when_busy(second, second.on_kill)
    killed = second.execute(context={})
    watcher.join()
    assert killed["stop_reason"] == "task killed" and killed["records_in"] > 0

    third = _operator("third", source, target, group, max_runtime="60", idle_timeout="2")
    finished = third.execute(context={})
    assert finished["stop_reason"] == "idle_timeout"
    assert stopped["records_in"] + killed["records_in"] + finished["records_in"] == len(words)

    consumer = Consumer({**kafka_config, **READER_SETTINGS, "group.id": unique_name("r")})
    try:
        out = [m.value().decode() for m in read_to_end(consumer, [target], from_committed=True, timeout=30)]
    finally:
        consumer.close()
    assert sorted(out) == sorted(w.upper() for w in words)

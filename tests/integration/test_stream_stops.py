"""Stopping a processor: SIGTERM, SIGKILL and a second instance joining, each with real processes.

The processor runs as ``python -m include.streaming`` (slowed with --max-rate so a signal lands
mid-stream); what a read_committed reader finds in the output afterwards must be every input
record exactly once.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from include.kafka.reader import READER_SETTINGS, read_to_end
from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS
from include.streaming.topics import ensure_topics

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


class Pipeline:
    """An input topic filled with distinct words, an output topic and a processor group."""

    def __init__(self, kafka_config, unique_name, records: int, partitions: int):
        name = unique_name("stop")
        self.config = kafka_config
        self.source, self.target, self.group = f"{name}_in", f"{name}_out", f"{name}_g"
        self.partitions = partitions
        self.words = [f"word-{i:05d}" for i in range(records)]
        ensure_topics(AdminClient(kafka_config), [self.source, self.target], partitions=partitions)
        # Round robin: unkeyed records are otherwise spread in sticky bursts, so a partition
        # could hold almost nothing and the tests would depend on luck.
        producer = Producer({**kafka_config, **SIMULATOR_PRODUCER_SETTINGS})
        for i, word in enumerate(self.words):
            producer.produce(self.source, value=word.encode(), partition=i % partitions)
        assert producer.flush(30) == 0
        self._unique_name = unique_name

    def start(self, log: Path, *options: str, instance: str = "0") -> subprocess.Popen:
        """The processor as a process of its own; its log goes to ``log``."""
        return subprocess.Popen(
            [sys.executable, "-m", "include.streaming", "uppercase", "--input", self.source,
             "--output", self.target, "--group", self.group, "--instance", instance,
             "--bootstrap-servers", self.config["bootstrap.servers"], "--max-runtime", "60",
             *options],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)

    def committed(self) -> int:
        """Input records the group has committed so far (blocks while a commit is in flight)."""
        probe = Consumer({**self.config, "group.id": self.group})
        try:
            partitions = [TopicPartition(self.source, p) for p in range(self.partitions)]
            return sum(max(tp.offset, 0) for tp in probe.committed(partitions, timeout=10))
        finally:
            probe.close()

    def wait_for_progress(self, process: subprocess.Popen, at_least: int, log: Path) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert process.poll() is None, f"processor exited early:\n{log.read_text()[-3000:]}"
            done = self.committed()
            if done >= at_least:
                return done
            time.sleep(0.1)
        raise AssertionError(f"no progress after 30 s:\n{log.read_text()[-3000:]}")

    def output(self, isolation: str = "read_committed") -> list[str]:
        consumer = Consumer({**self.config, **READER_SETTINGS, "isolation.level": isolation,
                             "group.id": self._unique_name("reader")})
        try:
            return [m.value().decode() for m in read_to_end(consumer, [self.target], from_committed=True, timeout=30)]
        finally:
            consumer.close()

    def assert_each_record_exactly_once(self) -> None:
        out = self.output()
        assert len(out) == len(self.words), f"{len(out)} records for {len(self.words)} inputs"
        assert sorted(out) == sorted(w.upper() for w in self.words)


def _finish(process: subprocess.Popen, log: Path, timeout: float = 60) -> dict:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, f"exit code {process.returncode}:\n{log.read_text()[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


def test_sigterm_mid_stream_then_restart_loses_nothing_and_repeats_nothing(
        kafka_config, unique_name, tmp_path):
    pipeline = Pipeline(kafka_config, unique_name, records=3000, partitions=3)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    # 200 records/s leaves 13 s between the 300th commit and the last record, so the signal lands
    # mid-stream even when probing the group's offsets is slow on a busy machine (at 1000/s a CI
    # run's probe once returned after the processor had taken all 3000).
    first = pipeline.start(first_log, "--max-rate", "200")
    pipeline.wait_for_progress(first, 300, first_log)
    first.send_signal(signal.SIGTERM)
    stopped = _finish(first, first_log, timeout=10)
    assert stopped["stop_reason"] == "SIGTERM"
    assert 300 <= stopped["records_in"] < 3000 and stopped["aborted_transactions"] == 0

    resumed = _finish(pipeline.start(second_log, "--idle-timeout", "2"), second_log)
    # A clean stop commits what it did: the restart starts exactly after it.
    assert stopped["records_in"] + resumed["records_in"] == 3000
    assert stopped["records_out"] + resumed["records_out"] == 3000
    pipeline.assert_each_record_exactly_once()


def test_sigkill_mid_transaction_then_restart_loses_nothing_and_repeats_nothing(
        kafka_config, unique_name, tmp_path):
    pipeline = Pipeline(kafka_config, unique_name, records=3000, partitions=3)
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = pipeline.start(first_log, "--max-rate", "1000")
    committed_before_kill = pipeline.wait_for_progress(first, 300, first_log)
    first.kill()
    first.wait(10)

    # The restart aborts the dead instance's open transaction and resumes from its offsets.
    resumed = _finish(pipeline.start(second_log, "--idle-timeout", "2"), second_log)
    assert resumed["records_in"] <= 3000 - committed_before_kill
    pipeline.assert_each_record_exactly_once()
    # The killed transaction's records are in the log, only marked aborted: a read_uncommitted
    # reader sees them, a read_committed one (above) never does.
    assert len(pipeline.output("read_uncommitted")) >= 3000


def test_two_instances_split_the_partitions_and_process_each_record_once(
        kafka_config, unique_name, tmp_path):
    pipeline = Pipeline(kafka_config, unique_name, records=4000, partitions=4)
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    # Slow enough that A cannot finish B's future partitions before B has joined.
    a = pipeline.start(log_a, "--max-rate", "300", "--idle-timeout", "3", instance="a")
    pipeline.wait_for_progress(a, 100, log_a)
    b = pipeline.start(log_b, "--idle-timeout", "3", instance="b")
    counts_a, counts_b = _finish(a, log_a), _finish(b, log_b)

    assert counts_b["records_in"] > 0 and counts_a["rebalances"] >= 2
    assert counts_a["records_in"] + counts_b["records_in"] == 4000
    assert counts_a["aborted_transactions"] == counts_b["aborted_transactions"] == 0

    def last_assignment(log: Path) -> set[int]:
        lines = re.findall(r"assigned \S+ \[([\d, ]+)\]", log.read_text())
        return {int(p) for p in lines[-1].split(",")}

    held_a, held_b = last_assignment(log_a), last_assignment(log_b)
    assert held_a and held_b and not held_a & held_b and held_a | held_b == {0, 1, 2, 3}
    pipeline.assert_each_record_exactly_once()

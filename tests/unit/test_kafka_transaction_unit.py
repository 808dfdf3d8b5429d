"""The one transaction unit: the cycle, the abort policies, the counts and the crash points, on a scripted producer."""

from __future__ import annotations

import pytest

from include.kafka.errors import KafkaFatalError, KafkaUnavailable, TooFewInSyncReplicas, TransactionAborted
from include.kafka.transactions import OnAbort, TransactionUnit


class ScriptedProducer:
    """The calls a unit makes on a TransactionalProducer; ``failures`` raise at the named calls, in order."""

    label = "test unit"

    def __init__(self, shortage: TooFewInSyncReplicas | None = None, **failures):
        self.shortage = shortage
        self.failures = {name: list(errors) for name, errors in failures.items()}
        self.calls: list[str] = []
        self.offsets = []

    def _call(self, name):
        self.calls.append(name)
        if self.failures.get(name):
            raise self.failures[name].pop(0)

    def begin(self):
        self._call("begin")

    def send_offsets(self, positions, metadata):
        self.offsets.append([(p.topic, p.partition, p.offset) for p in positions])
        self._call("send_offsets")

    def commit(self):
        self._call("commit")

    def abort(self):
        self._call("abort")

    def abort_quietly(self):
        self.calls.append("abort_quietly")
        return True

    def replica_shortage(self):
        self.calls.append("replica_shortage")
        return self.shortage


class Group:
    def consumer_group_metadata(self):
        return "group"


def test_counts_and_offsets_count_only_once_committed_and_the_hooks_mark_each_phase():
    phases = []
    producer = ScriptedProducer()
    unit = TransactionUnit(producer, on_abort=OnAbort.REWIND, consumer=Group(),
                           phase_hook=lambda phase, number: phases.append((phase, number)))
    txn = unit.begin()
    assert unit.begin() is txn  # one open transaction until it commits
    txn.counts["records_in"] += 2
    txn.consumed("in", 0, 41)
    txn.consumed("in", 0, 42)
    assert unit.committed["records_in"] == 0
    assert unit.commit() and unit.open is None
    assert unit.committed["records_in"] == 2 and unit.transactions == 1
    assert producer.offsets == [[("in", 0, 43)]] and txn.first_offsets == {("in", 0): 41}
    assert phases == [("after_begin", 1), ("before_commit", 1), ("after_commit", 1)]
    assert producer.calls == ["begin", "send_offsets", "commit"]
    assert unit.commit()  # nothing open: nothing to do


def test_rewind_aborts_drops_the_counts_and_hands_back():
    producer = ScriptedProducer(commit=[TransactionAborted("coordinator moved")])
    unit = TransactionUnit(producer, on_abort=OnAbort.REWIND)
    unit.begin().counts["records_in"] += 5
    assert unit.commit() is False
    assert (unit.committed["records_in"], unit.aborted, unit.transactions, unit.open) == (0, 1, 0, None)
    # Every broker answers (no shortage), so the abort follows the policy.
    assert producer.calls == ["begin", "commit", "replica_shortage", "abort"]


def test_raise_aborts_and_fails_with_one_sentence():
    producer = ScriptedProducer(commit=[KafkaUnavailable("commit timed out")])
    unit = TransactionUnit(producer, on_abort=OnAbort.RAISE, noun="batch")
    unit.begin()
    with pytest.raises(TransactionAborted, match="test unit: batch 1 was aborted \\(commit timed out\\); "
                                                 "nothing of it is visible, a retry redoes it"):
        unit.commit()
    assert unit.aborted == 1 and producer.calls[-1] == "abort"


def test_redo_produces_the_same_work_again_until_it_commits():
    producer = ScriptedProducer(commit=[TransactionAborted("first")])
    unit = TransactionUnit(producer, on_abort=OnAbort.REDO, max_attempts=3, noun="chunk")
    attempts = []

    def work(txn):
        attempts.append(txn.number)
        if len(attempts) == 1:
            raise KafkaUnavailable("delivery timed out")
        txn.counts["rows"] += 10

    txn = unit.run(work, number=7)
    assert attempts == [7, 7, 7] and txn.number == 7
    assert unit.committed["rows"] == 10 and unit.aborted == 2 and unit.transactions == 1


def test_redo_gives_up_after_max_attempts_saying_so():
    producer = ScriptedProducer(commit=[TransactionAborted("broker down")] * 2)
    unit = TransactionUnit(producer, on_abort=OnAbort.REDO, max_attempts=2, noun="chunk")
    with pytest.raises(TransactionAborted, match="chunk 3 was aborted 2 time\\(s\\), last: broker down; "
                                                 "nothing of it is visible, a retry resumes there"):
        unit.run(lambda txn: None, number=3)
    assert unit.aborted == 2 and unit.committed == {}


def test_a_fatal_error_is_never_redone_it_abandons_the_transaction_and_is_raised():
    producer = ScriptedProducer(commit=[KafkaFatalError("fatal")])
    unit = TransactionUnit(producer, on_abort=OnAbort.REDO, max_attempts=3)
    with pytest.raises(KafkaFatalError):
        unit.run(lambda txn: None)
    assert producer.calls == ["begin", "commit", "abort_quietly"] and unit.open is None


def test_before_commit_runs_inside_the_transaction_and_its_abort_follows_the_policy():
    archived = []
    producer = ScriptedProducer()
    unit = TransactionUnit(producer, on_abort=OnAbort.RAISE, before_commit=lambda txn: archived.append(txn.number))
    unit.begin()
    unit.commit()
    assert archived == [1] and producer.calls == ["begin", "commit"]


@pytest.mark.parametrize("on_abort", list(OnAbort))
def test_brokers_down_under_the_replicas_stop_every_policy_without_an_abort_that_would_wait(on_abort):
    shortage = TooFewInSyncReplicas("test unit: too few in-sync replicas: raw partition(s) 0 have 1 ...")
    producer = ScriptedProducer(shortage, commit=[KafkaUnavailable("commit timed out 3 times")])
    unit = TransactionUnit(producer, on_abort=on_abort, max_attempts=3)
    with pytest.raises(TooFewInSyncReplicas, match="too few in-sync replicas"):
        if on_abort is OnAbort.REDO:
            unit.run(lambda txn: None)
        else:
            unit.begin()
            unit.commit()
    assert producer.calls == ["begin", "commit", "replica_shortage"]
    assert unit.open is None and unit.aborted == 0 and unit.transactions == 0


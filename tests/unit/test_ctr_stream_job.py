"""CtrStreamJob's decisions without a cluster: what it resumes from, what it takes over, how it stops and fails.

The REST client here is a stand-in holding job states and checkpoints; the real one is exercised on
a real Flink cluster by tests/integration/test_ctr_stream.py.
"""

from __future__ import annotations

import json
import threading

import pytest

from include.ctr.flink_rest import FlinkJob, FlinkJobError, JobMetrics, RestorePoint, SinkProgress, SourceProgress
from include.ctr.metrics import progress_registry
from include.ctr.stream_job import (CtrJobFailed, CtrJobProgress, CtrStreamJob, RestorePointFile, consumer_groups,
                                    unread_in)
from include.health.lag import LagSample, PartitionKey


class FakeFlink:
    """Job states, checkpoints and savepoints as Flink's REST API would report them."""

    def __init__(self):
        self.jobs: dict[str, FlinkJob] = {}
        self.points: dict[str, RestorePoint] = {}
        self.stops: list[str] = []
        self.cause = "java.lang.RuntimeException: the sink's database refused the connection"
        self.restarts = 0
        self.completed_checkpoints = 1
        self.on_poll = lambda job_id: None

    def add(self, job_id: str, state: str, name: str = "ctr") -> None:
        self.jobs[job_id] = FlinkJob(job_id, name, state, len(self.jobs))

    def running(self, name):
        return next((j for j in self.jobs.values() if j.name == name and j.state == "RUNNING"), None)

    def job(self, job_id):
        self.on_poll(job_id)
        return self.jobs.get(job_id)

    def latest_restore_point(self, job_id):
        return self.points.get(job_id)

    def failure_cause(self, job_id):
        return self.cause

    def metrics(self, job_id):
        job = self.jobs[job_id]
        return JobMetrics(job_id, job.state, (SourceProgress("events_by_hour[1]", 10, 1_000),
                                              SourceProgress("events_by_arrival[2]", 10, 5_000, 3)),
                          completed_checkpoints=self.completed_checkpoints,
                          last_checkpoint=f"file:/ckpt/{job_id}/chk-1",
                          sinks=(SinkProgress("ctr_hourly_sink", 7),), last_checkpoint_ms=4_000,
                          restarts=self.restarts)

    def trigger_stop(self, job_id, target_directory=None, *, drain=False):
        if self.jobs[job_id].state != "RUNNING":
            raise FlinkJobError(f"job {job_id} is not running")
        self.stops.append(job_id)
        return "request-1"

    def savepoint_location(self, job_id, request_id, timeout=300.0):
        self.add(job_id, "FINISHED")
        return f"file:/savepoints/savepoint-{job_id}"


def _job(flink, tmp_path, submitted=None, **options):
    def submit(savepoint):
        if submitted is not None:
            submitted.append(savepoint)
        job_id = f"job{len(flink.jobs) + 1}"
        flink.add(job_id, "RUNNING")
        return job_id

    return CtrStreamJob("ctr", flink, submit, RestorePointFile(tmp_path / "restore" / "ctr.json"),
                        **{"poll_interval": 0.01, "progress_interval": 0.0, **options})


def test_without_a_restore_point_the_job_starts_from_the_committed_offsets_and_is_remembered(tmp_path):
    flink, submitted = FakeFlink(), []
    job = _job(flink, tmp_path, submitted)
    assert job.start() == "job1"
    assert submitted == [None]
    assert json.loads((tmp_path / "restore" / "ctr.json").read_text())["job_id"] == "job1"


def test_a_live_job_of_the_same_name_is_taken_over_not_submitted_again(tmp_path):
    flink, submitted = FakeFlink(), []
    flink.add("running1", "RUNNING")
    job = _job(flink, tmp_path, submitted)
    assert job.start() == "running1" and submitted == [] and job.run_record.adopted


def test_the_newest_of_the_remembered_point_and_flinks_own_is_resumed(tmp_path):
    (tmp_path / "sp-old").mkdir()
    (tmp_path / "sp-new").mkdir()
    flink, submitted = FakeFlink(), []
    store = RestorePointFile(tmp_path / "restore" / "ctr.json")
    store.remember(RestorePoint((tmp_path / "sp-old").as_uri(), "checkpoint", "old", 1_000))
    # A watcher killed during the stop: the savepoint completed, Flink knows it, the file does not.
    flink.add("old", "FINISHED")
    flink.points["old"] = RestorePoint((tmp_path / "sp-new").as_uri(), "savepoint", "old", 2_000)
    job = _job(flink, tmp_path, submitted)
    job.start()
    assert submitted == [(tmp_path / "sp-new").as_uri()]
    assert job.run_record.resumed_from == (tmp_path / "sp-new").as_uri()


def test_a_remembered_restore_point_that_is_gone_fails_in_one_sentence(tmp_path):
    store = RestorePointFile(tmp_path / "restore" / "ctr.json")
    store.remember(RestorePoint((tmp_path / "deleted").as_uri(), "savepoint", "old", 1_000))
    with pytest.raises(CtrJobFailed, match="no longer exists; remove that file to start from the committed offsets"):
        _job(FakeFlink(), tmp_path).start()


def test_a_restore_point_file_that_is_not_json_fails_naming_it(tmp_path):
    path = tmp_path / "restore" / "ctr.json"
    path.parent.mkdir()
    path.write_text("{half")
    with pytest.raises(CtrJobFailed, match=f"restore-point file {path} cannot be read"):
        _job(FakeFlink(), tmp_path).start()


def test_a_stop_takes_a_savepoint_and_remembers_it(tmp_path):
    flink = FakeFlink()
    job = _job(flink, tmp_path)
    flink.on_poll = lambda job_id: job.stop("SIGTERM")  # asked while it watches
    run = job.run(max_runtime=30)
    assert flink.stops == ["job1"]
    assert (run.stop_reason, run.savepoint) == ("SIGTERM", "file:/savepoints/savepoint-job1")
    point = RestorePointFile(tmp_path / "restore" / "ctr.json").restore_point()
    assert (point.path, point.kind, point.job_id) == ("file:/savepoints/savepoint-job1", "savepoint", "job1")


def test_max_runtime_hands_the_job_on_unless_told_to_stop_it(tmp_path):
    flink = FakeFlink()
    run = _job(flink, tmp_path).run(max_runtime=0.05)
    assert run.stop_reason == "max_runtime" and run.savepoint is None and flink.stops == []
    assert flink.jobs["job1"].state == "RUNNING"
    # The next watcher takes the same job over and stops it at its end.
    again = _job(flink, tmp_path).run(max_runtime=0.05, stop_at_end=True)
    assert again.adopted and again.job_id == "job1" and flink.stops == ["job1"] and again.savepoint


def test_caught_up_the_job_stops_with_a_savepoint_after_a_last_reading(tmp_path, caplog):
    flink = FakeFlink()
    readings = iter([None, 1_200, 0])
    job = _job(flink, tmp_path, unread_records=lambda: next(readings), progress_interval=3600.0)
    with caplog.at_level("INFO", logger="include.ctr.stream_job"):
        run = job.run(max_runtime=30, stop_when_caught_up=True)
    assert flink.stops == ["job1"]
    assert (run.stop_reason, run.savepoint) == ("caught up", "file:/savepoints/savepoint-job1")
    # The first progress line at the start, and one more just before the stop: the final counts.
    assert run.progress_lines == 2 and run.records_in == {"events_by_hour": 10, "events_by_arrival": 10}
    assert "have not committed an offset on every partition yet" in caplog.text
    assert "1,200 records of the topic not yet committed by its consumer groups" in caplog.text


def test_offsets_committed_before_the_job_has_checkpointed_are_not_yet_caught_up(tmp_path):
    # A job restored from a savepoint finds its predecessor's offsets at the end of the topic at once.
    flink = FakeFlink()
    flink.completed_checkpoints = 0
    polls = []

    def poll(job_id):
        polls.append(job_id)
        if len(polls) == 4:
            flink.completed_checkpoints = 1
    flink.on_poll = poll
    run = _job(flink, tmp_path, unread_records=lambda: 0).run(max_runtime=30, stop_when_caught_up=True)
    assert run.stop_reason == "caught up" and len(polls) >= 4


def test_an_unread_count_that_fails_is_counted_and_the_watch_goes_on(tmp_path):
    flink = FakeFlink()
    calls = []

    def unread():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the broker did not answer")
        return 0
    run = _job(flink, tmp_path, unread_records=unread).run(max_runtime=30, stop_when_caught_up=True)
    assert run.reports_failed == 1 and run.stop_reason == "caught up" and len(calls) == 2


def test_stop_when_caught_up_needs_a_way_to_count_unread_records(tmp_path):
    with pytest.raises(ValueError, match="stop_when_caught_up needs unread_records"):
        _job(FakeFlink(), tmp_path).run(max_runtime=1, stop_when_caught_up=True)


def test_unread_records_are_the_lag_of_both_groups_on_every_partition():
    groups = consumer_groups("ctr-flink")
    assert groups == ("ctr-flink.hourly", "ctr-flink.minute")

    def sample(committed, end):
        return LagSample(at=0.0, committed=committed, end=end, start=0, lag_seconds=0.0, state="EMPTY", members=0)
    samples = {PartitionKey(g, "raw", p): sample(100, 100 + lag) for g, lags in zip(groups, ([0, 5], [0, 0]))
               for p, lag in enumerate(lags)}
    samples[PartitionKey("ctr-flink.hourly", "other", 0)] = sample(0, 999)  # another topic: not counted
    assert unread_in(samples, "raw", groups, [0, 1]) == 5
    # A partition one group has committed nothing on: unknown, not caught up.
    assert unread_in(samples, "raw", groups, [0, 1, 2]) is None


def test_progress_remembers_the_latest_checkpoint(tmp_path):
    flink = FakeFlink()
    reports = []
    _job(flink, tmp_path, report=reports.append).run(max_runtime=0.05)
    point = RestorePointFile(tmp_path / "restore" / "ctr.json").restore_point()
    assert (point.path, point.kind, point.job_id) == ("file:/ckpt/job1/chk-1", "checkpoint", "job1")
    assert reports and reports[-1].rows_written == 7 and reports[-1].pending_records == 3


def test_a_failed_job_fails_the_run_with_flinks_cause_and_where_it_resumes(tmp_path):
    flink = FakeFlink()
    flink.points["job1"] = RestorePoint("file:/ckpt/job1/chk-9", "checkpoint", "job1", 9_000)
    job = _job(flink, tmp_path)
    flink.on_poll = lambda job_id: flink.add(job_id, "FAILED")
    with pytest.raises(CtrJobFailed) as failed:
        job.run(max_runtime=30)
    assert str(failed.value) == ("the CTR job job1 failed: java.lang.RuntimeException: the sink's database refused the "
                                 "connection; the next run resumes from checkpoint file:/ckpt/job1/chk-9")


def test_a_job_cancelled_elsewhere_ends_the_watch_and_keeps_its_checkpoint(tmp_path):
    flink = FakeFlink()
    flink.points["job1"] = RestorePoint("file:/ckpt/job1/chk-4", "checkpoint", "job1", 4_000)
    job = _job(flink, tmp_path)
    flink.on_poll = lambda job_id: flink.add(job_id, "CANCELED")
    run = job.run(max_runtime=30)
    assert run.stop_reason == "the job was CANCELED outside this task" and flink.stops == []
    assert RestorePointFile(tmp_path / "restore" / "ctr.json").restore_point().path == "file:/ckpt/job1/chk-4"


def test_stop_is_safe_from_another_thread_and_the_first_reason_wins(tmp_path):
    job = _job(FakeFlink(), tmp_path)
    threads = [threading.Thread(target=job.stop, args=(reason,)) for reason in ("SIGTERM", "task killed")]
    threads[0].start()
    threads[0].join()
    threads[1].start()
    threads[1].join()
    assert job.run(max_runtime=30).stop_reason == "SIGTERM"


def _progress(**changes) -> CtrJobProgress:
    values = dict(at=100.0, job_id="j", state="RUNNING", records_in={"events_by_hour": 50, "events_by_arrival": 50},
                  records_per_s={"events_by_hour": 5.0, "events_by_arrival": 5.0}, rows_written=12,
                  hour_watermark_ms=1_413_856_800_000, arrival_watermark_ms=94_000, newest_record_ms=99_500,
                  pending_records=0, checkpoints=3, last_checkpoint_ms=97_000)
    return CtrJobProgress(**{**values, **changes})


def test_the_progress_line_says_how_far_the_watermark_trails_the_newest_record():
    progress = _progress()
    assert progress.watermark_lag_s == 5.5
    assert progress.line() == (
        "CTR job j RUNNING: records in events_by_arrival 50 (5/s), events_by_hour 50 (5/s); 12 window rows "
        "written; hour watermark 2014-10-21 02:00, arrival watermark 00:01:34 (5.5 s behind the newest record); "
        "0 records not yet read; checkpoint 3 3 s ago")
    assert _progress(newest_record_ms=None).watermark_lag_s is None


def test_the_metrics_carry_lag_and_throughput_and_a_stopped_job_only_its_state():
    def samples(registry):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples}

    running = samples(progress_registry(_progress(), now=123.0))
    assert running[("avazu_ctr_watermark_lag_seconds", ())] == 5.5
    assert running[("avazu_ctr_records_in_per_second", (("source", "events_by_hour"),))] == 5.0
    assert running[("avazu_ctr_job_running", ())] == 1
    assert running[("avazu_ctr_last_report_timestamp_seconds", ())] == 123.0
    stopped = samples(progress_registry(None, now=124.0))
    assert stopped == {("avazu_ctr_job_running", ()): 0, ("avazu_ctr_last_report_timestamp_seconds", ()): 124.0}


def test_a_restart_between_two_polls_is_counted_by_flinks_own_count(tmp_path, caplog):
    flink = FakeFlink()
    flink.restarts = 2  # before this watch: not counted
    polls = []

    def poll(job_id):
        polls.append(job_id)
        if len(polls) == 3:
            flink.restarts = 3  # a task manager lost and the job recovered, never seen RESTARTING
    flink.on_poll = poll
    with caplog.at_level("WARNING", logger="include.ctr.stream_job"):
        run = _job(flink, tmp_path).run(max_runtime=0.2)
    assert run.restarts_seen == 1
    assert "restarted (Flink restored its last checkpoint) after: java.lang.RuntimeException" in caplog.text

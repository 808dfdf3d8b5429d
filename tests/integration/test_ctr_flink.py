"""The Flink CTR job (flink/ctr_job.py) on the real stack: every closed window exact, through a
savepoint and a task manager killed mid-stream.

A session cluster of this module's own (the ``flink_cluster`` fixture: home under pytest's tmp,
free ports) runs the job on a topic of its own, writing into a PostgreSQL schema of its own in the
ctr database (created by the migrations). Hours are generated, staged and ingested with
HourlyIngestor, as Airflow does; tests/ctr_flink.py holds that pipeline and the independent count.

The tests run in order on one job: each goes on from where the one before left it.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.ctr_flink import HOURS, CtrPipeline, assert_exact, ctr_pipeline, hour_start
from tests.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pipeline(flink_cluster, postgres_url, kafka_config, schema_registry_url, tmp_path_factory):
    """Hours 0-2 ingested, the job started on them and caught up (the tests go on from here)."""
    with ctr_pipeline("ctr_flink", flink_cluster, postgres_url, kafka_config, schema_registry_url,
                      tmp_path_factory.mktemp("avazu")) as ctr:
        for hour in HOURS[:3]:
            ctr.ingest(hour)
        ctr.start()
        ctr.timings["catch_up_s"] = round(ctr.caught_up(), 1)
        yield ctr


def _all_impressions(ctr: CtrPipeline, hour: int) -> int:
    rows = ctr.frame(f"SELECT impressions FROM ctr_hourly WHERE dimension = 'all' AND hour = '{hour_start(hour)}'")
    return int(rows["impressions"].sum()) if len(rows) else 0


def test_closed_hours_and_minutes_are_exact(pipeline):
    # The hour watermark is an hour behind the newest hour (2): hour 0 has closed, 1 and 2 are open.
    ctr = pipeline
    wait_for("hour 0 in ctr_hourly", lambda: _all_impressions(ctr, HOURS[0]) > 0, 120)
    ctr.settled()
    assert_exact("ctr_hourly", ctr.frame("SELECT * FROM ctr_hourly"), ctr.hourly_truth(HOURS[:1]))
    # The three hours were written within seconds: their minutes close when the next test writes.
    ctr.assert_closed_minutes_exact(some=False)
    assert ctr.frame("SELECT * FROM ctr_late").empty


def test_after_a_savepoint_hours_stay_exact_and_a_closed_hour_read_first_is_late(pipeline):
    ctr = pipeline
    began = time.monotonic()
    savepoint = ctr.rest.stop_with_savepoint(ctr.job_id)
    ctr.timings["savepoint_s"] = round(time.monotonic() - began, 1)
    # While stopped: hour 0 again (its window fired before the savepoint), then hour 3. After the
    # resume hour 0's copy is read first, before any watermark: it must not reopen hour 0.
    ctr.since_start = 0
    ctr.wait_for_a_later_minute()
    again = ctr.ingest(HOURS[0], again=True)
    ctr.ingest(HOURS[3])
    ctr.start(savepoint)
    ctr.timings["resume_catch_up_s"] = round(ctr.caught_up(), 1)
    # Hour 3 moves the watermark to hour 2: hour 1 closes (its window came through the savepoint).
    wait_for("hour 1 in ctr_hourly", lambda: _all_impressions(ctr, HOURS[1]) > 0, 120)
    ctr.settled()
    assert_exact("ctr_hourly", ctr.frame("SELECT * FROM ctr_hourly"), ctr.hourly_truth(HOURS[:2]))
    late = ctr.frame("SELECT window_kind, window_start, records FROM ctr_late WHERE window_kind = 'hour'")
    assert late.to_dict("records") == [{"window_kind": "hour", "window_start": hour_start(HOURS[0]), "records": again}]
    ctr.assert_closed_minutes_exact()


def test_a_task_manager_killed_mid_stream_recovers_from_its_checkpoint(pipeline):
    ctr = pipeline
    taskmanager = next(p for p in ctr.cluster.processes if p.name == "flink-taskmanager")
    read_before = ctr.since_start
    ctr.ingest(HOURS[4])
    # Killed as soon as it has read some of hour 4, before a checkpoint can cover all of it.
    wait_for("the job to read hour 4", lambda: min(
        s.records_in for s in ctr.rest.metrics(ctr.job_id).sources) > read_before, 60, interval=0.2)
    restored_before = ctr.rest.metrics(ctr.job_id).restored_checkpoint
    pid = taskmanager.pid()
    os.killpg(pid, signal.SIGKILL)
    began = time.monotonic()
    wait_for("the killed task manager to be gone", lambda: taskmanager.pid() is None, 30, interval=0.2)
    ctr.cluster.start(echo=lambda line: None)
    wait_for("the job to restore a checkpoint and run", lambda: (
        (m := ctr.rest.metrics(ctr.job_id)).state == "RUNNING" and m.restored_checkpoint != restored_before), 180)
    ctr.timings["recovery_s"] = round(time.monotonic() - began, 1)
    # A partition the restored checkpoint had read to its end has nothing to replay and holds the
    # watermark back until --idle-timeout (10 min here): more of hour 4 on every partition, and
    # hour 4 moves the watermark to hour 3: hour 2 closes.
    ctr.ingest(HOURS[4], again=True)
    ctr.wait_for_exact_hours(HOURS[:3])
    assert len(ctr.frame("SELECT * FROM ctr_late WHERE window_kind = 'hour'")) == 1
    ctr.assert_closed_minutes_exact()

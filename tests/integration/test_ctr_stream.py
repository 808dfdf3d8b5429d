"""CtrStreamOperator on the real stack: it runs the Flink CTR job, a SIGTERM stops it with a savepoint
mid-stream, the next run resumes from that savepoint, and a task manager killed while it watches is
recovered - every closed window equal to the independent count after each.

The operator runs in the test's main thread, as in a task (its SIGTERM handler is installed there);
what a task's surroundings would do - ingest hours, kill the task manager, signal the task - runs
beside it in a thread. The cluster, topic, schema and count are tests/ctr_flink.py's. The two
tests run in order: the second resumes what the first stopped.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from prometheus_client import delete_from_gateway

from include.ctr.metrics import JOB
from tests.ctr_flink import HOURS, CtrPipeline, ctr_pipeline, hour_start, logged_lines
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

PROGRESS_INTERVAL = 2


@pytest.fixture(scope="module")
def pipeline(flink_cluster, postgres_url, kafka_config, schema_registry_url, tmp_path_factory):
    """Hours 0-2 ingested, no job yet: the operator starts it."""
    with pytest.MonkeyPatch.context() as env, ctr_pipeline(
            "ctr_stream", flink_cluster, postgres_url, kafka_config, schema_registry_url,
            tmp_path_factory.mktemp("avazu")) as ctr:
        # The operator finds the cluster as devstack.flink does, and the store by its connection.
        settings = flink_cluster.settings
        env.setenv("DEVSTACK_HOME", str(settings.stack.home))
        env.setenv("FLINK_REST_PORT", str(settings.rest_port))
        env.setenv("FLINK_RPC_PORT", str(settings.rpc_port))
        env.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", postgres_url)
        for hour in HOURS[:3]:
            ctr.ingest(hour)
        try:
            yield ctr
        finally:  # the shared Pushgateway keeps no group of this test's job
            delete_from_gateway(os.environ["PUSHGATEWAY_URL"], job=JOB, grouping_key={"flink_job": ctr.job_name})


def _operator(ctr: CtrPipeline, task_id: str):
    from kafka_pipeline.operators.flink import CtrStreamOperator

    return CtrStreamOperator(task_id=task_id, job_name=ctr.job_name, topic=ctr.topics.raw, schema=ctr.schema,
                             group_id=ctr.job_args[ctr.job_args.index("--group-id") + 1],
                             job_args=["--checkpoint-interval", "2 s", "--parallelism", "2", "--idle-timeout", "10 min"],
                             max_runtime=600, progress_interval=PROGRESS_INTERVAL, poll_interval=0.5)


def _watch_while(operator, scenario: Callable[[], None]) -> dict:
    """Run ``operator`` in this (the main) thread and ``scenario`` beside it; a failing scenario kills the task."""
    failures: list[BaseException] = []

    def guarded() -> None:
        try:
            scenario()
        except BaseException as error:  # re-raised below, in the test's thread
            failures.append(error)
            operator.on_kill()

    beside = threading.Thread(target=guarded, daemon=True)
    beside.start()
    result = operator.execute(context={})
    beside.join(60)
    if failures:
        raise failures[0]
    return result


def _closed_hours_exact(ctr: CtrPipeline, at_least: tuple[int, ...], at_most: tuple[int, ...]) -> list[int]:
    """Every hour ctr_hourly holds equals the count; they include ``at_least`` and are among ``at_most``.

    Which hours have closed can depend on where a savepoint cut the stream: the two sources read
    at their own pace, so the hour source may resume with part of the newest hour still to read.
    """
    written = ctr.frame("SELECT DISTINCT hour FROM ctr_hourly")["hour"]
    closed = sorted(h for h in at_most if hour_start(h) in set(written.dt.to_pydatetime()))
    assert set(at_least) <= set(closed) and len(closed) == len(written), (closed, list(written))
    ctr.assert_exact_hours(tuple(closed))
    return closed


def _running_job(ctr: CtrPipeline) -> str:
    job = wait_for("the operator's job to run", lambda: (j := ctr.rest.running(ctr.job_name)) and
                   j.state == "RUNNING" and j, 240, interval=0.5)
    wait_for("its sources to report", lambda: len(ctr.rest.metrics(job.id).sources) == 2, 60, interval=0.5)
    return job.id


def _all_impressions(ctr: CtrPipeline, hour: int) -> int:
    rows = ctr.frame(f"SELECT impressions FROM ctr_hourly WHERE dimension = 'all' AND hour = '{hour_start(hour)}'")
    return int(rows["impressions"].sum()) if len(rows) else 0


def _sources_read_more_than(ctr: CtrPipeline, before: int) -> Callable[[], bool]:
    return lambda: min(s.records_in for s in ctr.rest.metrics(ctr.job_id).sources) > before


def _local(uri: str) -> Path:
    return Path(unquote(urlsplit(uri).path))


def _pushed(ctr: CtrPipeline) -> dict[str, float]:
    """The avazu_ctr_* series the watcher pushed for this job, read back from the Pushgateway."""
    with urllib.request.urlopen(f"{os.environ['PUSHGATEWAY_URL']}/metrics", timeout=10) as response:
        lines = response.read().decode().splitlines()
    mine = [line for line in lines if line.startswith("avazu_ctr_") and f'flink_job="{ctr.job_name}"' in line]
    return {line.split("{", 1)[0] + ("{" + line.split('source="')[1].split('"')[0] + "}" if 'source="' in line else ""):
            float(line.rsplit(" ", 1)[1]) for line in mine}


def test_a_sigterm_stops_the_job_with_a_savepoint_mid_stream(pipeline):
    ctr = pipeline
    restore_file = ctr.cluster.settings.home / "restore-points" / f"{ctr.job_name}.json"
    seen: dict = {}

    def scenario() -> None:
        ctr.job_id = _running_job(ctr)
        # Checkpoints outlive a cancelled job: the next run can resume from the latest.
        externalization = ctr.rest.checkpoint_config(ctr.job_id)["externalization"]
        assert externalization["enabled"] and not externalization["delete_on_cancellation"], externalization
        ctr.caught_up()
        wait_for("hour 0 in ctr_hourly", lambda: _all_impressions(ctr, HOURS[0]) > 0, 120)
        ctr.settled()
        ctr.assert_exact_hours(HOURS[:1])
        seen["metrics"] = wait_for("the watcher's metrics on the Pushgateway",
                                   lambda: (m := _pushed(ctr)).get("avazu_ctr_watermark_lag_seconds") is not None and m,
                                   60, interval=PROGRESS_INTERVAL)
        # Hour 3 arrives in a later minute; the task is stopped as soon as the job reads some of it.
        ctr.wait_for_a_later_minute()
        read_before = min(s.records_in for s in ctr.rest.metrics(ctr.job_id).sources)
        ctr.ingest(HOURS[3])
        wait_for("the job to read hour 3", _sources_read_more_than(ctr, read_before), 60, interval=0.1)
        seen["read_at_signal"] = min(s.records_in for s in ctr.rest.metrics(ctr.job_id).sources)
        os.kill(os.getpid(), signal.SIGTERM)

    with logged_lines("include.ctr.stream_job") as logged:
        result = _watch_while(_operator(ctr, "first"), scenario)

    assert result["job_id"] == ctr.job_id and not result["adopted"] and result["resumed_from"] is None
    assert result["stop_reason"] == "SIGTERM" and result["savepoint"], result
    assert _local(result["savepoint"]).is_dir()
    remembered = json.loads(restore_file.read_text())
    assert remembered["job_id"] == ctr.job_id
    assert remembered["restore_point"]["path"] == result["savepoint"]
    assert remembered["restore_point"]["kind"] == "savepoint"
    assert ctr.rest.job(ctr.job_id).state == "FINISHED"
    # Progress lines in the task log, the pushed metrics while it ran, and the stopped job's state after.
    lines = [line for line in logged if f"CTR job {ctr.job_id} RUNNING: records in" in line]
    assert len(lines) == result["progress_lines"] > 0 and "s behind the newest record" in lines[-1]
    metrics = seen["metrics"]
    assert metrics["avazu_ctr_job_running"] == 1 and metrics["avazu_ctr_records_in_total{events_by_hour}"] > 0
    assert 0 <= metrics["avazu_ctr_watermark_lag_seconds"] < 600
    assert "avazu_ctr_records_in_per_second{events_by_arrival}" in metrics
    after = _pushed(ctr)
    assert set(after) == {"avazu_ctr_job_running", "avazu_ctr_last_report_timestamp_seconds"}
    assert after["avazu_ctr_job_running"] == 0
    ctr.timings["read_at_sigterm"] = seen["read_at_signal"]


def test_the_next_run_resumes_from_the_savepoint_and_rides_out_a_killed_task_manager(pipeline):
    ctr = pipeline
    stopped_job = ctr.job_id
    restore_file = ctr.cluster.settings.home / "restore-points" / f"{ctr.job_name}.json"
    savepoint = json.loads(restore_file.read_text())["restore_point"]["path"]
    taskmanager = next(p for p in ctr.cluster.processes if p.name == "flink-taskmanager")
    seen: dict = {}

    def scenario() -> None:
        # (b) While stopped: hour 0 again, in a later minute. After the resume it is read first: it
        # is late for its hour (closed before the savepoint) and closes hour 3's arrival minute.
        ctr.since_start = 0
        ctr.wait_for_a_later_minute()
        seen["again"] = ctr.ingest(HOURS[0], again=True)
        ctr.job_id = _running_job(ctr)
        ctr.caught_up()
        wait_for("nothing left to read", lambda: all(
            s.pending_records == 0 for s in ctr.rest.metrics(ctr.job_id).sources), 120, interval=0.5)
        ctr.settled()
        # Hour 3 read after the resume moves the watermark to hour 2: hour 1 closes too.
        seen["closed_after_resume"] = _closed_hours_exact(ctr, HOURS[:1], HOURS[:2])
        late = ctr.frame("SELECT window_kind, window_start, records FROM ctr_late WHERE window_kind = 'hour'")
        assert late.to_dict("records") == [{"window_kind": "hour", "window_start": hour_start(HOURS[0]),
                                            "records": seen["again"]}]
        seen["minutes_after_resume"] = ctr.assert_closed_minutes_exact()

        # (a) Hour 4, and the task manager killed as soon as the job has read some of it.
        ctr.wait_for_a_later_minute()
        read_before = min(s.records_in for s in ctr.rest.metrics(ctr.job_id).sources)
        restored_before = ctr.rest.metrics(ctr.job_id).restored_checkpoint
        ctr.ingest(HOURS[4])
        wait_for("the job to read hour 4", _sources_read_more_than(ctr, read_before), 60, interval=0.1)
        os.killpg(taskmanager.pid(), signal.SIGKILL)
        wait_for("the killed task manager to be gone", lambda: taskmanager.pid() is None, 30, interval=0.2)
        ctr.cluster.start(echo=lambda line: None)
        wait_for("the job to restore a checkpoint and run", lambda: (
            (m := ctr.rest.metrics(ctr.job_id)).state == "RUNNING" and m.restored_checkpoint != restored_before), 180)
        # A partition the restored checkpoint had read to its end has nothing to replay and holds the
        # watermark back until --idle-timeout (10 min here): the stream goes on, more of hour 4 on
        # every partition, and hour 4 moves the hour watermark to hour 3: hours 1 and 2 close.
        ctr.ingest(HOURS[4], again=True)
        ctr.wait_for_exact_hours(HOURS[:3])
        assert len(ctr.frame("SELECT * FROM ctr_late WHERE window_kind = 'hour'")) == 1
        seen["minutes_after_kill"] = ctr.assert_closed_minutes_exact()
        operator.on_kill()  # the task stopped from Airflow: the other way in to the same stop

    operator = _operator(ctr, "second")
    result = _watch_while(operator, scenario)

    assert result["resumed_from"] == savepoint and not result["adopted"] and result["job_id"] != stopped_job
    assert result["job_id"] == ctr.job_id  # the same job throughout: Flink recovered it in place
    assert result["restarts_seen"] >= 1
    assert result["stop_reason"] == "task killed" and result["savepoint"] and result["savepoint"] != savepoint
    assert json.loads(restore_file.read_text())["restore_point"]["path"] == result["savepoint"]
    assert seen["minutes_after_kill"] > seen["minutes_after_resume"] > 0

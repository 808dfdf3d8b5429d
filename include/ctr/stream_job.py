"""The CTR job's life on a Flink session cluster: started or adopted, watched, stopped with a savepoint, resumed.

Life cycle (driven by Airflow's ``CtrStreamOperator`` and by the tests; no Airflow here)::

    job = CtrStreamJob(name, rest, submit, RestorePointFile(path), savepoint_dir=...)
    run = job.run(max_runtime=3600)      # blocks; job.stop("SIGTERM") from a signal handler or another thread

``run`` first looks for a live job of the same name on the cluster and watches it (a task that was
killed leaves its job running: the next one takes it over instead of submitting a second). Else it
submits the job, restored from the newest restore point: the savepoint or retained checkpoint
remembered in the restore-point file, or the newer one Flink still knows for the job named there
(a watcher killed while a stop was under way never heard the savepoint's location; Flink has it).
Without one the job starts from its consumer groups' committed offsets.

While the job runs it polls Flink's REST API every ``poll_interval`` seconds and every
``progress_interval`` logs a line (records in per source and per second, window rows written, the
hour and arrival watermarks and how far the arrival watermark trails the newest record in the
topic, records the sources have yet to read, the latest checkpoint), hands the same reading to
``report`` (the Pushgateway), and remembers the latest checkpoint in the file. A job that restarts
(a task manager lost) is watched through it; a job that FAILED ends the run with one sentence
naming Flink's cause. ``stop`` makes the loop stop the job with a savepoint (windows stay open in
it) and remember where it is; ``max_runtime`` ends the watch and leaves the job running for the
next watcher, or stops it too with ``stop_at_end``. ``stop_when_caught_up`` stops it the same way as
soon as its consumer groups have committed every record the topic holds (``unread_records``): a
bounded run over what has been written so far, as ``make demo`` runs it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from include.ctr.flink_rest import (LIVE_STATES, FlinkJobError, FlinkRestClient, FlinkUnavailable, JobMetrics,
                                    RestorePoint)
from include.errors import PermanentError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

    from include.health.lag import LagSample, PartitionKey

log = logging.getLogger(__name__)

# The sources of flink/ctr_job.py: one per window kind, each with the watermark of its own clock.
HOUR_SOURCE, ARRIVAL_SOURCE = "events_by_hour", "events_by_arrival"
# The consumer groups those sources commit their offsets as, <group-id>.<suffix> (flink/ctr_job.py's
# source_ddl, which runs in PyFlink's environment and cannot import this module).
GROUP_SUFFIXES = ("hourly", "minute")


class CtrJobFailed(PermanentError):
    """The CTR job reached FAILED (Flink's restart strategy gave up), or cannot be restored."""


class RestorePointFile:
    """Where the CTR job's latest restore point is remembered: one JSON file per job name.

    It lives in the Flink cluster's state folder, beside the savepoints and checkpoints it points at,
    so the two come and go together; see the README for why not an Airflow Variable. Written whole
    and renamed into place, so a reader (or a watcher killed mid-write) never sees half of it.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def read(self) -> dict[str, Any]:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as error:
            raise CtrJobFailed(f"the CTR job's restore-point file {self.path} cannot be read ({error}); "
                               "fix or remove it (removed, the job starts from its committed offsets)") from None

    def restore_point(self) -> RestorePoint | None:
        found = self.read().get("restore_point")
        return RestorePoint.from_dict(found) if found else None

    def _write(self, **changes: Any) -> None:
        record = {**self.read(), **changes, "updated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        partial.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(partial, self.path)

    def remember_job(self, job_id: str) -> None:
        """The job now running under this name: its own checkpoints are asked for at the next start."""
        self._write(job_id=job_id)

    def remember(self, point: RestorePoint) -> None:
        self._write(job_id=point.job_id, restore_point=point.as_dict())


@dataclass(frozen=True)
class CtrJobProgress:
    """One reading of the running job, what the progress line and the metrics show."""

    at: float  # Unix seconds
    job_id: str
    state: str
    records_in: dict[str, int]  # per source
    records_per_s: dict[str, float]  # per source, since the previous reading
    rows_written: int  # window rows handed to the sinks (upserts)
    hour_watermark_ms: int | None
    arrival_watermark_ms: int | None
    newest_record_ms: int | None  # the newest record's Kafka timestamp in the topic
    pending_records: int | None  # what the slower source has yet to read (each source reads every record)
    checkpoints: int
    last_checkpoint_ms: int | None

    @property
    def watermark_lag_s(self) -> float | None:
        """How far the arrival watermark trails the newest record (the lateness, 5 s, when caught up)."""
        if self.newest_record_ms is None or self.arrival_watermark_ms is None:
            return None
        return max(0.0, (self.newest_record_ms - self.arrival_watermark_ms) / 1000)

    def line(self) -> str:
        sources = ", ".join(f"{name} {count:,} ({self.records_per_s.get(name, 0.0):,.0f}/s)"
                            for name, count in sorted(self.records_in.items()))
        lag = self.watermark_lag_s
        if lag is not None:
            trail = f" ({lag:,.1f} s behind the newest record)"
        else:
            trail = "" if self.arrival_watermark_ms is None else " (the newest record's time is unknown)"
        pending = "" if self.pending_records is None else f"; {self.pending_records:,} records not yet read"
        checkpoint = ("no checkpoint yet" if self.last_checkpoint_ms is None else
                      f"checkpoint {self.checkpoints} {max(0.0, self.at - self.last_checkpoint_ms / 1000):.0f} s ago")
        return (f"CTR job {self.job_id} {self.state}: records in {sources}; {self.rows_written:,} window rows written; "
                f"hour watermark {_when(self.hour_watermark_ms, '%Y-%m-%d %H:%M')}, arrival watermark "
                f"{_when(self.arrival_watermark_ms, '%H:%M:%S')}{trail}{pending}; {checkpoint}")


def _when(ms: int | None, layout: str) -> str:
    return "none yet" if ms is None else dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc).strftime(layout)


@dataclass
class CtrStreamRun:
    """What one watch did: the task's return value (XCom) and its last log line."""

    job_name: str
    job_id: str = ""
    adopted: bool = False  # a job already running was taken over
    resumed_from: str | None = None  # the restore point the job was submitted with
    stop_reason: str = ""
    savepoint: str | None = None  # where the stop put the job's state
    records_in: dict[str, int] = field(default_factory=dict)
    rows_written: int = 0
    restarts_seen: int = 0  # by Flink's numRestarts, since the watch began
    progress_lines: int = 0
    reports_failed: int = 0  # readings whose metrics push or newest-record lookup failed (logged each)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items()}


class CtrStreamJob:
    """The CTR job as one object with a life cycle: ``run`` (start or adopt, watch) and ``stop``."""

    def __init__(self, name: str, rest: FlinkRestClient, submit: Callable[[str | None], str],
                 restore_points: RestorePointFile, *, savepoint_dir: str | None = None,
                 newest_record_ms: Callable[[], int | None] | None = None,
                 report: Callable[[CtrJobProgress], None] | None = None,
                 unread_records: Callable[[], int | None] | None = None,
                 poll_interval: float = 2.0, progress_interval: float = 30.0,
                 start_timeout: float = 300.0, stop_timeout: float = 300.0, unreachable_grace: float = 60.0):
        self.name = name
        self.rest = rest
        self.submit = submit
        self.restore_points = restore_points
        self.savepoint_dir = savepoint_dir
        self.newest_record_ms = newest_record_ms
        self.report = report
        self.unread_records = unread_records
        self.poll_interval = poll_interval
        self.progress_interval = progress_interval
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.unreachable_grace = unreachable_grace
        self._stop = threading.Event()
        self._stop_reason = ""
        self.run_record = CtrStreamRun(name)
        self._previous: CtrJobProgress | None = None
        self._remembered_checkpoint: str | None = None
        self._restarts_at_start: int | None = None
        self._restart_logged = False  # the RESTARTING state was seen and its cause logged
        self._unread: int | None = -1  # the last reading of unread_records (-1: none yet)
        self._checkpointed = False  # the watched job has completed a checkpoint

    def stop(self, reason: str = "stop requested") -> None:
        """Ask ``run`` to stop the job with a savepoint and return; safe from a signal handler or a thread."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    # -- starting ---------------------------------------------------------------------------------

    def restore_point(self) -> RestorePoint | None:
        """The newest of the remembered restore point and the one Flink knows for the remembered job."""
        record = self.restore_points.read()
        found = [self.restore_points.restore_point()]
        job_id = record.get("job_id")
        if job_id and self.rest.job(job_id) is not None:
            found.append(self.rest.latest_restore_point(job_id))
        newest = max((p for p in found if p is not None), key=lambda p: p.taken_at_ms, default=None)
        if newest is not None:
            where = urlsplit(newest.path)
            local = unquote(where.path) if where.scheme in ("", "file") else None
            if local is not None and not Path(local).exists():
                raise CtrJobFailed(f"the CTR job's {newest.kind} {newest.path}, remembered in {self.restore_points.path}, "
                                   "no longer exists; remove that file to start from the committed offsets instead")
        return newest

    def start(self) -> str:
        """Adopt the live job of this name, or submit one from the newest restore point; returns its id."""
        live = self.rest.running(self.name)
        if live is not None:
            log.info("CTR job %s (%s) is already %s on the cluster: watching it", self.name, live.id, live.state)
            self.run_record.adopted = True
            self.run_record.job_id = live.id
            self.restore_points.remember_job(live.id)
            return live.id
        point = self.restore_point()
        if point is None:
            log.info("CTR job %s: no savepoint or checkpoint remembered, starting from the committed offsets", self.name)
        else:
            log.info("CTR job %s: resuming from %s %s of job %s (%s)", self.name, point.kind, point.path,
                     point.job_id, _when(point.taken_at_ms, "%Y-%m-%d %H:%M:%S UTC"))
            # Remembered before the submit: the new job's first checkpoint supersedes it.
            self.restore_points.remember(point)
        began = time.monotonic()
        job_id = self.submit(point.path if point else None)
        self.restore_points.remember_job(job_id)
        self.run_record.job_id = job_id
        self.run_record.resumed_from = point.path if point else None
        log.info("CTR job %s submitted as %s in %.1f s", self.name, job_id, time.monotonic() - began)
        return job_id

    # -- watching ---------------------------------------------------------------------------------

    def run(self, max_runtime: float | None = None, *, stop_at_end: bool = False,
            stop_when_caught_up: bool = False) -> CtrStreamRun:
        """Start or adopt the job and watch it until stopped, ``max_runtime`` or, with ``stop_when_caught_up``,
        until its consumer groups have committed every record of the topic (then it stops with a savepoint)."""
        if stop_when_caught_up and self.unread_records is None:
            raise ValueError("stop_when_caught_up needs unread_records: how many records the job has yet to commit")
        began = time.monotonic()
        job_id = self.start()
        # The watch's own length: a submit (30-60 s of planning on a busy machine) does not eat into it.
        deadline = None if max_runtime is None else time.monotonic() + max_runtime
        last_progress = float("-inf")  # the first line at once, however long the machine has been up
        unreachable_since: float | None = None
        last_state = ""
        try:
            while True:
                if self._stop.is_set():
                    self._stop_with_savepoint(job_id, self._stop_reason)
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    if stop_at_end:
                        self._stop_with_savepoint(job_id, "max_runtime")
                    else:
                        self.run_record.stop_reason = "max_runtime"
                        log.info("CTR job %s: max_runtime reached, the job keeps running for the next watcher", job_id)
                    break
                try:
                    job = self.rest.job(job_id)
                    state = job.state if job is not None else "UNKNOWN"
                    if state != last_state:
                        self._state_changed(job_id, last_state, state)
                        last_state = state
                    if job is None:
                        raise CtrJobFailed(f"the Flink cluster no longer knows the CTR job {job_id} (was the job "
                                           "manager restarted?); the next run resumes from its remembered restore point")
                    if state not in LIVE_STATES:
                        self._ended_outside(job_id, state)
                        break
                    if state == "RUNNING" and time.monotonic() - last_progress >= self.progress_interval:
                        self._progress(self.rest.metrics(job_id))
                        last_progress = time.monotonic()
                    if stop_when_caught_up and state == "RUNNING" and self._caught_up(job_id):
                        self._progress(self.rest.metrics(job_id))  # the final counts, in the log and the record
                        self._stop_with_savepoint(job_id, "caught up")
                        break
                    unreachable_since = None
                except FlinkUnavailable:
                    unreachable_since = unreachable_since or time.monotonic()
                    if time.monotonic() - unreachable_since > self.unreachable_grace:
                        raise
                self._stop.wait(self.poll_interval)
        finally:
            self.run_record.seconds = round(time.monotonic() - began, 1)
        log.info("CTR job watch ended: %s", self.run_record.as_dict())
        return self.run_record

    def _caught_up(self, job_id: str) -> bool:
        """Whether the job's consumer groups have committed every record of the topic (at a checkpoint).

        Offsets are committed when a checkpoint completes, so what they cover has been read and its
        state saved; the windows that this closes fire on the next watermark, and the savepoint that
        stops the job flushes the sinks. A failed reading (a broker hiccup) is counted, not fatal.
        The job itself must have completed a checkpoint too (see below).
        """
        try:
            unread = self.unread_records()
        except Exception as error:
            self.run_record.reports_failed += 1
            log.warning("the CTR job's unread records could not be counted: %s", error)
            return False
        if unread != self._unread:
            log.info("CTR job %s: %s", job_id, "its consumer groups have not committed an offset on every partition yet"
                     if unread is None else f"{unread:,} records of the topic not yet committed by its consumer groups")
            self._unread = unread
        if unread != 0:
            return False
        # Offsets a restored job finds committed may be its predecessor's: once it has completed a
        # checkpoint of its own, every task runs (a savepoint can be taken) and holds that position.
        if not self._checkpointed:
            self._checkpointed = self.rest.metrics(job_id).completed_checkpoints > 0
        return self._checkpointed

    def _state_changed(self, job_id: str, before: str, now: str) -> None:
        if now == "RESTARTING":
            self._restart_logged = True
            log.warning("CTR job %s is restarting (Flink restores its last checkpoint) after: %s",
                        job_id, self.rest.failure_cause(job_id))
        elif before:
            log.info("CTR job %s: %s -> %s", job_id, before, now)

    def _count_restarts(self, metrics: JobMetrics) -> None:
        """Restarts since this watch began, by Flink's own count: a restart can pass between two polls unseen."""
        if self._restarts_at_start is None:
            self._restarts_at_start = metrics.restarts
        seen = metrics.restarts - self._restarts_at_start
        if seen > self.run_record.restarts_seen:
            if not self._restart_logged:
                log.warning("CTR job %s restarted (Flink restored its last checkpoint) after: %s",
                            metrics.job_id, self.rest.failure_cause(metrics.job_id))
            self.run_record.restarts_seen = seen
            self._restart_logged = False

    def _ended_outside(self, job_id: str, state: str) -> None:
        """The job reached a final state nobody here asked for: remember where to resume, and say why."""
        point = self.rest.latest_restore_point(job_id)
        if point is not None:
            self.restore_points.remember(point)
        resume = f"the next run resumes from {point.kind} {point.path}" if point else "it has no checkpoint to resume from"
        if state == "FAILED":
            raise CtrJobFailed(f"the CTR job {job_id} failed: {self.rest.failure_cause(job_id)}; {resume}")
        self.run_record.stop_reason = f"the job was {state} outside this task"
        log.warning("CTR job %s is %s, not stopped by this task; %s", job_id, state, resume)

    def _progress(self, metrics: JobMetrics) -> None:
        self._count_restarts(metrics)
        now = time.time()
        records = {s.name.split("[", 1)[0]: s.records_in for s in metrics.sources}
        watermarks = {s.name.split("[", 1)[0]: s.watermark_ms for s in metrics.sources}
        pending = [s.pending_records for s in metrics.sources if s.pending_records is not None]
        rates = {}
        if self._previous is not None and self._previous.job_id == metrics.job_id and now > self._previous.at:
            elapsed = now - self._previous.at
            rates = {name: max(0, count - self._previous.records_in.get(name, 0)) / elapsed
                     for name, count in records.items()}
        newest = None
        if self.newest_record_ms is not None:
            try:
                newest = self.newest_record_ms()
            except Exception as error:  # the figure is an extra: a broker hiccup must not stop the watch
                self.run_record.reports_failed += 1
                log.warning("the newest record's time could not be read: %s", error)
        progress = CtrJobProgress(
            at=now, job_id=metrics.job_id, state=metrics.state, records_in=records, records_per_s=rates,
            rows_written=metrics.rows_written, hour_watermark_ms=watermarks.get(HOUR_SOURCE),
            arrival_watermark_ms=watermarks.get(ARRIVAL_SOURCE), newest_record_ms=newest,
            pending_records=max(pending) if pending else None, checkpoints=metrics.completed_checkpoints,
            last_checkpoint_ms=metrics.last_checkpoint_ms)
        self._previous = progress
        self.run_record.records_in = records
        self.run_record.rows_written = metrics.rows_written
        self.run_record.progress_lines += 1
        log.info("%s", progress.line())
        if metrics.last_checkpoint and metrics.last_checkpoint != self._remembered_checkpoint:
            self.restore_points.remember(RestorePoint(metrics.last_checkpoint, "checkpoint", metrics.job_id,
                                                      int(metrics.last_checkpoint_ms or now * 1000)))
            self._remembered_checkpoint = metrics.last_checkpoint
        if self.report is not None:
            try:
                self.report(progress)
            except Exception as error:  # metrics are for people watching; the job goes on without them
                self.run_record.reports_failed += 1
                log.warning("the CTR job's metrics were not reported: %s", error)

    # -- stopping ---------------------------------------------------------------------------------

    def _stop_with_savepoint(self, job_id: str, reason: str) -> None:
        log.info("CTR job %s: stopping with a savepoint (%s)", job_id, reason)
        began = time.monotonic()
        # A savepoint needs every task running: a job just submitted (a stop asked during the
        # submit) or restarting gets there first.
        deadline = began + self.start_timeout
        while (job := self.rest.job(job_id)) is not None and job.state in ("CREATED", "INITIALIZING", "RESTARTING"):
            if time.monotonic() > deadline:
                raise CtrJobFailed(f"the CTR job {job_id} was still {job.state} {self.start_timeout:.0f} s after the "
                                   f"stop was asked ({reason}), so no savepoint could be taken; it keeps running")
            time.sleep(min(self.poll_interval, 1.0))
        try:
            request = self.rest.trigger_stop(job_id, self.savepoint_dir)
        except FlinkJobError:
            # Already stopped or gone (a stop from elsewhere raced this one): its newest state is what counts.
            job = self.rest.job(job_id)
            if job is None or job.state == "RUNNING":
                raise
            self._ended_outside(job_id, job.state)
            return
        location = self.rest.savepoint_location(job_id, request, self.stop_timeout)
        point = RestorePoint(location, "savepoint", job_id, int(time.time() * 1000))
        self.restore_points.remember(point)
        # The savepoint is complete before the job is: its tasks finish (and the sinks flush) after.
        deadline = time.monotonic() + self.stop_timeout
        while (job := self.rest.job(job_id)) is not None and job.state in LIVE_STATES:
            if time.monotonic() > deadline:
                raise CtrJobFailed(f"the CTR job {job_id} took its savepoint {location} but was still {job.state} "
                                   f"{self.stop_timeout:.0f} s later; the next run resumes from that savepoint")
            time.sleep(min(self.poll_interval, 0.5))
        self.run_record.stop_reason = reason
        self.run_record.savepoint = location
        log.info("CTR job %s stopped in %.1f s; its savepoint %s is remembered in %s", job_id,
                 time.monotonic() - began, location, self.restore_points.path)


def consumer_groups(group_id: str) -> tuple[str, ...]:
    """The consumer groups the job's sources commit as, for ``--group-id group_id``."""
    return tuple(f"{group_id}.{suffix}" for suffix in GROUP_SUFFIXES)


def unread_in(samples: "dict[PartitionKey, LagSample]", topic: str, groups: tuple[str, ...],
              partitions: list[int]) -> int | None:
    """Records of ``topic`` that ``groups`` have not committed, summed over groups and partitions (pure).

    None while a group has committed nothing on one of the partitions: the job has not checkpointed
    its reading of it yet, so how much it has read there is unknown.
    """
    unread = 0
    for group in groups:
        for partition in partitions:
            sample = next((s for key, s in samples.items()
                           if (key.group, key.topic, key.partition) == (group, topic, partition)), None)
            if sample is None:
                return None
            unread += sample.lag
    return unread


def unread_records(admin: "AdminClient", kafka_config: dict[str, Any], topic: str, group_id: str,
                   timeout: float = 10.0) -> int | None:
    """Records of ``topic`` the job's consumer groups have not committed (see :func:`unread_in`).

    The lag is pipeline_health's (:func:`include.health.lag.sample_groups`): against the last stable
    offset, so transaction markers are no lag.
    """
    from include.health.config import LagLimits
    from include.health.lag import sample_groups

    metadata = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        raise CtrJobFailed(f"the CTR job's topic {topic} does not exist")
    groups = consumer_groups(group_id)
    samples = sample_groups(admin, kafka_config, LagLimits(groups=groups), timeout=timeout)
    return unread_in(samples, topic, groups, sorted(metadata.partitions))


def newest_record_ms(admin: "AdminClient", topic: str, timeout: float = 10.0) -> int | None:
    """The newest Kafka timestamp among the committed records of ``topic`` (None when it holds none).

    One ListOffsets request per partition for the record with the largest timestamp: nothing is
    read. The CTR job's arrival watermark follows these timestamps, so the gap is its lag.
    """
    from confluent_kafka import IsolationLevel, KafkaException, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    from include.kafka.errors import KafkaUnavailable

    metadata = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None:
        return None
    request = {TopicPartition(topic, p): OffsetSpec.max_timestamp() for p in metadata.partitions}
    newest = None
    for tp, future in admin.list_offsets(request, isolation_level=IsolationLevel.READ_COMMITTED,
                                         request_timeout=timeout).items():
        try:
            found = future.result()
        except KafkaException as error:
            raise KafkaUnavailable(f"listing the newest record of {topic}[{tp.partition}] failed: "
                                   f"{error.args[0].str()}") from None
        if found.offset >= 0 and found.timestamp >= 0:
            newest = max(newest or 0, found.timestamp)
    return newest

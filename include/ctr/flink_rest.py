"""Flink's REST API, the part the CTR job is watched and stopped through (no PyFlink import).

Airflow's tasks and the CTR job's integration test use it: which jobs run, stop one with a savepoint (so the
next start resumes exactly where it stopped), how far its sources have read and its sinks have written,
why it failed, and the newest checkpoint or savepoint it can be resumed from.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from include.errors import PermanentError, RetriableError


class FlinkUnavailable(RetriableError):
    """The job manager does not answer, or failed to answer a reading (a 5xx to a GET)."""


class FlinkJobError(PermanentError):
    """Flink answered, but not as asked (an unknown job, a failed savepoint)."""


@dataclass(frozen=True)
class FlinkJob:
    id: str
    name: str
    state: str
    start_time_ms: int


# States of a job that may still run; any other (FAILED, CANCELED, FINISHED, SUSPENDED) is final.
LIVE_STATES = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "CANCELLING", "FAILING", "RECONCILING")


@dataclass(frozen=True)
class SourceProgress:
    """One source of a job: records it has read and its watermark (ms; None before the first).

    ``pending_records``: what the source's Kafka consumer has yet to read (Flink's standard
    ``pendingRecords`` gauge, summed over its subtasks; None where the connector does not report it).
    """

    name: str
    records_in: int
    watermark_ms: int | None
    pending_records: int | None = None


@dataclass(frozen=True)
class SinkProgress:
    """One sink of a job: the rows it has been handed (upserts of window rows, before the flush)."""

    name: str
    records_in: int


@dataclass(frozen=True)
class RestorePoint:
    """A completed savepoint or retained checkpoint a job can be started from (``flink run -s``)."""

    path: str
    kind: str  # "savepoint" or "checkpoint"
    job_id: str
    taken_at_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "kind": self.kind, "job_id": self.job_id, "taken_at_ms": self.taken_at_ms}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RestorePoint":
        return cls(str(data["path"]), str(data["kind"]), str(data["job_id"]), int(data["taken_at_ms"]))


@dataclass(frozen=True)
class JobMetrics:
    job_id: str
    state: str
    sources: tuple[SourceProgress, ...]
    completed_checkpoints: int
    last_checkpoint: str | None
    # The checkpoint or savepoint the job's current run restored (None for a fresh start): it
    # changes when the job recovers from a failure.
    restored_checkpoint: int | None = None
    sinks: tuple[SinkProgress, ...] = ()
    # When the latest checkpoint completed (ms), and the path it was restored from, if any.
    last_checkpoint_ms: int | None = None
    restored_path: str | None = None
    # Times the job has restarted since it was submitted (Flink's numRestarts).
    restarts: int = 0

    @property
    def records_in(self) -> int:
        return sum(source.records_in for source in self.sources)

    @property
    def rows_written(self) -> int:
        return sum(sink.records_in for sink in self.sinks)


# Flink's watermark before the first one (Long.MIN_VALUE), as a gauge reports it.
_NO_WATERMARK = -(2**63)


class FlinkRestClient:
    def __init__(self, base_url: str, timeout: float = 10.0):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _call(self, path: str, body: dict[str, Any] | None = None, method: str | None = None) -> Any:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(url, data=data, method=method or ("POST" if data else "GET"),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            verb = request.get_method()
            if error.code >= 500 and verb == "GET":
                # A reading the job manager failed to compute (its checkpoint statistics mid-checkpoint
                # answer 500 now and then): asking again is safe, and the watch's grace covers it.
                raise FlinkUnavailable(f"Flink answered {error.code} to GET {url} (a server error, "
                                       f"asked again): {detail[:200]}") from None
            raise FlinkJobError(f"Flink answered {error.code} to {verb} {url}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise FlinkUnavailable(f"the Flink job manager at {self.base_url} does not answer: {error}") from None

    def jobs(self) -> list[FlinkJob]:
        """Every job the cluster knows, newest first."""
        jobs = [FlinkJob(j["jid"], j["name"], j["state"], j["start-time"]) for j in self._call("/jobs/overview")["jobs"]]
        return sorted(jobs, key=lambda job: job.start_time_ms, reverse=True)

    def running(self, name: str) -> FlinkJob | None:
        """The job called ``name`` that is running (or about to), if any."""
        return next((job for job in self.jobs() if job.name == name and job.state in LIVE_STATES), None)

    def job(self, job_id: str) -> FlinkJob | None:
        """The job ``job_id`` as the cluster knows it; None once the cluster has forgotten it (or never ran it)."""
        try:
            found = self._call(f"/jobs/{job_id}")
        except FlinkJobError as error:
            if " 404 " in str(error):
                return None
            raise
        return FlinkJob(found["jid"], found["name"], found["state"], found["start-time"])

    def stop_with_savepoint(self, job_id: str, target_directory: str | None = None, *, drain: bool = False,
                            timeout: float = 300.0) -> str:
        """Take a savepoint and stop the job (its sinks flush first); return the savepoint's location.

        ``drain=False`` keeps windows open in the savepoint: the next start resumes them, where
        draining would fire every window as if the stream had ended.
        """
        return self.savepoint_location(job_id, self.trigger_stop(job_id, target_directory, drain=drain), timeout)

    def trigger_stop(self, job_id: str, target_directory: str | None = None, *, drain: bool = False) -> str:
        """Ask Flink to stop the job with a savepoint and return the request's id at once.

        Flink finishes the stop on its own: a caller killed while waiting loses only the answer,
        which :meth:`latest_restore_point` gives later.
        """
        body: dict[str, Any] = {"drain": drain}
        if target_directory:
            body["targetDirectory"] = target_directory
        return self._call(f"/jobs/{job_id}/stop", body)["request-id"]

    def savepoint_location(self, job_id: str, request_id: str, timeout: float = 300.0) -> str:
        """Wait for the savepoint of request ``request_id`` and return where it is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self._call(f"/jobs/{job_id}/savepoints/{request_id}")
            if answer["status"]["id"] == "COMPLETED":
                operation = answer.get("operation") or {}
                if "location" in operation:
                    return operation["location"]
                cause = (operation.get("failure-cause") or {}).get("stack-trace", "no cause given")
                raise FlinkJobError(f"stopping job {job_id} with a savepoint failed: {cause.splitlines()[0]}")
            time.sleep(0.5)
        raise FlinkUnavailable(f"the savepoint of job {job_id} did not complete within {timeout:.0f} s")

    def latest_restore_point(self, job_id: str) -> RestorePoint | None:
        """The newest completed checkpoint or savepoint of the job with a path to restore from."""
        latest = self._call(f"/jobs/{job_id}/checkpoints").get("latest") or {}
        found = []
        for kind, entry in (("checkpoint", latest.get("completed")), ("savepoint", latest.get("savepoint"))):
            if entry and entry.get("external_path") and not entry.get("discarded"):
                taken = int(entry.get("latest_ack_timestamp") or entry.get("trigger_timestamp") or 0)
                found.append(RestorePoint(entry["external_path"], kind, job_id, taken))
        return max(found, key=lambda point: point.taken_at_ms, default=None)

    def checkpoint_config(self, job_id: str) -> dict[str, Any]:
        """The job's checkpointing settings (mode, interval, externalization: retained on cancellation or not)."""
        return self._call(f"/jobs/{job_id}/checkpoints/config")

    def failure_cause(self, job_id: str) -> str:
        """The first line of the exception that failed (or last restarted) the job, or 'no cause given'."""
        answer = self._call(f"/jobs/{job_id}/exceptions?maxExceptions=1")
        entries = (answer.get("exceptionHistory") or {}).get("entries") or []
        text = entries[0].get("stacktrace") if entries else answer.get("root-exception")
        return text.strip().splitlines()[0] if text and text.strip() else "no cause given"

    def cancel(self, job_id: str) -> None:
        self._call(f"/jobs/{job_id}?mode=cancel", method="PATCH")

    def _subtask_metrics(self, job_id: str, vertex_id: str, names: list[str]) -> dict[str, dict[str, Any]]:
        """Aggregates (min, max, sum) over a vertex's subtasks of the metrics ``names``, by the name's last part."""
        query = urllib.parse.quote(",".join(names), safe=",")
        return {m["id"].rsplit(".", 1)[1]: m for m in
                self._call(f"/jobs/{job_id}/vertices/{vertex_id}/subtasks/metrics?get={query}")}

    def metrics(self, job_id: str) -> JobMetrics:
        """Records read, pending and watermark of each source, rows handed to each sink, and the checkpoints."""
        job = self._call(f"/jobs/{job_id}")
        sources, sinks = [], []
        for vertex in job["vertices"]:
            if vertex["name"].startswith("Source: "):
                # "Source: events_by_hour[1] -> (Calc ..." has metrics named "Source__events_by_hour[1].<metric>".
                operator = vertex["name"].split(" -> ")[0].replace(": ", "__")
                values = self._subtask_metrics(job_id, vertex["id"], [
                    f"{operator}.numRecordsIn", f"{operator}.currentOutputWatermark", f"{operator}.pendingRecords"])
                watermark = values.get("currentOutputWatermark", {}).get("min")
                pending = values.get("pendingRecords", {}).get("sum")
                sources.append(SourceProgress(
                    name=operator.removeprefix("Source__"),
                    records_in=int(values.get("numRecordsIn", {}).get("sum", 0)),
                    watermark_ms=None if watermark is None or watermark <= _NO_WATERMARK else int(watermark),
                    pending_records=None if pending is None else int(pending),
                ))
            elif "Sink: " in vertex["name"]:
                # A chain ending "... -> Sink: ctr_hourly_sink[6]": the sink operator's own records
                # in, found among the vertex's metric names (the operator's part of the name varies).
                name = vertex["name"].rsplit("Sink: ", 1)[1].split("[", 1)[0]
                listed = self._call(f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics")
                ids = [m["id"] for m in listed if m["id"].startswith("Sink__") and m["id"].endswith(".numRecordsIn")]
                values = self._subtask_metrics(job_id, vertex["id"], ids[:1]) if ids else {}
                sinks.append(SinkProgress(name, int(values.get("numRecordsIn", {}).get("sum", 0))))
        checkpoints = self._call(f"/jobs/{job_id}/checkpoints")
        latest = checkpoints.get("latest") or {}
        completed = latest.get("completed") or {}
        restarts = {m["id"]: m.get("value") for m in self._call(f"/jobs/{job_id}/metrics?get=numRestarts")}
        return JobMetrics(job_id, job["state"], tuple(sources), checkpoints["counts"]["completed"],
                          completed.get("external_path"), (latest.get("restored") or {}).get("id"),
                          tuple(sinks), completed.get("latest_ack_timestamp"),
                          (latest.get("restored") or {}).get("external_path"),
                          int(float(restarts.get("numRestarts") or 0)))

"""Flink's REST API, the part the CTR job is watched and stopped through (no PyFlink import).

Airflow's tasks and the CTR job's integration test use it: which jobs run, stop one with a savepoint (so the
next start resumes exactly where it stopped), and how far its sources have read.
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
    """The job manager does not answer."""


class FlinkJobError(PermanentError):
    """Flink answered, but not as asked (an unknown job, a failed savepoint)."""


@dataclass(frozen=True)
class FlinkJob:
    id: str
    name: str
    state: str
    start_time_ms: int


@dataclass(frozen=True)
class SourceProgress:
    """One source of a job: records it has read and its watermark (ms; None before the first)."""

    name: str
    records_in: int
    watermark_ms: int | None


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

    @property
    def records_in(self) -> int:
        return sum(source.records_in for source in self.sources)


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
            raise FlinkJobError(f"Flink answered {error.code} to {method or 'GET'} {url}: {detail}") from None
        except (urllib.error.URLError, OSError) as error:
            raise FlinkUnavailable(f"the Flink job manager at {self.base_url} does not answer: {error}") from None

    def jobs(self) -> list[FlinkJob]:
        """Every job the cluster knows, newest first."""
        jobs = [FlinkJob(j["jid"], j["name"], j["state"], j["start-time"]) for j in self._call("/jobs/overview")["jobs"]]
        return sorted(jobs, key=lambda job: job.start_time_ms, reverse=True)

    def running(self, name: str) -> FlinkJob | None:
        """The job called ``name`` that is running (or about to), if any."""
        live = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING")
        return next((job for job in self.jobs() if job.name == name and job.state in live), None)

    def stop_with_savepoint(self, job_id: str, target_directory: str | None = None, *, drain: bool = False,
                            timeout: float = 300.0) -> str:
        """Take a savepoint and stop the job (its sinks flush first); return the savepoint's location.

        ``drain=False`` keeps windows open in the savepoint: the next start resumes them, where
        draining would fire every window as if the stream had ended.
        """
        body: dict[str, Any] = {"drain": drain}
        if target_directory:
            body["targetDirectory"] = target_directory
        trigger = self._call(f"/jobs/{job_id}/stop", body)["request-id"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self._call(f"/jobs/{job_id}/savepoints/{trigger}")
            if answer["status"]["id"] == "COMPLETED":
                operation = answer.get("operation") or {}
                if "location" in operation:
                    return operation["location"]
                cause = (operation.get("failure-cause") or {}).get("stack-trace", "no cause given")
                raise FlinkJobError(f"stopping job {job_id} with a savepoint failed: {cause.splitlines()[0]}")
            time.sleep(0.5)
        raise FlinkUnavailable(f"the savepoint of job {job_id} did not complete within {timeout:.0f} s")

    def cancel(self, job_id: str) -> None:
        self._call(f"/jobs/{job_id}?mode=cancel", method="PATCH")

    def metrics(self, job_id: str) -> JobMetrics:
        """Records read and watermark of each source, and the latest completed checkpoint."""
        job = self._call(f"/jobs/{job_id}")
        sources = []
        for vertex in job["vertices"]:
            if not vertex["name"].startswith("Source: "):
                continue
            # "Source: events_by_hour[1] -> (Calc ..." has metrics named "Source__events_by_hour[1].<metric>".
            operator = vertex["name"].split(" -> ")[0].replace(": ", "__")
            names = f"{operator}.numRecordsIn,{operator}.currentOutputWatermark"
            query = urllib.parse.quote(names, safe=",")
            values = {m["id"].rsplit(".", 1)[1]: m for m in
                      self._call(f"/jobs/{job_id}/vertices/{vertex['id']}/subtasks/metrics?get={query}")}
            watermark = values.get("currentOutputWatermark", {}).get("min")
            sources.append(SourceProgress(
                name=operator.removeprefix("Source__"),
                records_in=int(values.get("numRecordsIn", {}).get("sum", 0)),
                watermark_ms=None if watermark is None or watermark <= _NO_WATERMARK else int(watermark),
            ))
        checkpoints = self._call(f"/jobs/{job_id}/checkpoints")
        latest = checkpoints.get("latest") or {}
        return JobMetrics(job_id, job["state"], tuple(sources), checkpoints["counts"]["completed"],
                          (latest.get("completed") or {}).get("external_path"),
                          (latest.get("restored") or {}).get("id"))

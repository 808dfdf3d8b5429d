"""The CTR job's lag and throughput as Prometheus metrics (``avazu_ctr_*``), pushed to the Pushgateway.

The watcher (include.ctr.stream_job) pushes one reading per progress line under job ``ctr_stream``
and the Flink job's name as grouping key; each push replaces the group. When the watcher stops the
job it pushes ``avazu_ctr_job_running 0`` alone, so a stopped job leaves no lag behind to alert on.
The alert rules are in devstack/prometheus/alerts.yml.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Gauge

from include.ctr.stream_job import CtrJobProgress
from include.health.metrics import push_registry

PREFIX = "avazu_ctr_"
JOB = "ctr_stream"


def progress_registry(progress: CtrJobProgress | None, now: float | None = None) -> CollectorRegistry:
    """The reading as gauges; None: the job is not running (only ``job_running 0`` and the report time)."""
    registry = CollectorRegistry()

    def gauge(name: str, help_text: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(PREFIX + name, help_text, labels, registry=registry)

    gauge("job_running", "1 while the CTR job runs on the Flink cluster under a watcher, 0 once the watcher stopped it").set(
        1 if progress is not None and progress.state == "RUNNING" else 0)
    gauge("last_report_timestamp_seconds", "When the CTR job's watcher last reported (Unix seconds)").set(
        time.time() if now is None else now)
    if progress is None:
        return registry
    records = gauge("records_in_total", "Records each source of the CTR job has read since its current run started",
                    ("source",))
    rates = gauge("records_in_per_second", "Records per second each source read since the previous report", ("source",))
    for source, count in progress.records_in.items():
        records.labels(source).set(count)
        rates.labels(source).set(progress.records_per_s.get(source, 0.0))
    gauge("window_rows_written_total", "Window rows the CTR job handed its PostgreSQL sinks (upserts)").set(
        progress.rows_written)
    watermarks = gauge("watermark_timestamp_seconds", "Each source's watermark (Unix seconds; the hour source's "
                                                      "is Avazu event time)", ("source",))
    for source, ms in (("events_by_hour", progress.hour_watermark_ms), ("events_by_arrival", progress.arrival_watermark_ms)):
        if ms is not None:
            watermarks.labels(source).set(ms / 1000)
    if progress.newest_record_ms is not None:
        gauge("newest_record_timestamp_seconds", "Kafka timestamp of the newest record in the CTR job's topic").set(
            progress.newest_record_ms / 1000)
    if progress.watermark_lag_s is not None:
        gauge("watermark_lag_seconds", "How far the arrival watermark trails the newest record in the topic").set(
            progress.watermark_lag_s)
    if progress.pending_records is not None:
        gauge("pending_records", "Records the slower of the CTR job's sources has yet to read (Flink's pendingRecords)").set(
            progress.pending_records)
    if progress.last_checkpoint_ms is not None:
        gauge("last_checkpoint_timestamp_seconds", "When the CTR job's latest checkpoint completed").set(
            progress.last_checkpoint_ms / 1000)
    return registry


def push_progress(url: str, job_name: str, progress: CtrJobProgress | None, timeout: float = 10.0) -> int:
    """Push the reading (None: the job stopped) for Flink job ``job_name``; returns how many series."""
    return push_registry(url, progress_registry(progress), job=JOB, grouping_key={"flink_job": job_name},
                         timeout=timeout)

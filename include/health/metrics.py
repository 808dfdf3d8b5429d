"""pipeline_health's figures as Prometheus metrics, pushed to the Pushgateway (``avazu_pipeline_*``).

One push per run replaces the job's previous group (``push_to_gateway``), so a partition or a
group that went away stops being reported. The last-success timestamp is pushed only by a run
whose checks all passed, under a grouping key of its own, so a failing run leaves the previous
success in place for the "stale last success" alert to measure.
"""

from __future__ import annotations

import time
from urllib.error import URLError

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from include.errors import RetriableError
from include.health.outcome import CheckOutcome

PREFIX = "avazu_pipeline_"
JOB = "pipeline_health"


class PushgatewayUnavailable(RetriableError):
    """The Pushgateway did not take the metrics; the message names its address."""


def build_registry(outcomes: list[CheckOutcome], missing: list[str] = (), now: float | None = None) -> CollectorRegistry:
    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}

    def gauge(name: str, help_text: str, labels: tuple[str, ...]) -> Gauge:
        if name not in gauges:
            gauges[name] = Gauge(PREFIX + name, help_text or name, labels, registry=registry)
        return gauges[name]

    ok = gauge("check_ok", "1 when the check passed in the last run, 0 when it failed or did not finish", ("check",))
    elapsed = gauge("check_duration_seconds", "Seconds the check took in the last run", ("check",))
    for outcome in outcomes:
        ok.labels(outcome.check).set(1 if outcome.ok else 0)
        elapsed.labels(outcome.check).set(outcome.elapsed_s)
        for metric in outcome.metrics:
            names = tuple(sorted(metric.labels))
            target = gauge(metric.name, metric.help, names)
            (target.labels(**metric.labels) if names else target).set(metric.value)
    for name in missing:
        ok.labels(name).set(0)
    gauge("last_run_timestamp_seconds", "When pipeline_health last ran (Unix seconds)", ()).set(
        time.time() if now is None else now)
    return registry


def push_metrics(url: str, outcomes: list[CheckOutcome], missing: list[str] = (), *, job: str = JOB,
                 now: float | None = None, timeout: float = 10.0) -> int:
    """Push the run's figures (and, when every check passed, the last-success time); returns how many series."""
    now = time.time() if now is None else now
    registry = build_registry(outcomes, missing, now)
    pushed = push_registry(url, registry, job=job, timeout=timeout)
    if outcomes and not missing and all(o.ok for o in outcomes):
        success = CollectorRegistry()
        Gauge(PREFIX + "last_success_timestamp_seconds", "When every check of pipeline_health last passed",
              registry=success).set(now)
        push_registry(url, success, job=job, grouping_key={"outcome": "success"}, timeout=timeout)
    return pushed


def push_registry(url: str, registry: CollectorRegistry, *, job: str, grouping_key: dict[str, str] | None = None,
                  timeout: float = 10.0) -> int:
    """Replace the group (job and grouping key) on the Pushgateway with ``registry``; returns how many series.

    The one way the project's metrics reach the Pushgateway: the health run's and the CTR job watcher's.
    """
    try:
        push_to_gateway(url, job=job, registry=registry, grouping_key=grouping_key, timeout=timeout)
    except (URLError, OSError) as error:
        raise PushgatewayUnavailable(f"the Pushgateway at {url} did not take the metrics: "
                                     f"{getattr(error, 'reason', error)}") from None
    return sum(len(list(m.samples)) for m in registry.collect())

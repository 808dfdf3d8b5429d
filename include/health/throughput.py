"""The speed of the recent ingestion runs and of the stream processors.

* Ingestion: each ingest_hour run tells pipeline_health what it did through the asset event it
  emits (rows read, rows/s, seconds); runs with fewer than ``ingest_min_rows`` rows are mostly
  start-up, so their rate says more about the machine's load than the pipeline: they are listed
  as "not judged".
* Stream processors: the records their groups (``processor_groups``: the always-on processors,
  not consumers that run on a schedule) committed per second between the last two lag samples
  (include.health.lag), judged only while records were waiting at both: an idle processor, or one
  that caught up in between, is not a slow one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from include.health.config import matches
from include.health.lag import consumption_rate
from include.health.outcome import CheckOutcome, Metric, first_problems
from include.health.state import load_state

if TYPE_CHECKING:
    from include.health.checks import HealthInputs

_COLUMNS = ["job", "what", "records", "seconds", "per_s", "limit", "verdict"]
NOT_JUDGED = "not judged"


def check_throughput(inputs: HealthInputs) -> CheckOutcome:
    limits = inputs.config.throughput
    rows, problems, metrics = [], [], []
    ingest_rates = []
    # Runs into other raw topics (a sandbox, another deployment) are not this pipeline's.
    runs = [run for run in inputs.runs if run.get("raw_topic", inputs.ingest.topics.raw) == inputs.ingest.topics.raw]
    for run in runs[:limits.recent_runs]:
        rows_read, per_s = int(run.get("rows_read", 0)), float(run.get("rows_per_s", 0.0))
        judged = rows_read >= limits.ingest_min_rows
        slow = judged and per_s < limits.ingest_min_rows_per_s
        if judged:
            ingest_rates.append(per_s)
        if slow:
            problems.append(f"ingestion of hour {run.get('hour')} ran at {per_s:,.0f} rows/s "
                            f"(limit {limits.ingest_min_rows_per_s:,.0f}) over {rows_read:,} rows")
        rows.append({"job": "ingestion", "what": f"hour {run.get('hour')} ({run.get('action', '')})",
                     "records": rows_read, "seconds": f"{float(run.get('duration_s', 0.0)):.1f}",
                     "per_s": f"{per_s:,.0f}", "limit": f"{limits.ingest_min_rows_per_s:,.0f}",
                     "verdict": "SLOW" if slow else ("ok" if judged else NOT_JUDGED)})
    if ingest_rates:
        metrics.append(Metric("throughput_rows_per_second", ingest_rates[0], {"job_kind": "ingestion"},
                              "Rows per second of the newest timed ingestion run"))
    by_group: dict[str, list[float]] = {}
    for key, window in load_state(inputs.config.state_uri).windows.items():
        if not matches(key.group, limits.processor_groups):
            continue
        rate = consumption_rate(window)
        if rate is not None:
            by_group.setdefault(key.group, []).append(rate)
    for group, rates in sorted(by_group.items()):
        rate = sum(rates)
        slow = rate < limits.processor_min_records_per_s
        if slow:
            problems.append(f"group {group} consumed {rate:,.1f} records/s while records waited "
                            f"(limit {limits.processor_min_records_per_s:,.0f})")
        rows.append({"job": "processor", "what": f"group {group} ({len(rates)} partition(s) behind)",
                     "records": "", "seconds": "", "per_s": f"{rate:,.1f}",
                     "limit": f"{limits.processor_min_records_per_s:,.0f}", "verdict": "SLOW" if slow else "ok"})
        metrics.append(Metric("throughput_rows_per_second", rate, {"job_kind": f"processor:{group}"},
                              "Records per second a stream processor's group consumed while records waited"))
    if problems:
        return CheckOutcome("throughput", False, f"{len(problems)} run(s) or processor(s) are too slow: "
                            f"{first_problems(problems)}; look at their task logs (progress lines give the rate)",
                            _COLUMNS, rows, metrics)
    judged = sum(1 for r in rows if r["verdict"] == "ok")
    small = sum(1 for r in rows if r["verdict"] == NOT_JUDGED)
    not_judged = (f"; {small} run(s) under {limits.ingest_min_rows:,} rows not judged (mostly start-up)"
                  if small else "")
    if not judged:
        return CheckOutcome("throughput", True, "nothing to time: no recent ingestion run large enough and no "
                            f"processor with records waiting{not_judged}", _COLUMNS, rows, metrics)
    fastest = f", newest ingestion {ingest_rates[0]:,.0f} rows/s" if ingest_rates else ""
    return CheckOutcome("throughput", True, f"{judged} run(s) and processor(s) timed, none below its limit{fastest}"
                        f"{not_judged}", _COLUMNS, rows, metrics)

"""`make demo`: run the pipeline's DAGs through `airflow dags test` against the local stack.

Each step is one DAG run; its task log goes to a file and what each task returned (its counts) is
printed. Later pipeline stages add their DAGs to STEPS. What a step needs that is not a DAG run
(a generated input file, the Flink job's jars) is a PREPARATION, done first. At the end the CTR the
Flink job wrote is printed: the hours it has closed and the top sites and apps by CTR.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from include.kafka.registry import registry_client

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DemoStep:
    dag_id: str
    what: str
    conf: dict = field(default_factory=dict)
    # The run's logical date (ISO 8601); None runs it "now".
    logical_date: str | None = None


@dataclass(frozen=True)
class DemoPreparation:
    what: str
    run: Callable[[], str]  # does the work, returns one line saying what it did


# The hourly ingestion ingests a generated file of a few Avazu hours, with every kind of broken row.
# It is generated once (deterministic: the same bytes every time), so a second `make demo` finds the
# hours already ingested and writes nothing again - exactly once across re-runs. Four hours: the
# Flink job's hour watermark trails the newest hour by its lateness (an hour), so the first two
# close and are compared with the batch; the last two stay open until later hours arrive.
DEMO_SOURCE = "data/avazu/demo/train_demo_4h.csv.gz"
DEMO_STAGING = "data/avazu/demo/staging_4h"
DEMO_ROWS = 120_000
DEMO_HOURS = (14102100, 14102101, 14102102, 14102103)
DEMO_CHUNK_ROWS = 10_000
# The sampling job's samples, data_stats.json, EDA report and plots of the same file.
DEMO_EDA = "data/avazu/demo/eda"


def _generate_demo_source() -> str:
    from include import storage
    from include.avazu.generator import FaultKind, GeneratorSpec, generate

    path = storage.resolve_local(DEMO_SOURCE)
    if Path(path).is_file():
        return f"{DEMO_SOURCE} is there already"
    truth = generate(GeneratorSpec(DEMO_ROWS, start_hour=DEMO_HOURS[0], hours=len(DEMO_HOURS), seed=2014,
                                   fault_rates={kind: 0.0005 for kind in FaultKind}), path)
    return (f"wrote {truth.rows:,} rows over hours {DEMO_HOURS[0]}..{DEMO_HOURS[-1]} to {DEMO_SOURCE} "
            f"({len(truth.bad_lines()):,} broken rows, {len(truth.faults.get('duplicate_id', [])):,} duplicate ids)")


def _hour_date(hour: int) -> str:
    from include.avazu.contract import hour_to_datetime

    return hour_to_datetime(hour).isoformat()


def _fetch_flink_jars() -> str:
    from devstack.flink import FlinkSettings, job_jars

    jars = job_jars(FlinkSettings())
    return f"{len(jars)} jars in {jars[0].parent.parent}"


PREPARATIONS = [
    DemoPreparation("an Avazu-format file of a few hours with broken rows, for the hourly ingestion",
                    _generate_demo_source),
    # Fetched from Maven Central and built once into the shared cache; ctr_stream's submit ships them.
    DemoPreparation("the Flink CTR job's connector jars and its avro-wire format", _fetch_flink_jars),
]

# ctr_stream, bounded: it stops the job with a savepoint once the job has read and checkpointed every
# record of the raw topic (max_runtime only bounds the wait), and the next demo resumes from it.
CTR_STREAM_CONF = {"stop_when_caught_up": True, "max_runtime": 900, "progress_interval": 10}


def _ingest_and_repair(hour: int) -> list[DemoStep]:
    """An hour's ingestion, then the DLQ reprocessing of its dead letters, as the scheduler runs them (the
    reprocessing is started by the DLQ's new records): the repaired rows reach the raw topic before the
    next hour, so the Flink job counts them in their hour instead of as late records (ctr_late)."""
    return [
        DemoStep("avazu_hourly_ingest", f"Avazu hour {hour}: stage the file, ingest the hour into the raw topic and its DLQ",
                 {"source_uri": DEMO_SOURCE, "staging_uri": DEMO_STAGING, "chunk_rows": DEMO_CHUNK_ROWS},
                 logical_date=_hour_date(hour)),
        DemoStep("dlq_reprocessing", f"hour {hour}'s dead letters: repaired back into the raw topic, retried or parked"),
    ]

STEPS = [
    DemoStep("avazu_sampling", "samples, data_stats.json, an EDA report and plots of the demo file, in one pass",
             {"source_uri": DEMO_SOURCE, "output_uri": DEMO_EDA}),
    DemoStep("kafka_provisioning", "topics and schemas as declared in include/config/topics.yaml"),
    DemoStep("kafka_smoke", "Avro records through the broker and the registry and back",
             {"topic": "smoke_avro_roundtrip", "records": 1000}),
    *[step for hour in DEMO_HOURS for step in _ingest_and_repair(hour)],
    DemoStep("ctr_batch", "the demo hours' CTR aggregates from their staged files, with DuckDB, into ctr_batch_hourly",
             {"hours": list(DEMO_HOURS), "staging_uri": DEMO_STAGING}),
    DemoStep("ctr_stream", "the Flink CTR job on the session cluster: raw topic -> ctr_hourly / ctr_minute in PostgreSQL, "
             "stopped with a savepoint once it has read everything", CTR_STREAM_CONF),
    DemoStep("stream_pipelines_e2e",
             "seeds 003/004: simulators -> stream processors (bounded) -> final consumers, on the declared topics",
             {"web_events": 300, "purchase_events": 300, "bad_ratio": 0.1, "idle_timeout": 5, "max_runtime": 120}),
    DemoStep("dlq_reprocessing", "the analytics DLQ's dead letters (the ingestion's have their outcome: nothing new there)"),
    DemoStep("pipeline_health", "lag, DLQ ratio, reconciliation, stream = batch CTR, throughput, drift and broker checks; "
             "report and metrics",
             {"staging_uri": DEMO_STAGING}),
]


def _fail(message: str) -> None:
    print(f"demo: {message}", file=sys.stderr)
    sys.exit(1)


def _preflight() -> None:
    from devstack.flink import FlinkSettings
    from include.ctr.flink_rest import FlinkRestClient, FlinkUnavailable
    from include.kafka.reachability import ServiceUnreachable, check_broker, check_registry

    try:
        # kafka_default's settings: with KAFKA_AUTH=scram they sign in (scripts/local-env.sh).
        check_broker(json.loads(os.environ["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"], timeout=10)
        url = os.environ["SCHEMA_REGISTRY_URL"]
        check_registry(registry_client(url), url)
    except ServiceUnreachable as error:
        _fail(str(error))
    if not os.environ.get("POSTGRES_URL"):
        _fail("POSTGRES_URL is not set: the CTR store's password file is missing (start the stack, then source "
              "scripts/local-env.sh again)")
    rest_url = FlinkSettings().rest_url
    try:
        FlinkRestClient(rest_url).jobs()
    except FlinkUnavailable as error:
        _fail(f"the Flink session cluster at {rest_url} does not answer ({error}); `make flink-start` starts it")


class MappedResults(list):
    """The return values of a mapped task's instances, in map index order."""


def _task_results(dag_id: str, logical_date: dt.datetime) -> tuple[str, dict[str, object]]:
    """The run's state and each task's return value, read from the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id, DagRun.logical_date == logical_date)
        ).one()
        rows = session.scalars(
            XComModel.get_many(run_id=run.run_id, dag_ids=dag_id, key="return_value")
        ).all()
        ordered = sorted(rows, key=lambda row: (row.timestamp, row.map_index))
        results: dict[str, object] = {}
        for row in ordered:
            value = XComModel.deserialize_value(row)
            if row.map_index >= 0:  # a mapped task: one value per mapped instance
                results.setdefault(row.task_id, MappedResults()).append(value)
            else:
                results[row.task_id] = value
        return run.state, results


def _describe(value: object) -> str:
    if isinstance(value, dict) and "report" in value and "checks" in value:
        # pipeline_health's report: the check table, where the report is and where the metrics went.
        from include.health.report import summary_table
        from include.health.outcome import CheckOutcome

        table = summary_table([CheckOutcome(c["check"], c["status"] == "pass", c["summary"], elapsed_s=c["seconds"])
                               for c in value["checks"]], value["missing"])
        pushed = (f"{value['series_pushed']} series pushed to the Pushgateway at {value['pushgateway']}"
                  if value["pushgateway"] else "no Pushgateway configured: nothing pushed")
        return "\n".join(["the checks:", *(f"{'':8}{line.rstrip()}" for line in table.splitlines()),
                          f"{'':8}report: {value['report']['html']}", f"{'':8}{pushed}"])
    if isinstance(value, dict) and "samples" in value and "ctr" in value:
        # The sampling job's survey: the rows, the CTR and each sample's size.
        from include import storage

        ctr = f"{value['ctr']:.2%}" if value["ctr"] is not None else "-"
        samples = ", ".join(f"{s['name']} {s['rows']:,}" for s in value["samples"])
        return (f"read {value['rows_read']:,} rows = {value['good_rows']:,} good + {value['bad_rows']:,} bad, "
                f"{value['duplicate_rows']:,} duplicate ids, CTR {ctr}\n{'':25}samples: {samples}\n"
                f"{'':25}statistics: {storage.resolve_local(value['stats_uri'])}")
    if isinstance(value, dict) and "report_uri" in value and "plot_uris" in value:
        from include import storage

        plots = sorted(storage.resolve_local(uri) for uri in value["plot_uris"])
        return (f"report: {storage.resolve_local(value['report_uri'])}\n{'':25}{len(plots)} plots in "
                f"{Path(plots[0]).parent if plots else '-'}: {', '.join(Path(p).name for p in plots)}")
    if isinstance(value, dict) and "repaired_rows" in value and "write" in value:
        # A CTR batch of a staged hour: what it counted, and the hours of ctr_batch_hourly it wrote.
        return (f"hour {value['staged_hour']}: {value['rows']:,} rows = {value['good_rows']:,} good + "
                f"{value['repaired_rows']:,} repaired + {value['parked_rows']:,} parked -> ctr_batch_hourly hour(s) "
                f"{', '.join(map(str, value['write']['hours_rebuilt']))} ({value['write']['hourly_rows']:,} rows), "
                f"{value['rows_per_s']:,.0f} rows/s")
    if isinstance(value, dict) and "stop_reason" in value and "rows_written" in value and "savepoint" in value:
        # A ctr_stream run: how the job started, what it read and wrote, how and where it stopped.
        start = ("taken over running" if value["adopted"] else
                 f"resumed from {value['resumed_from']}" if value["resumed_from"] else "started from the committed offsets")
        read = ", ".join(f"{name} {count:,}" for name, count in sorted(value["records_in"].items())) or "nothing yet"
        stop = (f"stopped ({value['stop_reason']}) with a savepoint: {value['savepoint']}" if value["savepoint"]
                else f"left running ({value['stop_reason']})")
        return (f"job {value['job_id']} {start}\n{'':25}records read per source: {read}; "
                f"{value['rows_written']:,} window rows written; {value['progress_lines']} progress line(s)\n"
                f"{'':25}{stop}, after {value['seconds']:.0f} s")
    if isinstance(value, dict) and set(value) == {"check", "status", "summary"}:
        return f"{value['status']}"
    if isinstance(value, dict) and "by_reason" in value and "repaired" in value:
        # A DLQ reprocessing result: the outcome counts, then the table by reason.
        lines = [f"DLQ {value['dlq']}: {value['consumed']:,} consumed = {value['repaired']:,} repaired + "
                 f"{value['retried']:,} retried + {value['parked']:,} parked"
                 + (f"; repairs {', '.join(f'{k} {v}' for k, v in sorted(value['repairs_by_rule'].items()))}"
                    if value["repairs_by_rule"] else "")]
        for reason, counts in sorted(value["by_reason"].items()):
            lines.append(f"{'':25}{reason:<16} " + ", ".join(f"{counts[o]} {o}" for o in ("repaired", "retried", "parked")
                                                              if counts.get(o)))
        return "\n".join(lines)
    if isinstance(value, dict) and "rows_produced" in value and "hour_rows_read" in value:
        # An ingestion result: the counts that matter, not its thirty keys.
        by_reason = ", ".join(f"{k} {v}" for k, v in sorted(value["dead_lettered_by_reason"].items()))
        return (f"{value['action']}: hour {value['hour']} generation {value['generation']}, read {value['rows_read']:,} = "
                f"{value['rows_produced']:,} produced + {value['rows_dead_lettered']:,} dead-lettered"
                f"{f' ({by_reason})' if by_reason else ''} in {value['chunks']} chunks, {value['rows_per_s']:,.0f} rows/s; "
                f"hour complete={value['complete']} with {value['hour_rows_read']:,} rows")
    if isinstance(value, dict) and "rows_per_hour" in value:
        return (f"{value['action']}: {value['rows']:,} rows ({value['bad_rows']:,} bad) in {value['hours']} hours "
                f"{value['first_hour']}..{value['last_hour']} under {value['staging_uri']}")
    if isinstance(value, dict) and "config" in value and "hour" in value:
        config = value["config"]
        return (f"hour {value['hour']} ({value['mode']}), topics {config['raw_topic']}, {config['dlq_topic']}, "
                f"{config['checkpoint_topic']}, chunks of {config['chunk_rows']:,} rows")
    if isinstance(value, dict):
        # Long lists (e.g. which simulated events were made bad) are counted, not printed.
        return ", ".join(f"{k}={f'[{len(v)} items]' if isinstance(v, list) and len(v) > 8 else v}"
                         for k, v in value.items())
    if isinstance(value, list) and value and all(isinstance(v, dict) and "action" in v for v in value):
        # A result table: how many rows took each action.
        actions: dict[str, int] = {}
        for row in value:
            actions[row["action"]] = actions.get(row["action"], 0) + 1
        return f"{len(value)} rows: " + ", ".join(f"{n} {a}" for a, n in sorted(actions.items()))
    return json.dumps(value, default=str)


def run_step(number: int, step: DemoStep, logs: Path) -> dict[str, object]:
    logical_date = (dt.datetime.fromisoformat(step.logical_date) if step.logical_date
                    else dt.datetime.now(dt.timezone.utc).replace(microsecond=0))
    log = logs / (f"demo-{number}-{step.dag_id}.log" if step.logical_date is None
                  else f"demo-{number}-{step.dag_id}-{logical_date:%Y%m%dT%H%M}.log")
    print(f"[{number}/{len(STEPS)}] {step.dag_id}: {step.what}", flush=True)
    began = time.monotonic()
    with log.open("w") as out:
        result = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", step.dag_id,
             logical_date.isoformat(), "--conf", json.dumps(step.conf)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    state, results = _task_results(step.dag_id, logical_date)
    for task_id, value in results.items():
        for item in (value if isinstance(value, MappedResults) else [value]):
            print(f"      {task_id:<18} {_describe(item)}")
    seconds = time.monotonic() - began
    if result.returncode != 0 or state != "success":
        _fail(f"{step.dag_id} ended {state} after {seconds:.0f} s; its task log is {log}")
    print(f"      {step.dag_id} succeeded in {seconds:.0f} s (task log: {log})", flush=True)
    return results


def _print_ingested_hours(results: list[dict[str, object]]) -> None:
    """One line per ingested hour, and the totals: every row read is produced or dead-lettered."""
    hours = [r["ingest_hour"] for r in results if isinstance(r.get("ingest_hour"), dict)]
    if not hours:
        return
    print("Avazu hours in Kafka (this demo's runs; an hour ingested by an earlier demo adds nothing):")
    print(f"      {'hour':<10} {'action':<17} {'rows read':>10} {'produced':>10} {'DLQ':>6}  {'hour total':>10}  dead letters by reason")
    for r in hours:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(r["hour_dead_lettered_by_reason"].items()))
        print(f"      {r['hour']:<10} {r['action']:<17} {r['rows_read']:>10,} {r['rows_produced']:>10,} "
              f"{r['rows_dead_lettered']:>6,}  {r['hour_rows_read']:>10,}  {reasons}")
    read, produced, dead = (sum(r[k] for r in hours) for k in ("hour_rows_read", "hour_rows_produced", "hour_rows_dead_lettered"))
    print(f"      {'total':<10} {'':<17} {'':>10} {'':>10} {'':>6}  {read:>10,}  = {produced:,} in {hours[0]['topics']['raw']} "
          f"+ {dead:,} in {hours[0]['topics']['dlq']}")


# How many of the best values per dimension the demo prints (the dashboard shows its settings' rows).
TOP_ROWS = 5


def _print_stream_ctr() -> None:
    """The CTR the Flink job wrote: its closed hours and the top sites and apps, as the dashboard reads them.

    Fails the demo when the job closed none of the demo hours: ctr_reconciliation would then have
    compared nothing, and its pass would say nothing.
    """
    import dataclasses

    from include.avazu.contract import hour_to_datetime
    from include.ctr.dashboard import RANKED, count, load_dashboard_settings, percent, read_store, shown_value
    from include.ctr.store import connect

    settings = load_dashboard_settings()
    with connect(os.environ["POSTGRES_URL"]) as connection:
        figures = read_store(connection, dataclasses.replace(settings, rows=TOP_ROWS))
    starts = {hour_to_datetime(h).replace(tzinfo=None): h for h in DEMO_HOURS}
    closed = [h for h in DEMO_HOURS if hour_to_datetime(h).replace(tzinfo=None) in {w.start for w in figures.hours}]
    if not closed:
        _fail(f"the Flink job closed none of the demo hours {DEMO_HOURS[0]}..{DEMO_HOURS[-1]}, so ctr_reconciliation "
              "compared nothing; see the ctr_stream task log in .airflow-demo/demo-logs")
    still_open = [h for h in DEMO_HOURS if h not in closed]
    print(f"CTR from the stream (the Flink job's ctr_hourly in PostgreSQL) over the hours it has closed"
          + (f"; {', '.join(map(str, still_open))} stay open until a later hour arrives (the job's hour watermark "
             "trails the newest hour by an hour)" if still_open else "") + ":")
    print(f"      {'Avazu hour':<18} {'impressions':>12} {'clicks':>10} {'CTR':>9}")
    for window in figures.hours:
        label = str(starts.get(window.start, window.start.strftime("%Y-%m-%d %H:%M")))
        print(f"      {label:<18} {count(window.impressions):>12} {count(window.clicks):>10} {percent(window.ctr):>9}")
    print(f"      {'all closed hours':<18} {count(figures.impressions):>12} {count(figures.clicks):>10} "
          f"{percent(figures.ctr):>9}")
    for dimension in ("site_id", "app_id"):
        ranking = figures.rankings[dimension]
        print(f"Top {RANKED[dimension]} by CTR (of the {ranking.ranked:,} with at least "
              f"{count(ranking.min_impressions)} impressions; {ranking.unranked:,} with fewer are not ranked):")
        print(f"      {dimension:<18} {'impressions':>12} {'clicks':>10} {'CTR':>9}")
        for row in ranking.best:
            print(f"      {shown_value(row.value):<18} {count(row.impressions):>12} {count(row.clicks):>10} "
                  f"{percent(row.ctr):>9}")
    if figures.late_records["hour"]:
        print(f"      ({count(figures.late_records['hour'])} records reached the job after their hour had closed: ctr_late)")


def main() -> None:
    logs = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow")) / "demo-logs"
    logs.mkdir(parents=True, exist_ok=True)
    _preflight()
    print(f"Running {len(STEPS)} DAG(s) with `airflow dags test` against Kafka at "
          f"{os.environ['KAFKA_BOOTSTRAP_SERVERS']} and the registry at "
          f"{os.environ['SCHEMA_REGISTRY_URL']}", flush=True)
    for preparation in PREPARATIONS:
        print(f"[prepare] {preparation.what}: {preparation.run()}", flush=True)
    results = [run_step(number, step, logs) for number, step in enumerate(STEPS, start=1)]
    _print_ingested_hours(results)
    _print_stream_ctr()
    prometheus = os.environ.get("PROMETHEUS_URL")
    if prometheus:
        print(f"Prometheus: {prometheus} (try the query avazu_pipeline_check_ok, or "
              "sum by (topic) (kafka_server_brokertopicmetrics_messagesin_total))")
    from devstack.flink import FlinkSettings

    print(f"Flink: {FlinkSettings().rest_url} (the session cluster keeps running for `make dashboard` and ctr_stream, "
          "whose next run resumes the job from its savepoint; `make flink-stop` stops it)")
    print("Demo finished: every step succeeded.")


if __name__ == "__main__":
    main()

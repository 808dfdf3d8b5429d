"""The CTR job: ad_events_raw -> impressions and clicks per window x dimension x value, in PostgreSQL.

Run by PyFlink (``flink run -py flink/ctr_job.py -- --topic ...`` on the session cluster that
``python -m devstack.flink start`` runs, or locally with ``.venv-flink/bin/python``); it only
plans SQL, so no Python worker runs beside the tasks. Two windows, each from a source of its own
(a table has one watermark, and the two windows need two clocks):

- ``ctr_hourly``: tumbling hours of event time, the record's ``hour`` (YYMMDDHH);
- ``ctr_minute``: tumbling minutes of arrival, the Kafka record timestamp.

Each is grouped by the grouping sets (), site_id, app_id, device_type and banner_pos, so one pass
gives the five dimensions ('all' has value ''; a null value is '' too). A record whose window has
already fired when it arrives goes to ``ctr_late`` (window kind, window start, records) instead:
one flag, ``late``, computed once per record, routes it, so every record lands in exactly one of
the two. The flag compares with the newest time the record's Kafka partition has shown (minus the
lateness), kept in checkpointed state (Flink restores no watermark), so a restart does not reopen
a window that had fired.

Exactly once: checkpoints, read_committed, and sinks that upsert on the window key, so a replay
after a restart writes the same rows again instead of adding to them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

log = logging.getLogger("ctr_job")

DIMENSIONS = ("site_id", "app_id", "device_type", "banner_pos")
# Set by devstack.flink's submit (job_environment) from $POSTGRES_URL and the Kafka connection. Every
# secret is in a variable named like one: Flink logs the client's environment and masks only those.
JDBC_ENV = {"url": "CTR_JDBC_URL", "user": "CTR_JDBC_USER", "password": "CTR_JDBC_PASSWORD"}
KAFKA_ENV = ("CTR_KAFKA_PROPERTIES", "CTR_KAFKA_SECRET_PROPERTIES")
# Kafka client properties the sources set from the job's own arguments; the environment may not.
OWN_KAFKA_PROPERTIES = ("bootstrap.servers", "group.id", "isolation.level", "auto.offset.reset")


@dataclass(frozen=True)
class JdbcTarget:
    """Where the sinks write: a JDBC URL (with the schema, if any), user and password."""

    url: str
    user: str
    password: str

    @classmethod
    def from_environment(cls, schema: str | None = None) -> "JdbcTarget":
        missing = [name for name in JDBC_ENV.values() if name not in os.environ]
        if missing:
            raise SystemExit(f"the sinks' database is read from {', '.join(missing)}, not set: submit the job with "
                             "`python -m devstack.flink submit`, which sets them from $POSTGRES_URL")
        url = os.environ[JDBC_ENV["url"]]
        if schema:  # the JDBC driver sets the search_path from currentSchema, so table names stay plain
            url += ("&" if "?" in url else "?") + urlencode({"currentSchema": schema})
        return cls(url, os.environ[JDBC_ENV["user"]], os.environ[JDBC_ENV["password"]])


def kafka_properties_from_environment() -> dict[str, str]:
    """The Java client properties the sources sign in with (none for a broker that asks no one to)."""
    properties: dict[str, str] = {}
    for name in KAFKA_ENV:
        try:
            value = json.loads(os.environ.get(name) or "{}")
        except json.JSONDecodeError:
            value = None
        # The value stays out of the message: it may hold the password.
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise SystemExit(f"{name} is not a JSON object of Kafka client properties: submit the job with "
                             "`python -m devstack.flink submit`, which sets it from the Kafka connection")
        properties.update(value)
    own = sorted(set(properties) & set(OWN_KAFKA_PROPERTIES))
    if own:
        raise SystemExit(f"the Kafka client properties in {' and '.join(KAFKA_ENV)} set {', '.join(own)}, "
                         "which the job sets from its own arguments")
    return properties


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--topic", required=True,
                        help="the topic of Avazu records (devstack.flink submit: the catalog's raw topic)")
    parser.add_argument("--bootstrap-servers", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--registry-url", default=os.environ.get("SCHEMA_REGISTRY_URL"),
                        help="Confluent-API registry the writer schemas are looked up in by id")
    source.add_argument("--writer-schema-file", help="an .avsc to decode every record with, instead of a registry")
    parser.add_argument("--schema", help="the PostgreSQL schema of the tables (default: the role's search_path)")
    parser.add_argument("--group-id", default="ctr-flink",
                        help="the sources commit their offsets as <group-id>.hourly and <group-id>.minute")
    parser.add_argument("--startup-mode", default="group-offsets",
                        choices=("group-offsets", "earliest-offset", "latest-offset"),
                        help="where a start without a savepoint begins (group-offsets: the committed ones, else earliest)")
    parser.add_argument("--checkpoint-interval", default="10 s")
    parser.add_argument("--hour-lateness", default="1 h",
                        help="how far behind the newest hour a record may be before its hour has closed")
    parser.add_argument("--minute-lateness", default="5 s",
                        help="how far behind the newest arrival a record may be before its minute has closed")
    parser.add_argument("--idle-timeout", default="30 s",
                        help="a partition without records this long no longer holds the watermark back")
    parser.add_argument("--jars", default=os.environ.get("CTR_JOB_JARS", ""),
                        help="';'-separated jar paths to ship with the job (devstack.flink sets them)")
    parser.add_argument("--parallelism", type=int, default=None)
    parser.add_argument("--name", default="ctr-aggregates")
    parser.add_argument("--explain", action="store_true", help="print the plan instead of running")
    return parser.parse_args(argv)


def _quote(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _with(options: dict[str, str]) -> str:
    return "WITH (\n  " + ",\n  ".join(f"{_quote(k)} = {_quote(v)}" for k, v in options.items()) + "\n)"


def _interval(text: str) -> str:
    """'1 h' / '30 s' / '5 min' as a Flink SQL INTERVAL literal."""
    amount, _, unit = text.strip().partition(" ")
    units = {"ms": "SECOND", "s": "SECOND", "min": "MINUTE", "h": "HOUR"}
    if unit not in units or not amount.isdigit():
        raise SystemExit(f"{text!r} is not a duration such as '30 s', '5 min' or '1 h'")
    if unit == "ms":
        return f"INTERVAL '{int(amount) / 1000:.3f}' SECOND"
    return f"INTERVAL '{amount}' {units[unit]}"


def source_ddl(name: str, args: argparse.Namespace, group_suffix: str, watermark: str, extra_columns: str,
               kafka_properties: dict[str, str] | None = None) -> str:
    """A Kafka source of the columns the job needs; the format decodes only those. ``kafka_properties``
    (how the client signs in) become ``properties.*`` options: the connector hands them to its
    consumers and admin client."""
    options = {
        "connector": "kafka",
        "topic": args.topic,
        "properties.bootstrap.servers": args.bootstrap_servers,
        "properties.group.id": f"{args.group_id}.{group_suffix}",
        "properties.isolation.level": "read_committed",
        # Where group-offsets starts when the group has none yet.
        "properties.auto.offset.reset": "earliest",
        "scan.startup.mode": args.startup_mode,
        "scan.watermark.idle-timeout": args.idle_timeout.replace(" ", ""),
        "format": "avro-wire",
        # Flink masks options named like a secret (the JAAS config) wherever it prints them.
        **{f"properties.{key}": value for key, value in (kafka_properties or {}).items()},
    }
    if args.writer_schema_file:
        options["avro-wire.writer-schema"] = Path(args.writer_schema_file).read_text()
    else:
        options["avro-wire.url"] = args.registry_url
    return f"""
CREATE TEMPORARY TABLE {name} (
  `hour` INT,
  click INT,
  site_id STRING,
  app_id STRING,
  device_type INT,
  banner_pos INT,
  {extra_columns},
  kafka_partition INT METADATA FROM 'partition' VIRTUAL,
  read_at AS PROCTIME(),
  WATERMARK FOR {watermark}
) {_with(options)}"""


def sink_ddl(name: str, columns: str, key: str, target: JdbcTarget) -> str:
    options = {
        "connector": "jdbc",
        "url": target.url,
        "table-name": name,
        "username": target.user,
        "password": target.password,
        # Rows are flushed at every checkpoint anyway; these bound what waits in between.
        "sink.buffer-flush.max-rows": "5000",
        "sink.buffer-flush.interval": "2s",
        "sink.max-retries": "5",
    }
    return f"CREATE TEMPORARY TABLE {name}_sink ({columns}, PRIMARY KEY ({key}) NOT ENFORCED) {_with(options)}"


def _dimension_columns() -> str:
    """(dimension, value) of a grouping-sets row: which of the four columns it is grouped by, or 'all'."""
    dimension = " ".join(f"WHEN GROUPING({d}) = 0 THEN '{d}'" for d in DIMENSIONS)
    value = " ".join(f"WHEN GROUPING({d}) = 0 THEN COALESCE(CAST({d} AS STRING), '')" for d in DIMENSIONS)
    return f"CASE {dimension} ELSE 'all' END AS dimension, CASE {value} ELSE '' END AS `value`"


def window_insert(sink: str, source: str, time_column: str, size: str) -> str:
    grouping = ", ".join(["()", *(f"({d})" for d in DIMENSIONS)])
    return f"""
INSERT INTO {sink}_sink
SELECT CAST(window_start AS TIMESTAMP(3)), {_dimension_columns()},
       COUNT(*) AS impressions, SUM(CAST(click AS BIGINT)) AS clicks
FROM TABLE(TUMBLE(
  (SELECT * FROM {source}_checked WHERE NOT late), DESCRIPTOR({time_column}), {size}))
GROUP BY window_start, window_end, GROUPING SETS ({grouping})"""


def checked_view(source: str, time_column: str, unit: str, lateness: str) -> str:
    """The source's records with ``late``: true for a record whose window has fired, or would have
    if the watermark followed its Kafka partition alone.

    A window has fired once its last millisecond is at or behind the watermark (the window
    operator's own test). Two clocks are compared with, both never behind the window operator's:

    - the newest time the record's partition has shown, minus the lateness: the watermark of that
      partition alone, kept in keyed state that checkpoints and savepoints hold. Flink restores no
      watermark, so without it a record of a window that fired before a restart would open that
      window again and its partial count overwrite the final row. Each partition is read in
      order, so this clock takes the same values when a restart replays it;
    - CURRENT_WATERMARK, the source's own, for a partition that comes back after being idle
      while the others went on (NULL before the first watermark).
    """
    last_ms = f"TIMESTAMPADD({unit}, 1, FLOOR({time_column} TO {unit})) - INTERVAL '0.001' SECOND"
    return f"""
CREATE TEMPORARY VIEW {source}_checked AS
SELECT *, ({last_ms} <= partition_watermark OR {last_ms} <= source_watermark) IS TRUE AS late
FROM (
  SELECT *, MAX({time_column}) OVER (
      PARTITION BY kafka_partition ORDER BY read_at ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW
    ) - {lateness} AS partition_watermark
  FROM (SELECT *, CURRENT_WATERMARK({time_column}) AS source_watermark FROM {source}))"""


def late_insert(kind: str, source: str, time_column: str, unit: str) -> str:
    return f"""
INSERT INTO ctr_late_sink
SELECT '{kind}', CAST(FLOOR({time_column} TO {unit}) AS TIMESTAMP(3)) AS window_start, COUNT(*) AS records
FROM {source}_checked WHERE late
GROUP BY FLOOR({time_column} TO {unit})"""


def statements(args: argparse.Namespace, target: JdbcTarget,
               kafka_properties: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """(DDL, INSERTs) of the job."""
    counts = "impressions BIGINT, clicks BIGINT"
    ddl = [
        source_ddl("events_by_hour", args, "hourly",
                   f"event_time AS event_time - {_interval(args.hour_lateness)}",
                   "event_time AS TO_TIMESTAMP(CAST(`hour` AS STRING), 'yyMMddHH')", kafka_properties),
        source_ddl("events_by_arrival", args, "minute",
                   f"arrival AS arrival - {_interval(args.minute_lateness)}",
                   "arrival TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL", kafka_properties),
        sink_ddl("ctr_hourly", f"`hour` TIMESTAMP(3), dimension STRING, `value` STRING, {counts}",
                 "`hour`, dimension, `value`", target),
        sink_ddl("ctr_minute", f"`minute` TIMESTAMP(3), dimension STRING, `value` STRING, {counts}",
                 "`minute`, dimension, `value`", target),
        sink_ddl("ctr_late", "window_kind STRING, window_start TIMESTAMP(3), records BIGINT",
                 "window_kind, window_start", target),
    ]
    ddl += [checked_view("events_by_hour", "event_time", "HOUR", _interval(args.hour_lateness)),
            checked_view("events_by_arrival", "arrival", "MINUTE", _interval(args.minute_lateness))]
    inserts = [
        window_insert("ctr_hourly", "events_by_hour", "event_time", "INTERVAL '1' HOUR"),
        window_insert("ctr_minute", "events_by_arrival", "arrival", "INTERVAL '1' MINUTE"),
        late_insert("hour", "events_by_hour", "event_time", "HOUR"),
        late_insert("minute", "events_by_arrival", "arrival", "MINUTE"),
    ]
    return ddl, inserts


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    if not (args.registry_url or args.writer_schema_file):
        raise SystemExit("give --registry-url (or SCHEMA_REGISTRY_URL) or --writer-schema-file")
    target = JdbcTarget.from_environment(args.schema)
    kafka_properties = kafka_properties_from_environment()

    from pyflink.table import EnvironmentSettings, TableEnvironment

    env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    config = env.get_config()
    settings = {
        "pipeline.name": args.name,
        "execution.checkpointing.interval": args.checkpoint_interval.replace(" ", ""),
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        # A stopped or cancelled job keeps its last checkpoint, so it can be resumed from it.
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        # Window starts as UTC wall-clock: Avazu's hours are UTC by convention.
        "table.local-time-zone": "UTC",
    }
    if args.parallelism:
        settings["parallelism.default"] = str(args.parallelism)
    if args.jars:
        settings["pipeline.jars"] = ";".join(Path(j).resolve().as_uri() for j in args.jars.split(";") if j)
    for key, value in settings.items():
        config.set(key, value)
    log.info("CTR job %s on topic %s at %s (%s) -> %s as %s, checkpoints every %s",
             args.name, args.topic, args.bootstrap_servers,
             kafka_properties.get("security.protocol", "PLAINTEXT") + (
                 f" {kafka_properties['sasl.mechanism']}" if "sasl.mechanism" in kafka_properties else ""),
             target.url, target.user, args.checkpoint_interval)

    ddl, inserts = statements(args, target, kafka_properties)
    for statement in ddl:
        env.execute_sql(statement)
    job = env.create_statement_set()
    for insert in inserts:
        job.add_insert_sql(insert)
    if args.explain:
        print(job.explain())
        return
    result = job.execute()
    client = result.get_job_client()
    log.info("submitted job %s", client.get_job_id() if client else "(no job client)")


if __name__ == "__main__":
    main(sys.argv[1:])

"""What the live CTR dashboard shows, read from where it is kept; the page and its tests both call this.

    python -m include.ctr.dashboard        # make dashboard: Streamlit serves include/ctr/dashboard_page.py

* the CTR store (PostgreSQL, ``$POSTGRES_URL``): the Flink job's ``ctr_hourly`` (per Avazu hour),
  ``ctr_minute`` (per minute of arrival) and ``ctr_late``, read in one read-only snapshot, so the
  totals, the charts and the rankings agree with each other;
* the ingestion's checkpoints (include/health/hours.py reads them, as pipeline_health's DLQ check
  does): rows read and dead-lettered per Avazu hour, and the newest hour ingested;
* the raw topic's newest records: when the newest record arrived.

The store holds a window only once the job's watermark has passed its end (the job writes windows
when they fire), so the newest window in each table is where the watermark is at least. How far it
trails the newest record is measured against the newest Avazu hour ingested (event time) and the
newest record's Kafka timestamp (arrival).

The launcher checks the settings and the environment, then runs Streamlit on the page: on
``127.0.0.1:$DASHBOARD_PORT`` (8501), ``DASHBOARD_ADDRESS`` to listen elsewhere. Exit 1 with one
sentence when something it needs is missing. A broker that asks clients to sign in
(``KAFKA_AUTH=scram``) gets its settings from ``--client-config FILE`` (librdkafka ``key=value``
lines, as the stream processors' command line takes them), never from the command line itself.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from confluent_kafka import Consumer

from include.avazu.contract import hour_to_datetime
from include.ctr.store import StoreUnreachable, require_tables
from include.errors import PermanentError
from include.health.hours import HourDeadLetters, dead_letters_by_hour, read_hour_checkpoints
from include.ingest.config import IngestTopics
from include.kafka.client_file import ClientConfigError, client_settings
from include.kafka.reachability import check_broker
from include.kafka.reader import read_to_end, reader_config
from include.paths import CONFIG_DIR, PROJECT_ROOT, settings_file
from include.settings import Checks, read_yaml_file

if TYPE_CHECKING:
    import psycopg

DEFAULT_CONFIG_PATH = CONFIG_DIR / "ctr_dashboard.yaml"
PAGE = Path(__file__).resolve().parent / "dashboard_page.py"
DEFAULT_PORT = 8501
# The launcher hands the page the client settings file through this variable.
CLIENT_CONFIG_ENV = "CTR_DASHBOARD_CLIENT_CONFIG"

# What the page reads of the store.
STORE_TABLES = ("ctr_hourly", "ctr_minute", "ctr_late")
# The dimensions ranked, in the page's order, and what their values are called there.
RANKED = {"site_id": "sites", "app_id": "apps", "device_type": "device types", "banner_pos": "banner positions"}
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
# The newest record is looked for from this long before the ingestion's last commit: the records
# of a chunk are produced before its checkpoint is, within milliseconds of it.
ARRIVAL_MARGIN_MS = 2_000
# Without any checkpoint, the newest record is looked for this far back.
ARRIVAL_LOOKBACK_MS = 3_600_000
BROKER_TIMEOUT_S = 3.0


class DashboardConfigError(PermanentError, ValueError):
    """The dashboard's settings are wrong; the message names the file and the key."""


@dataclass(frozen=True)
class DashboardSettings:
    min_impressions: int = 1000
    rows: int = 10
    minutes: int = 120
    refresh_s: float = 10.0
    source: str = "<defaults>"


_CHECK = Checks(DashboardConfigError)


def parse_dashboard_settings(document: Any, source: str) -> DashboardSettings:
    """Check a parsed YAML document and turn it into :class:`DashboardSettings`."""
    top = _CHECK.mapping(source, document, {"ranking", "minutes", "refresh_s"})
    ranking = _CHECK.mapping(f"{source}: ranking", top.get("ranking"), {"min_impressions", "rows"})
    defaults = DashboardSettings()
    refresh = _CHECK.seconds(f"{source}: refresh_s", top.get("refresh_s", defaults.refresh_s))
    if refresh < 1:
        raise DashboardConfigError(f"{source}: refresh_s must be at least 1 second, not {refresh!r}")
    return DashboardSettings(
        min_impressions=_CHECK.whole(f"{source}: ranking.min_impressions",
                                     ranking.get("min_impressions", defaults.min_impressions), 1),
        rows=_CHECK.whole(f"{source}: ranking.rows", ranking.get("rows", defaults.rows), 1, 1000),
        minutes=_CHECK.whole(f"{source}: minutes", top.get("minutes", defaults.minutes), 1, 7 * 24 * 60),
        refresh_s=refresh,
        source=source,
    )


def load_dashboard_settings(path: str | Path | None = None) -> DashboardSettings:
    """Read and check the settings file (default: :func:`include.paths.settings_file`); one sentence if wrong."""
    path = Path(path) if path is not None else settings_file(DEFAULT_CONFIG_PATH.name)
    return parse_dashboard_settings(read_yaml_file(path, DashboardConfigError, "dashboard settings file"), str(path))


# -- the CTR store -----------------------------------------------------------------------------

@dataclass(frozen=True)
class CtrWindow:
    """One window's impressions and clicks (the 'all' row: every record of the window)."""

    start: dt.datetime
    impressions: int
    clicks: int

    @property
    def ctr(self) -> float | None:
        return self.clicks / self.impressions if self.impressions else None


@dataclass(frozen=True)
class RankedValue:
    value: str
    impressions: int
    clicks: int

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions


@dataclass(frozen=True)
class Ranking:
    """The best and worst values of one dimension by CTR over the closed hours, among those ranked."""

    dimension: str
    min_impressions: int
    best: list[RankedValue]
    worst: list[RankedValue]
    ranked: int  # values with at least min_impressions
    unranked: int  # values with fewer


@dataclass(frozen=True)
class StoreFigures:
    """What the page shows from the CTR store, read in one snapshot."""

    hours: list[CtrWindow]  # every closed Avazu hour, oldest first
    minutes: list[CtrWindow]  # the newest minutes of arrival, oldest first
    rankings: dict[str, Ranking]
    late_records: dict[str, int]  # records that came after their window closed: {'hour': n, 'minute': n}
    newest_minute: dt.datetime | None

    @property
    def impressions(self) -> int:
        return sum(w.impressions for w in self.hours)

    @property
    def clicks(self) -> int:
        return sum(w.clicks for w in self.hours)

    @property
    def ctr(self) -> float | None:
        return self.clicks / self.impressions if self.impressions else None

    @property
    def newest_hour(self) -> dt.datetime | None:
        return self.hours[-1].start if self.hours else None


_RANKING = """
WITH per_value AS (
    SELECT value, SUM(impressions)::bigint AS impressions, SUM(clicks)::bigint AS clicks
    FROM ctr_hourly WHERE dimension = %(dimension)s GROUP BY value
)
SELECT value, impressions, clicks FROM per_value WHERE impressions >= %(min_impressions)s
ORDER BY clicks::double precision / impressions {direction}, impressions DESC, value
LIMIT %(rows)s
"""
_RANKED_COUNTS = """
SELECT COUNT(*) FILTER (WHERE impressions >= %(min_impressions)s), COUNT(*) FILTER (WHERE impressions < %(min_impressions)s)
FROM (SELECT SUM(impressions) AS impressions FROM ctr_hourly WHERE dimension = %(dimension)s GROUP BY value) AS per_value
"""


def read_store(connection: psycopg.Connection, settings: DashboardSettings,
               min_impressions: int | None = None) -> StoreFigures:
    """The store's figures for the page (``min_impressions`` overrides the settings' threshold)."""
    import psycopg

    threshold = settings.min_impressions if min_impressions is None else min_impressions
    if threshold < 1:
        raise DashboardConfigError(f"the minimum impressions to rank a value must be at least 1, not {threshold}")
    # One snapshot: the job's upserts between two queries would make totals and rankings disagree.
    connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    connection.read_only = True
    try:
        with connection.transaction():
            # The dsn of a connection leaves the password out.
            require_tables(connection, STORE_TABLES, connection.info.dsn)
            hours = [CtrWindow(*row) for row in connection.execute(
                "SELECT hour, impressions, clicks FROM ctr_hourly WHERE dimension = 'all' ORDER BY hour")]
            minutes = [CtrWindow(*row) for row in connection.execute(
                "SELECT minute, impressions, clicks FROM ctr_minute WHERE dimension = 'all' "
                "ORDER BY minute DESC LIMIT %s", (settings.minutes,))][::-1]
            rankings = {}
            for dimension in RANKED:
                params = {"dimension": dimension, "min_impressions": threshold, "rows": settings.rows}
                best, worst = ([RankedValue(*row) for row in connection.execute(_RANKING.format(direction=d), params)]
                               for d in ("DESC", "ASC"))
                ranked, unranked = connection.execute(_RANKED_COUNTS, params).fetchone()
                rankings[dimension] = Ranking(dimension, threshold, best, worst, ranked, unranked)
            late = dict(connection.execute(
                "SELECT window_kind, SUM(records)::bigint FROM ctr_late GROUP BY window_kind").fetchall())
    except psycopg.OperationalError as error:
        raise StoreUnreachable(f"the CTR store stopped answering while it was read: "
                               f"{str(error).strip().splitlines()[0]}") from None
    return StoreFigures(hours, minutes, rankings, {"hour": late.get("hour", 0), "minute": late.get("minute", 0)},
                        minutes[-1].start if minutes else None)


# -- the ingestion -----------------------------------------------------------------------------

@dataclass(frozen=True)
class IngestionFigures:
    """The ingestion's side: dead letters per Avazu hour, the newest hour it wrote, when its newest record arrived."""

    hours: list[HourDeadLetters]
    newest_hour: dt.datetime | None  # the newest Avazu hour with a row in the raw topic (its start, UTC)
    last_commit: dt.datetime | None  # the newest checkpoint's time (UTC)
    newest_arrival: dt.datetime | None  # the newest raw record's Kafka timestamp (UTC)


def read_ingestion(kafka_config: dict[str, Any], fetch_schema: Callable[[int], str],
                   topics: IngestTopics, now: float | None = None) -> IngestionFigures:
    """The ingestion's figures from its checkpoints and the raw topic's newest records."""
    # A broker that does not answer is said in a few seconds, not after each read's own timeout.
    check_broker(kafka_config, timeout=BROKER_TIMEOUT_S, where="KAFKA_BOOTSTRAP_SERVERS")
    checkpoints = read_hour_checkpoints(kafka_config, fetch_schema, topics)
    latest = [cp for cps in checkpoints.values() for cp in cps]
    produced = [hour for hour, cps in checkpoints.items() if any(cp.rows_produced for cp in cps)]
    last_commit = max((_naive_utc(cp.updated_at) for cp in latest), default=None)
    if last_commit is not None:
        since_ms = int(last_commit.replace(tzinfo=dt.timezone.utc).timestamp() * 1000) - ARRIVAL_MARGIN_MS
    else:
        since_ms = int((time.time() if now is None else now) * 1000) - ARRIVAL_LOOKBACK_MS
    return IngestionFigures(
        hours=dead_letters_by_hour(checkpoints),
        newest_hour=_naive_utc(hour_to_datetime(max(produced), check_span=False)) if produced else None,
        last_commit=last_commit,
        newest_arrival=newest_arrival(kafka_config, topics.raw, since_ms),
    )


def newest_arrival(kafka_config: dict[str, Any], topic: str, since_ms: int) -> dt.datetime | None:
    """The newest Kafka timestamp among ``topic``'s committed records written since ``since_ms`` (None: none)."""
    consumer = Consumer(reader_config(kafka_config, f"ctr-dashboard-{uuid.uuid4().hex}"))
    try:
        newest = max((m.timestamp()[1] for m in read_to_end(consumer, [topic], since_ms=since_ms, batch=10_000)),
                     default=None)
    finally:
        consumer.close()
    return None if newest is None else dt.datetime.fromtimestamp(newest / 1000, dt.timezone.utc).replace(tzinfo=None)


def _naive_utc(moment: dt.datetime) -> dt.datetime:
    """UTC without a zone, as the store's timestamps are."""
    return moment.astimezone(dt.timezone.utc).replace(tzinfo=None) if moment.tzinfo else moment


# -- the watermark -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ClockProgress:
    """One of the job's two clocks: where its watermark is at least, and the newest record's time on it."""

    clock: str
    watermark: dt.datetime | None  # the end of the newest window in the store
    newest_record: dt.datetime | None

    @property
    def trail(self) -> dt.timedelta | None:
        """How far the watermark trails the newest record (None while either is unknown)."""
        if self.watermark is None or self.newest_record is None:
            return None
        return self.newest_record - self.watermark


def stream_progress(store: StoreFigures, ingestion: IngestionFigures) -> list[ClockProgress]:
    """The event-time (Avazu hour) and arrival (minute) clocks, as the store and the ingestion show them."""
    return [
        ClockProgress("Avazu hour (event time)", store.newest_hour + HOUR if store.newest_hour else None,
                      ingestion.newest_hour),
        ClockProgress("minute of arrival", store.newest_minute + MINUTE if store.newest_minute else None,
                      ingestion.newest_arrival),
    ]


# -- how numbers are written on the page (the tests write the expected ones the same way) ------

def count(n: int) -> str:
    return f"{n:,}"


def percent(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.3%}"


def moment(value: dt.datetime | None, clock: str = "minute") -> str:
    if value is None:
        return "-"
    return value.strftime("%Y-%m-%d %H:%M" if clock.startswith("Avazu") else "%Y-%m-%d %H:%M:%S")


def duration(span: dt.timedelta | None) -> str:
    """``2 h 5 min``, ``1 min 27 s``, ``3.2 s``; a negative span with a minus sign."""
    if span is None:
        return "-"
    seconds = span.total_seconds()
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    if seconds < 60:
        return f"{sign}{seconds:.1f} s"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = ([f"{hours} h"] if hours else []) + ([f"{minutes} min"] if minutes else []) + \
        ([f"{secs} s"] if secs and not hours else [])
    return sign + " ".join(parts or ["0 s"])


def shown_value(value: str) -> str:
    """A dimension value as listed ('' is a record without one)."""
    return value if value else "(none)"


def kafka_settings() -> dict[str, str]:
    """The page's librdkafka settings: ``$KAFKA_BOOTSTRAP_SERVERS`` and the launcher's client settings file, if any."""
    path = os.environ.get(CLIENT_CONFIG_ENV)
    return {"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"], **client_settings(Path(path) if path else None)}


# -- the launcher ------------------------------------------------------------------------------

def streamlit_command(port: int, address: str) -> list[str]:
    """The command that serves the page: Streamlit headless, without usage statistics or file watching."""
    return [sys.executable, "-m", "streamlit", "run", str(PAGE),
            "--server.port", str(port), "--server.address", address, "--server.headless", "true",
            "--server.fileWatcherType", "none", "--server.runOnSave", "false",
            "--browser.gatherUsageStats", "false", "--global.developmentMode", "false",
            "--client.toolbarMode", "minimal", "--theme.base", "light"]


def main(argv: list[str] | None = None) -> int:
    """Check what the page needs, then become the Streamlit server (exec)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m include.ctr.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("DASHBOARD_PORT") or DEFAULT_PORT),
                        help="the port to serve the page on (default: $DASHBOARD_PORT, else 8501)")
    parser.add_argument("--address", default=os.environ.get("DASHBOARD_ADDRESS") or "127.0.0.1",
                        help="the address to listen on (default: $DASHBOARD_ADDRESS, else 127.0.0.1)")
    parser.add_argument("--client-config", type=Path, metavar="FILE",
                        help="librdkafka settings, one key=value a line, for a broker that asks clients to sign in")
    args = parser.parse_args(argv)
    missing = [name for name in ("POSTGRES_URL", "KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL")
               if not os.environ.get(name)]
    if missing:
        parser.exit(1, f"error: the dashboard reads the CTR store and the ingestion's checkpoints, but "
                       f"{', '.join(missing)} is not set: run `make stack-start`, then `. scripts/local-env.sh`\n")
    try:
        settings = load_dashboard_settings()
        if args.client_config is not None:
            client_settings(args.client_config)  # read once here, so a bad file stops the start
            os.environ[CLIENT_CONFIG_ENV] = str(args.client_config.resolve())
    except (DashboardConfigError, ClientConfigError) as error:
        parser.exit(1, f"error: {error}\n")
    print(f"the CTR dashboard: http://{args.address}:{args.port} (store and checkpoints read every "
          f"{settings.refresh_s:g} s; Ctrl-C stops it)", flush=True)
    # The page imports include.* from the project root, wherever Streamlit is started from.
    path = os.environ.get("PYTHONPATH", "")
    if str(PROJECT_ROOT) not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), path) if p)
    command = streamlit_command(args.port, args.address)
    os.execv(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())

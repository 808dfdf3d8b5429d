"""The live CTR dashboard as a person sees it: Streamlit serving the page as a real process, read in headless Chromium.

The CTR store is the local stack's PostgreSQL, in a schema of the test's own migrated by the
project's migrations (the ``ctr_store`` fixture) and filled with known rows; the ingestion's side
is a real ingestion of generated hours into sandbox topics (so its checkpoints and dead letters are
real). The page's numbers are compared with queries of the same tables written here (not the
dashboard's own) and with what the ingestion reported.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from psycopg import sql
from psycopg.conninfo import make_conninfo

from devstack.probes import free_ports
from include.avazu.contract import hour_to_datetime
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.ctr.dashboard import (
    RANKED,
    count,
    duration,
    load_dashboard_settings,
    moment,
    percent,
    read_store,
    shown_value,
)
from include.ctr.store import StoreNotMigrated, where
from include.dead_letters import Origin
from include.health.config import load_health_config
from include.ingest.config import IngestTopics, load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import find_partition, stage_source
from include.ingest.topics import provision_ingest_topics
from include.kafka.reader import read_to_end, reader_config
from include.kafka.registry import registry_client
from include.paths import CONFIG_DIR
from tests.browser import Browser
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INGESTED = (14102100, 14102101, 14102102, 14102103)
ORIGIN = Origin("avazu_hourly_ingest", "manual__dashboard", "ingest_hour", 1)
# The known rows: impressions and clicks per closed hour, dimension and value. Hours 00 and 01 have
# closed; the ingestion has written up to hour 03, so the event-time watermark trails it by 1 h.
# Sites: 'a' (1 of 1) and 'e' (999 impressions at 50%) are under the threshold of 1,000 and must
# not be ranked however high their CTR; app 'x' has exactly 1,000 and is.
KNOWN = {
    14102100: {
        "site_id": {"a": (1, 1), "b": (600, 150), "c": (800, 120)},
        "app_id": {"": (1201, 241), "x": (200, 30)},
        "device_type": {"1": (1000, 200), "0": (401, 71)},
        "banner_pos": {"0": (1401, 271)},
    },
    14102101: {
        "site_id": {"b": (600, 150), "c": (400, 60), "d": (1500, 300), "e": (999, 500), "f": (2000, 100)},
        "app_id": {"": (3200, 600), "x": (800, 110), "y": (1499, 400)},
        "device_type": {"1": (5000, 1000), "4": (499, 110)},
        "banner_pos": {"0": (4000, 700), "1": (1499, 410)},
    },
}
SETTINGS = {"ranking": {"min_impressions": 1000, "rows": 3}, "minutes": 30, "refresh_s": 2}


@pytest.fixture(scope="module")
def ingestion(tmp_path_factory, kafka_config, schema_registry_url):
    """Four generated hours (some rows broken) ingested into sandbox topics: their results by hour."""
    folder = tmp_path_factory.mktemp("dashboard-ingest")
    source = folder / "train.csv.gz"
    generate(GeneratorSpec(8_000, hours=len(INGESTED), seed=21, fault_rates={kind: 0.002 for kind in FaultKind}),
             source)
    stage_source(str(source), str(folder / "staging"))
    suffix = uuid.uuid4().hex[:10]
    topics = IngestTopics(f"dash_raw_{suffix}", f"dash_dlq_{suffix}", f"dash_ckpt_{suffix}")
    registry = registry_client(schema_registry_url)
    provision_ingest_topics(AdminClient(kafka_config), registry, topics)
    config = load_ingest_config().with_topics(topics).replace("test", staging_uri=str(folder / "staging"),
                                                              chunk_rows=1_000)
    results = {hour: HourlyIngestor(find_partition(str(folder / "staging"), hour), config=config,
                                    kafka_config=kafka_config, registry=registry, origin=ORIGIN).run()
               for hour in INGESTED}
    return topics, results


def _fill(url: str, newest_arrival: dt.datetime) -> None:
    """The known rows; three closed minutes, the newest ending before the minute the newest record arrived in."""
    rows = []
    for hour, dimensions in KNOWN.items():
        start = hour_to_datetime(hour).replace(tzinfo=None)
        sites = dimensions["site_id"].values()
        rows.append((start, "all", "", sum(i for i, _ in sites), sum(c for _, c in sites)))
        rows += [(start, dimension, value, i, c) for dimension, values in dimensions.items()
                 for value, (i, c) in values.items()]
    last_minute = newest_arrival.replace(second=0, microsecond=0) - dt.timedelta(minutes=1)
    minutes = [(last_minute - dt.timedelta(minutes=n), "all", "", 100 + n, 10 + n) for n in range(3)]
    with psycopg.connect(url) as connection:
        with connection.cursor() as cursor:
            cursor.executemany("INSERT INTO ctr_hourly VALUES (%s, %s, %s, %s, %s)", rows)
            cursor.executemany("INSERT INTO ctr_minute VALUES (%s, %s, %s, %s, %s)", minutes)
            cursor.executemany("INSERT INTO ctr_late VALUES (%s, %s, %s)",
                               [("hour", dt.datetime(2014, 10, 21, 0), 5), ("minute", last_minute, 2)])


def _newest_arrival(kafka_config, topic: str) -> dt.datetime:
    """The newest Kafka timestamp in the topic, every record read."""
    consumer = Consumer(reader_config(kafka_config, f"dash-test-{uuid.uuid4().hex}"))
    try:
        newest = max(m.timestamp()[1] for m in read_to_end(consumer, [topic], timeout=120, batch=10_000))
    finally:
        consumer.close()
    return dt.datetime.fromtimestamp(newest / 1000, dt.timezone.utc).replace(tzinfo=None)


@pytest.fixture
def dashboard(tmp_path, ingestion, ctr_store):
    """``python -m include.ctr.dashboard`` on a port of its own, reading the test's schema and sandbox topics."""
    topics, _ = ingestion
    config_dir = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config_dir)
    declared = yaml.safe_load((config_dir / "topics.yaml").read_text())
    for topic in declared["topics"]:
        topic["name"] = topics.as_dict().get(topic["role"], topic["name"])
    (config_dir / "topics.yaml").write_text(yaml.safe_dump(declared))
    (config_dir / "ctr_dashboard.yaml").write_text(yaml.safe_dump(SETTINGS))
    (port,) = free_ports(1)
    env = {**os.environ, "POSTGRES_URL": ctr_store.url, "AVAZU_CONFIG_DIR": str(config_dir), "DASHBOARD_PORT": str(port)}
    log = (tmp_path / "dashboard.log").open("w")
    process = subprocess.Popen([sys.executable, "-m", "include.ctr.dashboard"], cwd=tmp_path, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, f"the dashboard exited: {(tmp_path / 'dashboard.log').read_text()[-2000:]}"
        try:
            return httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok"
        except httpx.HTTPError:
            return False

    wait_for("the dashboard answering", healthy, timeout=90, interval=0.5)
    yield {"url": url, "store": ctr_store.url, "topics": topics, "log": tmp_path / "dashboard.log"}
    process.terminate()
    process.wait(30)
    log.close()


def _late(url: str, kind: str) -> tuple[int]:
    with psycopg.connect(url) as connection:
        return connection.execute("SELECT SUM(records) FROM ctr_late WHERE window_kind = %s", (kind,)).fetchone()


# What the page shows, read from the DOM: each section is a container whose CSS class is st-key-<its key>.
_METRICS = """Object.fromEntries(Array.from(document.querySelectorAll('.st-key-totals [data-testid=stMetric]'))
  .map(m => [m.querySelector('[data-testid=stMetricLabel]').textContent.trim(),
             m.querySelector('[data-testid=stMetricValue]').textContent.trim()]))"""


def _table(key: str) -> str:
    """The rows of the table in the section with this key (header first), each a list of cell texts."""
    return (f"(() => {{ const t = document.querySelector('.st-key-{key} table'); if (!t) return null; "
            "return Array.from(t.querySelectorAll('tr')).map(r => Array.from(r.querySelectorAll('th, td'))"
            ".map(c => c.textContent.trim())); })()")


def _rows_by_first_column(table: list[list[str]]) -> dict[str, list[str]]:
    header, *rows = table
    return {row[0]: dict(zip(header, row)) for row in rows}


def test_the_page_shows_what_the_tables_and_the_checkpoints_hold(dashboard, ingestion, kafka_config, tmp_path):
    topics, results = ingestion
    arrival = _newest_arrival(kafka_config, topics.raw)
    _fill(dashboard["store"], arrival)
    threshold, rows = SETTINGS["ranking"]["min_impressions"], SETTINGS["ranking"]["rows"]

    # The same tables, queried here.
    with psycopg.connect(dashboard["store"]) as connection:
        impressions, clicks, hours, newest_hour = connection.execute(
            "SELECT SUM(impressions), SUM(clicks), COUNT(*), MAX(hour) FROM ctr_hourly WHERE dimension = 'all'").fetchone()
        (newest_minute,) = connection.execute("SELECT MAX(minute) FROM ctr_minute").fetchone()
        (late,) = _late(dashboard["store"], "hour")
        per_value = {dimension: connection.execute(
            "SELECT value, SUM(impressions), SUM(clicks) FROM ctr_hourly WHERE dimension = %s GROUP BY value",
            (dimension,)).fetchall() for dimension in RANKED}

    browser = Browser(tmp_path)
    try:
        browser.open(dashboard["url"])
        browser.wait_until("every section", " && ".join(
            [_table("watermark"), _table("dlq"), _table("best_site_id"), _METRICS + "['CTR']"]), timeout=90)
        # The page reads again every refresh_s: the rows were written before it loaded, so it shows them all.
        metrics = browser.wait_until("the totals of the known rows", f"(() => {{ const m = {_METRICS}; "
                                     f"return m['Impressions'] === {json.dumps(count(impressions))} && m; }})()")
        assert metrics == {"Impressions": count(impressions), "Clicks": count(clicks), "CTR": percent(clicks / impressions),
                           "Avazu hours closed": count(hours), "Late records": count(late)}
        assert (impressions, clicks, hours, late) == (6900, 1381, 2, 5)

        text = browser.evaluate("document.body.textContent")
        assert f"Only values with at least {count(threshold)} impressions are ranked" in text
        (late_minutes,) = _late(dashboard["store"], "minute")
        assert f"Late: {count(late_minutes)} records arrived after their minute had closed" in text
        assert f"Late: {count(late)} records came after their Avazu hour had closed" in text
        for dimension, name in RANKED.items():
            values = [(value, i, c) for value, i, c in per_value[dimension]]
            ranked = [v for v in values if v[1] >= threshold]
            best = sorted(ranked, key=lambda v: (-v[2] / v[1], -v[1], v[0]))[:rows]
            worst = sorted(ranked, key=lambda v: (v[2] / v[1], -v[1], v[0]))[:rows]
            for key, expected in ((f"best_{dimension}", best), (f"worst_{dimension}", worst)):
                table = browser.evaluate(_table(key))
                assert table[0] == ["rank", "value", "impressions", "clicks", "CTR"]
                assert table[1:] == [[str(n), shown_value(v), count(i), count(c), percent(c / i)]
                                     for n, (v, i, c) in enumerate(expected, 1)], key
            assert (f"{count(len(ranked))} {name} ranked ({dimension}), {count(len(values) - len(ranked))} with fewer "
                    f"than {count(threshold)} impressions not.") in text
        # The sites 'a' (100%) and 'e' (50%) have the highest CTR and are not ranked; 'b' tops the list.
        assert [row[1] for row in browser.evaluate(_table("best_site_id"))[1:]] == ["b", "d", "c"]

        clocks = _rows_by_first_column(browser.evaluate(_table("watermark")))
        newest_ingested = hour_to_datetime(max(h for h, r in results.items() if r.hour_rows_produced)).replace(tzinfo=None)
        watermark = newest_hour + dt.timedelta(hours=1)
        assert clocks["Avazu hour (event time)"] == {
            "clock": "Avazu hour (event time)", "watermark at least": moment(watermark, "Avazu"),
            "newest record": moment(newest_ingested, "Avazu"), "trails by": duration(newest_ingested - watermark)}
        assert clocks["Avazu hour (event time)"]["trails by"] == "1 h"
        watermark = newest_minute + dt.timedelta(minutes=1)
        assert clocks["minute of arrival"] == {
            "clock": "minute of arrival", "watermark at least": moment(watermark), "newest record": moment(arrival),
            "trails by": duration(arrival - watermark)}

        dlq = _rows_by_first_column(browser.evaluate(_table("dlq")))
        limit = load_health_config().dlq.max_ratio
        assert set(dlq) == {str(hour) for hour in INGESTED}
        for hour, result in results.items():
            assert result.hour_rows_dead_lettered > 0, "the generated hours have broken rows"
            ratio = result.hour_rows_dead_lettered / result.hour_rows_read
            assert dlq[str(hour)] == {"hour": str(hour), "rows read": count(result.hour_rows_read),
                                      "dead-lettered": count(result.hour_rows_dead_lettered), "DLQ ratio": percent(ratio),
                                      "over the limit": "yes" if ratio > limit else ""}

        # Live: an hour the job closes now shows at the next read, without reloading the page.
        with psycopg.connect(dashboard["store"]) as connection:
            connection.execute("INSERT INTO ctr_hourly VALUES ('2014-10-21 02:00', 'all', '', 1000, 100)")
        browser.wait_until("the newly closed hour", f"(() => {{ const m = {_METRICS}; "
                           f"return m['Impressions'] === {json.dumps(count(impressions + 1000))}; }})()", timeout=30)
        # The page draws its sections in order as it reads them: the watermark comes after the checkpoints.
        browser.wait_until("the watermark an hour further", f"({_table('watermark')} || []).some(r => r[0] === "
                           f"'Avazu hour (event time)' && r[1] === {json.dumps(moment(newest_hour + dt.timedelta(hours=2), 'Avazu'))})",
                           timeout=30)
        clocks = _rows_by_first_column(browser.evaluate(_table("watermark")))
        assert clocks["Avazu hour (event time)"]["trails by"] == duration(dt.timedelta(0))
        shot = browser.screenshot(tmp_path / "dashboard.png")
        assert shot.read_bytes()[:4] == b"\x89PNG"
    finally:
        browser.close()
    assert "Traceback" not in dashboard["log"].read_text()


def test_the_figures_module_reads_the_known_rows(ctr_store):
    settings = load_dashboard_settings()
    _fill(ctr_store.url, dt.datetime(2026, 12, 3, 17, 11, 5))
    with psycopg.connect(ctr_store.url) as connection:
        figures = read_store(connection, settings, min_impressions=1000)
    assert (figures.impressions, figures.clicks, len(figures.hours)) == (6900, 1381, 2)
    assert [w.start for w in figures.minutes] == [dt.datetime(2026, 12, 3, 17, m) for m in (8, 9, 10)]
    sites = figures.rankings["site_id"]
    assert [(v.value, v.impressions, v.clicks) for v in sites.best] == [
        ("b", 1200, 300), ("d", 1500, 300), ("c", 1200, 180), ("f", 2000, 100)]
    assert [v.value for v in sites.worst] == ["f", "c", "d", "b"] and (sites.ranked, sites.unranked) == (4, 2)
    apps = figures.rankings["app_id"]
    assert [(v.value, v.ctr) for v in apps.best] == [("y", 400 / 1499), ("", 841 / 4401), ("x", 140 / 1000)]
    assert (apps.ranked, apps.unranked) == (3, 0)
    assert figures.late_records == {"hour": 5, "minute": 2}


def test_a_store_without_the_migrations_says_what_to_run(postgres_url, unique_name):
    schema = unique_name("bare")
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            with psycopg.connect(make_conninfo(postgres_url, options=f"-c search_path={schema}")) as connection:
                with pytest.raises(StoreNotMigrated) as raised:
                    read_store(connection, load_dashboard_settings())
            assert str(raised.value) == (f"the CTR store at {where(postgres_url)} has no table ctr_hourly (nor 2 more): "
                                         "apply its migrations with `python -m include.ctr.migrate`")
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))

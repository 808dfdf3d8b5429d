"""The CTR dashboard's pure parts: its settings, the watermark's two clocks, dead letters per hour, how numbers read."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest

from include.ctr.dashboard import (
    CLIENT_CONFIG_ENV,
    CtrWindow,
    DashboardConfigError,
    IngestionFigures,
    StoreFigures,
    duration,
    kafka_settings,
    load_dashboard_settings,
    main,
    parse_dashboard_settings,
    percent,
    stream_progress,
)
from include.health.hours import dead_letters_by_hour
from include.ingest.checkpoint import Checkpoint

T0 = dt.datetime(2014, 10, 21, 0, 0)


def test_the_shipped_settings_load():
    settings = load_dashboard_settings()
    assert settings.min_impressions >= 100 and settings.rows >= 1 and settings.refresh_s >= 1


@pytest.mark.parametrize("document, message", [
    ({"ranking": {"min_impression": 5}}, "x.yaml: ranking: unknown key 'min_impression' (did you mean 'min_impressions'?)"),
    ({"ranking": {"min_impressions": 0}}, "x.yaml: ranking.min_impressions must be a whole number of at least 1, not 0"),
    ({"minutes": "many"}, "x.yaml: minutes must be a whole number 1..10080, not 'many'"),
    ({"refresh_s": 0.5}, "x.yaml: refresh_s must be at least 1 second, not 0.5"),
    ({"refresh": 5}, "x.yaml: unknown key 'refresh' (did you mean 'refresh_s'?)"),
])
def test_wrong_settings_fail_in_one_sentence_naming_the_key(document, message):
    with pytest.raises(DashboardConfigError) as raised:
        parse_dashboard_settings(document, "x.yaml")
    assert str(raised.value) == message


def test_missing_environment_stops_the_launcher_in_one_sentence(monkeypatch, capsys):
    for name in ("POSTGRES_URL", "SCHEMA_REGISTRY_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    with pytest.raises(SystemExit) as raised:
        main([])
    assert raised.value.code == 1
    assert ("POSTGRES_URL, SCHEMA_REGISTRY_URL is not set: run `make stack-start`, then `. scripts/local-env.sh`"
            in capsys.readouterr().err)


def test_an_unreadable_client_settings_file_stops_the_launcher(monkeypatch, capsys, tmp_path):
    for name in ("POSTGRES_URL", "KAFKA_BOOTSTRAP_SERVERS", "SCHEMA_REGISTRY_URL"):
        monkeypatch.setenv(name, "set")
    (tmp_path / "client.properties").write_text("sasl.username=pipeline\nnot a setting\n")
    with pytest.raises(SystemExit) as raised:
        main(["--client-config", str(tmp_path / "client.properties")])
    assert raised.value.code == 1
    assert capsys.readouterr().err == f"error: {tmp_path / 'client.properties'}, line 2: expected key=value (a librdkafka setting)\n"


def test_the_page_signs_in_with_the_launchers_client_settings(monkeypatch, tmp_path):
    (tmp_path / "client.properties").write_text("# the pipeline principal\nsecurity.protocol=SASL_SSL\n")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    monkeypatch.setenv(CLIENT_CONFIG_ENV, str(tmp_path / "client.properties"))
    assert kafka_settings() == {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_SSL"}
    monkeypatch.delenv(CLIENT_CONFIG_ENV)
    assert kafka_settings() == {"bootstrap.servers": "127.0.0.1:9092"}


def _store(hours: int, minutes: list[dt.datetime]) -> StoreFigures:
    return StoreFigures([CtrWindow(T0 + dt.timedelta(hours=h), 100, 17) for h in range(hours)],
                        [CtrWindow(m, 10, 1) for m in minutes], {}, {"hour": 0, "minute": 0},
                        minutes[-1] if minutes else None)


def test_the_watermark_is_the_end_of_the_newest_window_and_trails_the_newest_record():
    arrived = dt.datetime(2026, 12, 3, 17, 11, 5)
    store = _store(2, [dt.datetime(2026, 12, 3, 17, 9), dt.datetime(2026, 12, 3, 17, 10)])
    ingestion = IngestionFigures([], newest_hour=T0 + dt.timedelta(hours=3), last_commit=arrived,
                                 newest_arrival=arrived)
    hour, minute = stream_progress(store, ingestion)
    # Hours 00 and 01 closed: the watermark is at 02:00 at least; the newest record is of hour 03.
    assert (hour.watermark, hour.newest_record, hour.trail) == (T0 + dt.timedelta(hours=2), T0 + dt.timedelta(hours=3),
                                                                dt.timedelta(hours=1))
    assert minute.watermark == dt.datetime(2026, 12, 3, 17, 11) and minute.trail == dt.timedelta(seconds=5)


def test_an_empty_store_or_ingestion_has_no_trail():
    hour, minute = stream_progress(_store(0, []), IngestionFigures([], None, None, None))
    assert (hour.watermark, hour.trail, minute.watermark, minute.trail) == (None, None, None, None)


def test_dead_letters_per_hour_add_every_source_of_the_hour():
    checkpoints = {
        14102100: [Checkpoint("a", 14102100, rows_read=1000, rows_produced=990, rows_dead_lettered=10,
                              dead_lettered_by_reason={"BAD_HEX": 10}),
                   Checkpoint("b", 14102100, rows_read=500, rows_produced=495, rows_dead_lettered=5,
                              dead_lettered_by_reason={"BAD_HEX": 2, "FIELD_COUNT": 3})],
        14102101: [Checkpoint("a", 14102101)],
    }
    first, second = dead_letters_by_hour(checkpoints)
    assert (first.hour, first.sources, first.rows_read, first.dead_lettered) == (14102100, 2, 1500, 15)
    assert first.ratio == 0.01 and first.by_reason == Counter({"BAD_HEX": 12, "FIELD_COUNT": 3})
    assert (second.rows_read, second.ratio) == (0, 0.0)


@pytest.mark.parametrize("span, text", [
    (dt.timedelta(seconds=5), "5.0 s"),
    (dt.timedelta(seconds=87), "1 min 27 s"),
    (dt.timedelta(hours=1), "1 h"),
    (dt.timedelta(hours=2, minutes=5, seconds=9), "2 h 5 min"),
    (dt.timedelta(minutes=-3), "-3 min"),
    (None, "-"),
])
def test_durations_read_as_a_person_says_them(span, text):
    assert duration(span) == text


def test_rates_are_percentages_with_three_decimals():
    assert (percent(1 / 6), percent(None), percent(0.0)) == ("16.667%", "-", "0.000%")

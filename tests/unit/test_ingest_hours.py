"""Which Avazu hour a run ingests: backfill (its own 2014 hour), replay (today's hour, offset and wrapped), auto."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pendulum
import pytest

from include.avazu.contract import AVAZU_HOURS
from include.ingest.hours import HourMappingError, Mode, assign_hour, in_avazu_span, replay_hour


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_backfill_ingests_the_runs_own_hour():
    assert assign_hour(utc(2014, 10, 21, 5), Mode.BACKFILL).hour == 14102105
    assert assign_hour(utc(2014, 10, 30, 23), "backfill").hour == 14103023
    # A manual run at 05:37 stands for the hour 05:00.
    assert assign_hour(utc(2014, 10, 21, 5, 37, 12), "backfill").hour == 14102105


def test_backfill_outside_the_span_fails_with_the_dates():
    with pytest.raises(HourMappingError, match=r"2014-10-31T00:00:00\+00:00 is outside the Avazu span 2014-10-21T00:00Z..2014-10-30T23:00Z"):
        assign_hour(utc(2014, 10, 31, 0), "backfill")


def test_aware_datetimes_in_other_zones_and_pendulum_work():
    assert assign_hour(datetime(2014, 10, 21, 7, tzinfo=timezone(timedelta(hours=2))), "backfill").hour == 14102105
    assert assign_hour(pendulum.datetime(2014, 10, 21, 3, tz="UTC"), "auto").hour == 14102103
    with pytest.raises(HourMappingError, match="no time zone"):
        assign_hour(datetime(2014, 10, 21, 3), "backfill")


def test_replay_moves_back_by_the_offset():
    # 2024-01-01T00:00 minus an offset that lands exactly on the first Avazu hour.
    offset = int((utc(2024, 1, 1) - utc(2014, 10, 21)) / timedelta(hours=1))
    assert replay_hour(utc(2024, 1, 1, 0), offset) == 14102100
    assert replay_hour(utc(2024, 1, 1, 13), offset) == 14102113
    assert replay_hour(utc(2024, 1, 10, 23), offset) == 14103023


def test_replay_wraps_into_the_ten_days_and_keeps_the_hour_of_day():
    offset = int((utc(2024, 1, 1) - utc(2014, 10, 21)) / timedelta(hours=1))
    assert replay_hour(utc(2024, 1, 11, 0), offset) == 14102100  # day 11 starts the data set again
    assert replay_hour(utc(2023, 12, 31, 22), offset) == 14103022  # and the day before is its last day
    for hours in range(0, 2000, 37):
        moment = utc(2026, 3, 1) + timedelta(hours=hours)
        assert replay_hour(moment, 0) % 100 == moment.hour  # 240 h is a whole number of days
    assert {replay_hour(utc(2026, 3, 1) + timedelta(hours=h), 0) for h in range(240)} == set(AVAZU_HOURS)


def test_replay_without_wrap_refuses_hours_outside_the_span():
    with pytest.raises(HourMappingError, match="set replay.wrap or change replay.offset_hours"):
        replay_hour(utc(2026, 3, 1), 0, wrap=False)
    assert replay_hour(utc(2014, 10, 22, 4), 24, wrap=False) == 14102104


def test_auto_picks_backfill_inside_the_span_and_replay_outside():
    inside = assign_hour(utc(2014, 10, 25, 8), "auto")
    assert (inside.hour, inside.mode) == (14102508, "backfill")
    outside = assign_hour(utc(2026, 3, 1, 8), "auto")
    assert outside.mode == "replay" and outside.hour == replay_hour(utc(2026, 3, 1, 8), 0)


def test_auto_treats_every_run_of_an_airflow_backfill_as_a_backfill():
    # A backfill range that overshoots the span must fail, not quietly replay other hours.
    with pytest.raises(HourMappingError, match="outside the Avazu span"):
        assign_hour(utc(2014, 10, 31, 0), "auto", backfill_run=True)


def test_in_span_edges():
    assert in_avazu_span(utc(2014, 10, 21, 0)) and in_avazu_span(utc(2014, 10, 30, 23, 59))
    assert not in_avazu_span(utc(2014, 10, 20, 23, 59)) and not in_avazu_span(utc(2014, 10, 31, 0))

"""Which Avazu hour a scheduled run ingests: the 2014 hour itself (backfill) or a replayed one.

The ingestion DAG runs hourly; a run stands for the hour its logical date falls in. In
*backfill* mode that is the real Avazu hour (``airflow backfill create`` over
2014-10-21..2014-10-30). In *replay* mode it is today's hour, moved back by a configured offset
and, with ``wrap``, folded into the data set's 240 hours, so a scheduler started today streams
the data set hour by hour and starts over after ten days. *auto* picks backfill for hours inside
the Avazu span (and for every run of an Airflow backfill) and replay for everything else, so
both work without a flag.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone

from include.avazu.contract import AVAZU_HOURS, datetime_to_hour, hour_to_datetime
from include.errors import PermanentError

_HOUR = timedelta(hours=1)
_FIRST = hour_to_datetime(AVAZU_HOURS[0])
_SPAN_HOURS = len(AVAZU_HOURS)


class Mode(str, enum.Enum):
    """How a run's data interval becomes an Avazu hour."""

    AUTO = "auto"
    BACKFILL = "backfill"
    REPLAY = "replay"


class HourMappingError(PermanentError, ValueError):
    """A run's interval cannot be mapped onto an Avazu hour in the chosen mode."""


@dataclass(frozen=True)
class HourAssignment:
    """The Avazu hour a run ingests, the mode that chose it and the wall-clock hour it stands for."""

    hour: int
    mode: str
    interval_start: str

    def as_dict(self) -> dict:
        return asdict(self)


def floor_to_hour(moment: datetime) -> datetime:
    """The start of the UTC hour ``moment`` falls in (manual runs can start at any minute)."""
    if moment.tzinfo is None:
        raise HourMappingError("the run's date has no time zone; Airflow always gives an aware datetime")
    utc = moment.astimezone(timezone.utc)
    # A plain datetime, also for pendulum input (pendulum's arithmetic returns its own types).
    return datetime(utc.year, utc.month, utc.day, utc.hour, tzinfo=timezone.utc)


def in_avazu_span(moment: datetime) -> bool:
    """True when the hour ``moment`` falls in is one of the data set's 240 hours."""
    return 0 <= (floor_to_hour(moment) - _FIRST) // _HOUR < _SPAN_HOURS


def replay_hour(moment: datetime, offset_hours: int, wrap: bool = True) -> int:
    """The Avazu hour that the wall-clock hour of ``moment`` replays.

    ``offset_hours`` is subtracted first; with ``wrap`` the result is folded into the span
    (ten days, a multiple of 24 hours, so the hour of the day is kept when the offset is a
    multiple of 24). Without ``wrap`` an hour outside the span is an error.
    """
    start = floor_to_hour(moment) - timedelta(hours=offset_hours)
    index = (start - _FIRST) // _HOUR
    if not 0 <= index < _SPAN_HOURS:
        if not wrap:
            raise HourMappingError(
                f"replay maps {floor_to_hour(moment).isoformat()} with offset {offset_hours} h to "
                f"{start.isoformat()}, outside the Avazu span {_FIRST.isoformat()}..{(_FIRST + (_SPAN_HOURS - 1) * _HOUR).isoformat()}; "
                "set replay.wrap or change replay.offset_hours")
        index %= _SPAN_HOURS
    return AVAZU_HOURS[index]


def assign_hour(interval_start: datetime, mode: Mode | str, offset_hours: int = 0, wrap: bool = True,
                backfill_run: bool = False) -> HourAssignment:
    """Map a run's hour onto the Avazu hour it ingests (see the module docstring).

    ``backfill_run`` says Airflow created the run as part of a backfill: in auto mode such a run
    always means its own 2014 hour, so a backfill range that overshoots the span fails loudly
    instead of quietly replaying other hours.
    """
    mode = Mode(mode)
    start = floor_to_hour(interval_start)
    if mode is Mode.AUTO:
        mode = Mode.BACKFILL if backfill_run or in_avazu_span(start) else Mode.REPLAY
    if mode is Mode.BACKFILL:
        if not in_avazu_span(start):
            raise HourMappingError(
                f"backfill mode ingests the run's own hour, but {start.isoformat()} is outside the Avazu span "
                f"2014-10-21T00:00Z..2014-10-30T23:00Z; backfill those dates, or use replay or auto mode")
        hour = datetime_to_hour(start)
    else:
        hour = replay_hour(start, offset_hours, wrap)
    return HourAssignment(hour=hour, mode=mode.value, interval_start=start.isoformat())

"""Stream = batch: the Flink job's hourly CTR aggregates against the batch computation's, exactly.

For every hour whose batch (the ``ctr_batch`` DAG, :mod:`include.ctr.batch`) was computed in the
lookback, ``ctr_hourly`` (the stream) must hold the very rows of ``ctr_batch_hourly`` (the batch):
the same (dimension, value) pairs with the same impressions and clicks, the five dimensions each.

Only the hours the stream has closed are judged. The job writes an hour once its watermark has
passed the hour's end, and hours close in order, so every hour up to the newest one in
``ctr_hourly`` is closed; a later one is still open (its rows are not written yet) and is reported
as such. Records that reach the job after their hour closed are counted in ``ctr_late`` (per hour,
without dimensions) and in no aggregate: an hour that has them names them beside its difference.

The sinks flush every few seconds and at each checkpoint, so an hour can be read half written:
when a reading differs, the store is read again after ``settle_s`` and only what still differs is a
finding. The comparison itself (:func:`compare_hour`, :func:`judge`) is pure.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from include.avazu.contract import datetime_to_hour
from include.ctr.batch import ALL, DIMENSIONS, hour_timestamp
from include.health.outcome import CheckOutcome, Metric, first_problems

if TYPE_CHECKING:
    import psycopg

    from include.health.checks import HealthInputs

Key = tuple[str, str]  # (dimension, value)
Figures = tuple[int, int]  # (impressions, clicks)
_ORDER = {name: index for index, name in enumerate((ALL, *DIMENSIONS))}
TABLES = ("ctr_hourly", "ctr_late", "ctr_batch_hourly", "ctr_batch_parts", "ctr_batch_runs")
COLUMNS = ["hour", "stream", "batch_impressions", "stream_impressions", "late_records", "repaired_in_batch",
           "rows_compared", "rows_differing", "verdict"]


@dataclass(frozen=True)
class Difference:
    """One (hour, dimension, value) whose figures differ; None: that side has no such row."""

    hour: int
    dimension: str
    value: str
    stream: Figures | None
    batch: Figures | None

    @property
    def impressions(self) -> int:
        """Stream minus batch."""
        return (self.stream or (0, 0))[0] - (self.batch or (0, 0))[0]

    @property
    def clicks(self) -> int:
        return (self.stream or (0, 0))[1] - (self.batch or (0, 0))[1]

    @property
    def label(self) -> str:
        return ALL if self.dimension == ALL else f"{self.dimension}={self.value or '(empty)'}"

    def describe(self) -> str:
        """``hour H site_id=x: the stream counts 1 impression more and 0 clicks fewer (5,124 / 880 against 5,123 / 880)``."""
        def figures(side: Figures | None) -> str:
            return "no row" if side is None else f"{side[0]:,} / {side[1]:,}"

        return (f"hour {self.hour} {self.label}: the stream counts {_more(self.impressions, 'impression')} and "
                f"{_more(self.clicks, 'click')} than the batch (impressions / clicks {figures(self.stream)} "
                f"against {figures(self.batch)})")


def _more(difference: int, noun: str) -> str:
    amount = abs(difference)
    return f"{amount:,} {noun}{'' if amount == 1 else 's'} {'fewer' if difference < 0 else 'more'}"


def compare_hour(hour: int, stream: dict[Key, Figures], batch: dict[Key, Figures]) -> list[Difference]:
    """Every (dimension, value) of either side whose figures differ, 'all' first, then by dimension and value."""
    keys = sorted(set(stream) | set(batch), key=lambda key: (_ORDER.get(key[0], len(_ORDER)), key[0], key[1]))
    return [Difference(hour, dimension, value, stream.get((dimension, value)), batch.get((dimension, value)))
            for dimension, value in keys if stream.get((dimension, value)) != batch.get((dimension, value))]


@dataclass
class HourVerdict:
    """One batched hour: compared (``ok`` / ``DIFFERS``) or not yet closed by the stream (``open``)."""

    hour: int
    closed: bool
    batch_impressions: int
    stream_impressions: int | None  # None: not read (open)
    late_records: int = 0
    repaired_in_batch: int = 0
    rows_compared: int = 0
    differences: list[Difference] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if not self.closed:
            return "open"
        return "DIFFERS" if self.differences else "ok"

    def problem(self) -> str:
        """The hour's finding in a clause: its first difference, how many more, and what may explain them."""
        first = self.differences[0]
        text = first.describe()
        if len(self.differences) > 1:
            text += f", and {len(self.differences) - 1:,} more row(s) of the hour differ"
        if self.late_records:
            text += f" ({self.late_records:,} of its records reached the job after the hour closed: ctr_late)"
        all_rows = next((d for d in self.differences if d.dimension == ALL), None)
        if self.repaired_in_batch and all_rows is not None and all_rows.impressions < 0:
            text += (f" (the batch counts {self.repaired_in_batch:,} dead letters the DLQ reprocessing repairs: "
                     "has dlq_reprocessing run on them?)")
        return text

    def row(self) -> dict[str, Any]:
        return {"hour": self.hour, "stream": "closed" if self.closed else "open",
                "batch_impressions": self.batch_impressions,
                "stream_impressions": "-" if self.stream_impressions is None else self.stream_impressions,
                "late_records": self.late_records, "repaired_in_batch": self.repaired_in_batch,
                "rows_compared": self.rows_compared if self.closed else "-",
                "rows_differing": len(self.differences) if self.closed else "-", "verdict": self.verdict}


@dataclass
class StoreSnapshot:
    """What the check reads from the CTR store, by Avazu hour (YYMMDDHH)."""

    hours: list[int]  # the staged hours batched in the lookback
    closed_through: int | None  # the newest hour in ctr_hourly
    batch: dict[int, dict[Key, Figures]]
    stream: dict[int, dict[Key, Figures]]
    late: dict[int, int] = field(default_factory=dict)
    repaired: dict[int, int] = field(default_factory=dict)


def judge(snapshot: StoreSnapshot) -> list[HourVerdict]:
    """Each batched hour: open when the stream has not closed it, else its differences."""
    verdicts = []
    for hour in snapshot.hours:
        batch = snapshot.batch.get(hour, {})
        closed = snapshot.closed_through is not None and hour <= snapshot.closed_through
        verdict = HourVerdict(hour, closed, batch.get((ALL, ""), (0, 0))[0], None,
                              late_records=snapshot.late.get(hour, 0), repaired_in_batch=snapshot.repaired.get(hour, 0))
        if closed:
            stream = snapshot.stream.get(hour, {})
            verdict.stream_impressions = stream.get((ALL, ""), (0, 0))[0]
            verdict.rows_compared = len(set(stream) | set(batch))
            verdict.differences = compare_hour(hour, stream, batch)
        verdicts.append(verdict)
    return verdicts


def _avazu_hour(moment: dt.datetime) -> int:
    return datetime_to_hour(moment.replace(tzinfo=dt.timezone.utc))


def _figures(connection: psycopg.Connection, table: str, hours: list[int]) -> dict[int, dict[Key, Figures]]:
    found: dict[int, dict[Key, Figures]] = {}
    # The table name is one of two constants, never input.
    rows = connection.execute(f"SELECT hour, dimension, value, impressions, clicks FROM {table} WHERE hour = ANY(%s)",
                              ([hour_timestamp(h) for h in hours],))
    for moment, dimension, value, impressions, clicks in rows:
        found.setdefault(_avazu_hour(moment), {})[(dimension, value)] = (int(impressions), int(clicks))
    return found


def read_snapshot(connection: psycopg.Connection, since: dt.datetime) -> StoreSnapshot:
    """The batched hours of the lookback and both sides' figures for those the stream has closed, in one snapshot."""
    with connection.transaction():
        connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        # The staged hours batched: an hour that only holds repairs spilled from the hour before is
        # not complete in the batch until its own staged file is counted too.
        hours = sorted(_avazu_hour(moment) for (moment,) in connection.execute(
            "SELECT staged_hour FROM ctr_batch_runs WHERE computed_at >= %s", (since,)))
        newest = connection.execute("SELECT max(hour) FROM ctr_hourly").fetchone()[0]
        closed_through = _avazu_hour(newest) if newest is not None else None
        closed = [h for h in hours if closed_through is not None and h <= closed_through]
        timestamps = [hour_timestamp(h) for h in hours]
        late = {_avazu_hour(moment): int(records) for moment, records in connection.execute(
            "SELECT window_start, records FROM ctr_late WHERE window_kind = 'hour' AND window_start = ANY(%s)",
            (timestamps,))}
        repaired = {_avazu_hour(moment): int(rows) for moment, rows in connection.execute(
            "SELECT staged_hour, repaired_rows FROM ctr_batch_runs WHERE staged_hour = ANY(%s)", (timestamps,))}
        return StoreSnapshot(hours, closed_through, _figures(connection, "ctr_batch_hourly", hours),
                             _figures(connection, "ctr_hourly", closed), late, repaired)


def check_ctr_reconciliation(inputs: HealthInputs, sleep: Callable[[float], None] = time.sleep) -> CheckOutcome:
    """Fails when a closed hour's stream figures differ from its batch figures (see the module doc)."""
    from include.ctr.store import StoreNotMigrated, connect, require_tables, where

    settings = inputs.config.ctr_reconciliation
    if not inputs.store_url:
        return CheckOutcome("ctr_reconciliation", False, "there is no CTR store to read: the Airflow connection "
                            "postgres_default is not set (scripts/local-env.sh sets it from POSTGRES_URL once the "
                            "stack's PostgreSQL has started)", COLUMNS)
    since = dt.datetime.fromtimestamp(inputs.now, dt.timezone.utc) - dt.timedelta(hours=settings.lookback_hours)
    with connect(inputs.store_url, autocommit=True) as connection:
        try:
            require_tables(connection, TABLES, inputs.store_url)
        except StoreNotMigrated as error:
            return CheckOutcome("ctr_reconciliation", False, str(error), COLUMNS)
        snapshot = read_snapshot(connection, since)
        verdicts = judge(snapshot)
        notes = []
        if any(v.differences for v in verdicts) and settings.settle_s > 0:
            first = {v.hour: len(v.differences) for v in verdicts if v.differences}
            inputs.log.info("ctr_reconciliation: %d hour(s) differ at the first reading %s; reading again in %.0f s "
                            "(a window may have been half written)", len(first), first, settings.settle_s)
            sleep(settings.settle_s)
            snapshot = read_snapshot(connection, since)
            verdicts = judge(snapshot)
            settled = [h for h in first if not any(v.hour == h and v.differences for v in verdicts)]
            if settled:
                notes.append(f"hour(s) {', '.join(map(str, settled))} differed at a first reading and agreed "
                             f"{settings.settle_s:.0f} s later (their windows were being written)")
    return _outcome(verdicts, snapshot, settings.lookback_hours, where(inputs.store_url), notes)


def _outcome(verdicts: list[HourVerdict], snapshot: StoreSnapshot, lookback_hours: int, store: str,
             notes: list[str]) -> CheckOutcome:
    judged = [v for v in verdicts if v.closed]
    open_hours = [v.hour for v in verdicts if not v.closed]
    differing = [v for v in judged if v.differences]
    metrics = [
        Metric("ctr_reconciliation_rows_differing", float(sum(len(v.differences) for v in judged)),
               help="Rows (hour x dimension x value) in which the stream's CTR counts differ from the batch's"),
        Metric("ctr_reconciliation_impressions_difference", float(sum(
            abs(d.impressions) for v in judged for d in v.differences if d.dimension == ALL)),
               help="Impressions by which the closed hours' stream totals differ from the batch totals"),
        Metric("ctr_reconciliation_hours", float(len(judged)), {"state": "judged"},
               help="Batched hours of the lookback, by whether the stream has closed them (judged) or not (open)"),
        Metric("ctr_reconciliation_hours", float(len(open_hours)), {"state": "open"},
               help="Batched hours of the lookback, by whether the stream has closed them (judged) or not (open)"),
    ]
    rows = [v.row() for v in verdicts]
    newest = f"the newest hour it has closed is {snapshot.closed_through}" if snapshot.closed_through else \
        "it has closed no hour yet"
    not_judged = (f"; {len(open_hours)} hour(s) the stream has not closed yet are not judged "
                  f"({_hour_list(open_hours)}; {newest})" if open_hours else "")
    if differing:
        summary = (f"{len(differing)} of {len(judged)} closed hour(s) differ between the stream (ctr_hourly) and the "
                   f"batch (ctr_batch_hourly): {first_problems([v.problem() for v in differing])}{not_judged}; look "
                   "at the CTR job (its task log, ctr_late) and at the hour's ctr_batch run")
        return CheckOutcome("ctr_reconciliation", False, summary, COLUMNS, rows, metrics, notes=notes)
    if not verdicts:
        summary = (f"no hour was batched in the last {lookback_hours} h: nothing to compare in {store} (the "
                   "ctr_batch DAG computes each staged hour after its ingestion)")
    elif not judged:
        summary = f"the stream has closed none of the {len(verdicts)} hour(s) batched in the last {lookback_hours} h" \
                  f" ({_hour_list(open_hours)}; {newest}): not judged yet"
    else:
        compared = sum(v.rows_compared for v in judged)
        total = sum(v.batch_impressions for v in judged)
        late = sum(v.late_records for v in judged)
        also_late = (f"; {late:,} more record(s) of those hours reached the job after they had closed (ctr_late: "
                     "a re-ingested hour, or a repair that came late?)" if late else "")
        summary = (f"{len(judged)} closed hour(s) agree exactly: stream = batch in all {compared:,} rows of "
                   f"{len(DIMENSIONS) + 1} dimensions ({total:,} impressions){also_late}{not_judged}")
    return CheckOutcome("ctr_reconciliation", True, summary, COLUMNS, rows, metrics, notes=notes)


def _hour_list(hours: list[int], limit: int = 4) -> str:
    shown = ", ".join(str(h) for h in hours[:limit])
    return shown + (f" and {len(hours) - limit} more" if len(hours) > limit else "")

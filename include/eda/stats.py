"""EDA statistics of an Avazu file, accumulated chunk by chunk in the same pass as sampling.

Memory does not grow with the number of rows:

* counts per hour / banner_pos / device_type / device_conn_type are keyed by value, and the
  contract bounds those values (240 hours, 0..255 for the three small columns);
* top categories of the six site/app columns are exact counters, one per side keyed by the
  (id, domain, category) triple: one counter update per row and side instead of three. The
  real file has about 8,500 distinct ids per side. Should a side ever exceed
  ``max_tracked_values`` triples, its counter is pruned to the most frequent half and its
  columns are marked ``approximate``;
* duplicate ids are counted exactly by :class:`DuplicateIdCounter`, which spills the 64-bit ids
  to hash-partitioned temporary files (8 bytes per row on disk) and checks one partition at a
  time, so memory is one partition (about rows / 256 x 8 bytes).
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from operator import itemgetter
from typing import Any

import numpy as np

from include.avazu.contract import COLUMN_NAMES, Reason, hour_to_datetime
from include.avazu.reader import BadRow, ColumnChunk, ReadProgress, RowChunk

CATEGORY_GROUPS = (
    ("site_id", "site_domain", "site_category"),
    ("app_id", "app_domain", "app_category"),
)
CATEGORY_COLUMNS = tuple(name for group in CATEGORY_GROUPS for name in group)
CTR_COLUMNS = ("banner_pos", "device_type", "device_conn_type")
_SEGMENT_COLUMNS = ("hour", "click", *CTR_COLUMNS)
_SEGMENT_KEY = itemgetter(*_SEGMENT_COLUMNS)
_ID = itemgetter("id")


class DuplicateIdCounter:
    """Exact count of repeated ids with memory bounded by one hash partition.

    Ids are buffered as uint64 up to ``buffer_ids``; beyond that, buffers are written to
    ``partitions`` temporary files by a hash of the id. Equal ids always land in the same file,
    so counting distinct ids file by file is exact. Small inputs never touch the disk.
    """

    def __init__(
        self, partitions: int = 256, buffer_ids: int = 1_000_000, tmp_dir: str | None = None
    ):
        self.partitions = partitions
        self.buffer_ids = buffer_ids
        self.tmp_dir = tmp_dir
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._spill_dir: tempfile.TemporaryDirectory | None = None
        self._files: list[Any] = []
        self.ids_seen = 0

    def add(self, ids: list[str]) -> None:
        """Add ids given as canonical decimal strings (the contract's form)."""
        if ids:
            self.add_array(np.array(ids, dtype=np.uint64))

    def add_array(self, ids: np.ndarray) -> None:
        """Add ids given as a uint64 array."""
        if not len(ids):
            return
        self._buffer.append(ids)
        self._buffered += len(ids)
        self.ids_seen += len(ids)
        if self._buffered >= self.buffer_ids:
            self._spill()

    def _spill(self) -> None:
        ids = np.concatenate(self._buffer)
        self._buffer, self._buffered = [], 0
        if self._spill_dir is None:
            self._spill_dir = tempfile.TemporaryDirectory(prefix="avazu-ids-", dir=self.tmp_dir)
            self._files = [
                open(os.path.join(self._spill_dir.name, f"{p:03d}.u64"), "wb")
                for p in range(self.partitions)
            ]
        partition = _partition_of(ids, self.partitions)
        order = np.argsort(partition, kind="stable")
        bounds = np.searchsorted(partition[order], np.arange(self.partitions + 1))
        ids = ids[order]
        for p in range(self.partitions):
            if bounds[p] < bounds[p + 1]:
                ids[bounds[p] : bounds[p + 1]].tofile(self._files[p])

    def result(self) -> dict[str, Any]:
        """Duplicate rows (id seen before), distinct ids and ids seen more than once."""
        distinct = repeated = 0
        try:
            for ids in self._partitions():
                values, counts = np.unique(ids, return_counts=True)
                distinct += len(values)
                repeated += int(np.count_nonzero(counts > 1))
        finally:
            self.close()
        return {
            "method": "exact: 64-bit ids hash-partitioned to temporary files, "
            "one partition in memory at a time",
            "rows_checked": self.ids_seen,
            "duplicate_rows": self.ids_seen - distinct,
            "distinct_ids": distinct,
            "ids_seen_more_than_once": repeated,
            "spilled_to_disk": self._spill_dir is not None,
        }

    def _partitions(self) -> Iterable[np.ndarray]:
        if self._spill_dir is None:
            yield np.concatenate(self._buffer) if self._buffer else np.array([], dtype=np.uint64)
            return
        if self._buffer:
            self._spill()
        for handle in self._files:
            handle.close()
        for handle in self._files:
            yield np.fromfile(handle.name, dtype=np.uint64)

    def close(self) -> None:
        """Remove the spill files (also done by :meth:`result`)."""
        for handle in self._files:
            handle.close()
        if self._spill_dir is not None:
            self._spill_dir.cleanup()


def _partition_of(ids: np.ndarray, partitions: int) -> np.ndarray:
    # Multiplicative hashing spreads ids even if the source's ids cluster in a few top bits.
    mixed = ids * np.uint64(0x9E3779B97F4A7C15)
    return ((mixed >> np.uint64(40)) % np.uint64(partitions)).astype(np.int64)


class _KeyCounts:
    """Rows per key, for keys given as columns of numpy arrays (a key is one value of each column).

    Chunks are grouped as they come (sorted, then counted by runs: faster than ``np.unique`` on
    multi-column keys) and merged into the totals once as many keys are pending as the totals
    hold, so merging costs O(n log n) in all. Memory is the distinct keys.
    """

    def __init__(self, columns: int):
        self.keys = [np.empty(0, np.uint64)] * columns
        self.counts = np.empty(0, np.int64)
        self._pending: list[tuple[list[np.ndarray], np.ndarray]] = []
        self._pending_keys = 0


    def add(self, *columns: np.ndarray) -> None:
        keys, counts = _grouped(list(columns), None)
        self._pending.append((keys, counts))
        self._pending_keys += len(counts)
        if self._pending_keys >= max(len(self.counts), 4096):
            self._merge()

    def prune(self, limit: int) -> bool:
        """Past ``limit`` distinct keys, keep only the most frequent half of ``limit`` (the long tail is
        cut, and the counts become approximate); whether it did."""
        if len(self.counts) + self._pending_keys <= limit:
            return False
        self._merge()
        if len(self.counts) <= limit:
            return False
        top = np.sort(np.argsort(-self.counts, kind="stable")[:limit // 2])
        self.keys, self.counts = [column[top] for column in self.keys], self.counts[top]
        return True

    def totals(self) -> tuple[list[np.ndarray], np.ndarray]:
        """The keys (one array per column) and their counts so far."""
        self._merge()
        return self.keys, self.counts

    def take(self) -> tuple[list[np.ndarray], np.ndarray]:
        """The keys (one array per column) and their counts, and start again from nothing."""
        self._merge()
        keys, counts = self.keys, self.counts
        self.keys, self.counts = [np.empty(0, np.uint64)] * len(keys), np.empty(0, np.int64)
        return keys, counts

    def _merge(self) -> None:
        if not self._pending:
            return
        parts = [(self.keys, self.counts), *self._pending]
        columns = [np.concatenate([keys[i] for keys, _ in parts]) for i in range(len(self.keys))]
        self.keys, self.counts = _grouped(columns, np.concatenate([counts for _, counts in parts]))
        self._pending, self._pending_keys = [], 0


def _grouped(columns: list[np.ndarray], weights: np.ndarray | None) -> tuple[list[np.ndarray], np.ndarray]:
    """The distinct keys of ``columns`` (sorted) and the rows, or the sum of ``weights``, of each."""
    rows = len(columns[0])
    if rows == 0:
        return columns, np.empty(0, np.int64)
    order = np.lexsort(columns[::-1])  # the first column sorts first
    columns = [column[order] for column in columns]
    starts = np.zeros(rows, bool)
    starts[0] = True
    for column in columns:
        starts[1:] |= column[1:] != column[:-1]
    starts = np.flatnonzero(starts)
    if weights is None:
        counts = np.diff(np.append(starts, rows))
    else:
        counts = np.add.reduceat(weights[order], starts)
    return [column[starts] for column in columns], counts.astype(np.int64)


class DatasetStats:
    """Accumulates the statistics of ``data_stats.json`` from :class:`RowChunk` objects."""

    def __init__(
        self,
        top_k: int = 20,
        examples_per_reason: int = 5,
        max_tracked_values: int = 1_000_000,
        duplicate_ids: DuplicateIdCounter | None = None,
    ):
        self.top_k = top_k
        self.examples_per_reason = examples_per_reason
        self.max_tracked_values = max_tracked_values
        self.duplicate_ids = duplicate_ids or DuplicateIdCounter()
        # (hour, click, banner_pos, device_type, device_conn_type) -> rows: about 5,000 keys
        # on Avazu data.
        self.segments: Counter = Counter()
        self.categories: dict[tuple[str, ...], Counter] = {
            group: Counter() for group in CATEGORY_GROUPS
        }
        # The column path's counts of the same, keyed by numbers (folded in by _fold_clean_counts).
        self._clean_segments = _KeyCounts(1)
        self._clean_categories = {group: _KeyCounts(len(group)) for group in CATEGORY_GROUPS}
        self.approximate: set[str] = set()
        self.nulls: Counter = Counter()
        self.bad_by_reason: Counter = Counter()
        self.bad_by_field: Counter = Counter()
        self.bad_examples: dict[str, list[dict[str, Any]]] = {}
        self.out_of_order_rows = 0
        self._last_hour: int | None = None
        self.good_rows = 0
        self.bad_rows = 0

    def add(self, chunk: RowChunk) -> None:
        """Fold one chunk into the statistics."""
        self._add_bad(chunk.bad_rows)
        self.good_rows += len(chunk.records)
        if not chunk.records:
            return
        self._add_records(chunk.records)
        self._count_out_of_order(chunk.hours)

    def add_columns(self, chunk: ColumnChunk) -> None:
        """Fold one column chunk into the statistics: the same figures as :meth:`add` of its rows."""
        self._add_bad(chunk.bad_rows)
        self.good_rows += len(chunk.lines)
        clean = chunk.clean
        if len(clean):
            # One integer per segment: hour (< 2^27), click, and the three small columns (< 2^7 each).
            self._clean_segments.add((clean["hour"].astype(np.uint64) << np.uint64(22))
                                     | (clean["click"].astype(np.uint64) << np.uint64(21))
                                     | (clean["banner_pos"].astype(np.uint64) << np.uint64(14))
                                     | (clean["device_type"].astype(np.uint64) << np.uint64(7))
                                     | clean["device_conn_type"])
            for group, counts in self._clean_categories.items():
                counts.add(*(clean[name] for name in group))
                if counts.prune(self.max_tracked_values):
                    self.approximate.update(group)
            self.duplicate_ids.add_array(clean["id"].copy())
        if chunk.records:
            self._add_records(chunk.records)
        if chunk.hours:
            self._count_out_of_order(chunk.hours)

    def _add_bad(self, bad_rows: Sequence[BadRow]) -> None:
        self.bad_rows += len(bad_rows)
        for bad in bad_rows:
            self.bad_by_reason[bad.reason.value] += 1
            self.bad_by_field[f"{bad.reason.value}:{bad.field or '-'}"] += 1
            examples = self.bad_examples.setdefault(bad.reason.value, [])
            if len(examples) < self.examples_per_reason:
                example = bad.as_dict()
                example["raw"] = example["raw"][:300]
                examples.append(example)

    def _add_records(self, records: list[dict[str, Any]]) -> None:
        self.segments.update(map(_SEGMENT_KEY, records))
        for group, counter in self.categories.items():
            counter.update(map(itemgetter(*group), records))
            if len(counter) > self.max_tracked_values:
                self._prune(group)
        self.duplicate_ids.add(list(map(_ID, records)))
        self._count_nulls(records)

    def _fold_clean_counts(self) -> None:
        """Add the column path's segment counts to the row path's, keyed as parse_line's records are.

        The category triples are not folded: there can be a million of them, and the report needs
        each column's counts only (see :meth:`_top`).
        """
        (keys,), counts = self._clean_segments.take()
        self.segments.update(dict(zip(zip((keys >> 22).tolist(), ((keys >> 21) & 1).tolist(),
                                          ((keys >> 14) & 127).tolist(), ((keys >> 7) & 127).tolist(),
                                          (keys & 127).tolist()), counts.tolist())))

    def _prune(self, group: tuple[str, ...]) -> None:
        counter = self.categories[group]
        self.categories[group] = Counter(dict(counter.most_common(self.max_tracked_values // 2)))
        self.approximate.update(group)

    def _count_out_of_order(self, hours: list[int]) -> None:
        if self._last_hour is not None and hours[0] < self._last_hour:
            self.out_of_order_rows += 1
        self.out_of_order_rows += sum(map(int.__lt__, hours[1:], hours[:-1]))
        self._last_hour = hours[-1]

    def _count_nulls(self, records: list[dict[str, Any]]) -> None:
        # A good row has a None exactly where its line has an empty field (clean rows have none).
        for record in records:
            if None in record.values():
                self.nulls.update(name for name, value in record.items() if value is None)

    def result(self, progress: ReadProgress, source_uri: str) -> dict[str, Any]:
        """The finished statistics as a JSON-ready dict (closes the duplicate-id spill files)."""
        self._fold_clean_counts()
        hour_rows: Counter = Counter()
        hour_clicks: Counter = Counter()
        by_column: dict[str, tuple[Counter, Counter]] = {
            name: (Counter(), Counter()) for name in CTR_COLUMNS
        }
        clicks = 0
        for (hour, click, *values), rows in self.segments.items():
            hour_rows[hour] += rows
            hour_clicks[hour] += rows * click
            clicks += rows * click
            for name, value in zip(CTR_COLUMNS, values):
                by_column[name][0][value] += rows
                by_column[name][1][value] += rows * click
        hours = sorted(hour_rows)
        return {
            "source_uri": source_uri,
            "computed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "rows": {"read": progress.rows_read, "good": self.good_rows, "bad": self.bad_rows},
            "bytes": {
                "decompressed": progress.bytes_decompressed,
                "compressed": progress.bytes_compressed,
            },
            "read_seconds": round(progress.elapsed_s, 3),
            "rows_per_second": round(progress.rows_per_s, 1),
            "columns": list(COLUMN_NAMES),
            "clicks": clicks,
            "ctr": _ratio(clicks, self.good_rows),
            "time_range": {
                "first_hour": hours[0] if hours else None,
                "last_hour": hours[-1] if hours else None,
                "first_utc": hour_to_datetime(hours[0]).isoformat() if hours else None,
                "last_utc": hour_to_datetime(hours[-1]).isoformat() if hours else None,
                "hours_present": len(hours),
                "out_of_order_rows": self.out_of_order_rows,
            },
            "hourly": [
                {
                    "hour": h,
                    "rows": hour_rows[h],
                    "clicks": hour_clicks[h],
                    "ctr": _ratio(hour_clicks[h], hour_rows[h]),
                }
                for h in hours
            ],
            "ctr_by": {
                name: _ctr_table(rows, clicks_by) for name, (rows, clicks_by) in by_column.items()
            },
            "bad_rows": {
                "total": self.bad_rows,
                "by_reason": {
                    reason.value: self.bad_by_reason.get(reason.value, 0) for reason in Reason
                },
                "by_reason_and_field": dict(sorted(self.bad_by_field.items())),
                "examples": self.bad_examples,
            },
            "duplicate_ids": self.duplicate_ids.result(),
            "nulls": {name: self.nulls.get(name, 0) for name in COLUMN_NAMES},
            "top_categories": {
                name: self._top(group, position)
                for group in CATEGORY_GROUPS
                for position, name in enumerate(group)
            },
        }

    def _top(self, group: tuple[str, ...], position: int) -> dict[str, Any]:
        counter: Counter = Counter()
        for key, rows in self.categories[group].items():
            counter[key[position]] += rows
        # The column path's triples, summed per value of this column before any text is made.
        keys, counts = self._clean_categories[group].totals()
        (values,), rows = _grouped([keys[position]], counts)
        counter.update({f"{value:08x}": n for value, n in zip(values.tolist(), rows.tolist())})
        counted = sum(counter.values())
        return {
            "distinct": len(counter),
            "approximate": group[position] in self.approximate,
            "top": [
                {"value": value, "rows": rows, "share": _ratio(rows, counted)}
                # Ties in value order, so that the list does not depend on the order rows were counted in.
                for value, rows in heapq.nsmallest(self.top_k, counter.items(),
                                                   key=lambda item: (-item[1], item[0] is None, item[0] or ""))
            ],
        }


def _ctr_table(rows: Counter, clicks: Counter) -> list[dict[str, Any]]:
    # Nullable columns may hold None; it sorts last.
    ordered = sorted(rows, key=lambda value: (value is None, value or 0))
    return [
        {
            "value": value,
            "rows": rows[value],
            "clicks": clicks[value],
            "ctr": _ratio(clicks[value], rows[value]),
        }
        for value in ordered
    ]


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 6) if whole else None

"""Generate Avazu-format CSV data (gzip or plain) with chosen faults and a record of the truth.

The real ``train.gz`` cannot be downloaded on our machines, so this writes files with its header,
column order and formats (uint64 decimal ids, ``YYMMDDHH`` hours in order, 8-hex-digit hashed
categoricals with realistic cardinalities and skew, small-integer columns with the real value
sets) and a click rate near 17% that varies by hour, banner position and device type.

Faults are injected on distinct rows at chosen rates and every one is recorded by line number in
:class:`GenerationTruth`, so tests can check the reader and validator exactly. Output is
deterministic for a seed. Rows are rendered with numpy a block at a time (no Python loop per
row), so a few million rows take seconds and memory stays flat.

CLI: ``python -m include.avazu.generator --rows 1000000 --out data/avazu/train_sample.csv.gz``
"""

from __future__ import annotations

import argparse
import enum
import gzip
import json
import logging
import math
import re
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from include.avazu.contract import AVAZU_HOURS, COLUMN_INDEX, HEADER_LINE, Reason, hour_to_datetime

log = logging.getLogger(__name__)

_BLOCK_ROWS = 100_000
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_NIBBLE_SHIFTS = np.arange(28, -1, -4, dtype=np.uint32)

# Values that stand for "no site" / "no app" in the real file: app traffic carries the first
# triple in its site columns, site traffic the second in its app columns.
_NO_SITE = (b"85f751fd", b"c4e18dd6", b"50e219e0")
_NO_APP = (b"ecad2386", b"7801e8d9", b"07d7df22")
_COMMON_DEVICE_ID = b"a99f214a"

# Value: (share of rows, click rate) - roughly the real file's.
_BANNER_POS = {
    0: (0.720, 0.164),
    1: (0.278, 0.185),
    2: (0.0003, 0.107),
    3: (0.0001, 0.183),
    4: (0.0002, 0.185),
    5: (0.0001, 0.122),
    7: (0.0011, 0.320),
}
_DEVICE_TYPE = {
    1: (0.923, 0.169),
    0: (0.055, 0.210),
    4: (0.019, 0.095),
    5: (0.003, 0.094),
    2: (0.0001, 0.065),
}
_DEVICE_CONN_TYPE = {0: 0.863, 2: 0.083, 3: 0.053, 5: 0.001}
_C1 = {
    1005: 0.919,
    1002: 0.055,
    1010: 0.022,
    1012: 0.0028,
    1007: 0.0009,
    1001: 0.0002,
    1008: 0.0001,
}
_BANNER_SIZES = {
    (320, 50): 0.93,
    (300, 250): 0.044,
    (216, 36): 0.007,
    (728, 90): 0.011,
    (120, 20): 0.001,
    (1024, 768): 0.0035,
    (480, 320): 0.0012,
    (768, 1024): 0.0008,
    (320, 480): 0.0015,
}
_C18 = {0: 0.42, 3: 0.34, 2: 0.17, 1: 0.07}

# Distinct values in the real file (40.4M rows); the two huge ones scale with the row count.
_CARDINALITY = {
    "site_id": 4737,
    "site_domain": 7745,
    "site_category": 26,
    "app_id": 8552,
    "app_domain": 559,
    "app_category": 36,
    "device_model": 8251,
}
_DEVICE_ID_PER_ROW = 2_686_408 / 40_428_967
_DEVICE_IP_PER_ROW = 6_729_486 / 40_428_967
_APP_TRAFFIC_SHARE = 0.36
_COMMON_DEVICE_ID_SHARE = 0.82
TARGET_CTR = 0.17


class FaultKind(enum.StrEnum):
    """Ways a row can be broken on purpose. Each maps to the reason the reader must report."""

    FIELD_COUNT = "field_count"
    NOT_INTEGER = "not_integer"
    EMPTY_REQUIRED = "empty_required"
    BAD_HOUR = "bad_hour"
    BAD_UTF8 = "bad_utf8"
    DUPLICATE_ID = "duplicate_id"
    # Faults a data engineer repairs (include.dlq.repairs); the truth keeps the row they stand for.
    CP1252_TEXT = "cp1252_text"  # a device model with an accent, written in Windows-1252, not UTF-8
    QUOTED_DELIMITER = "quoted_delimiter"  # a device model holding a comma, CSV-quoted
    PADDED_FIELD = "padded_field"  # spaces around a number
    UPPER_HEX = "upper_hex"  # a hash written in upper-case hex digits
    TRAILING_DELIMITER = "trailing_delimiter"  # a comma after the last field
    HOUR_TIMESTAMP = "hour_timestamp"  # the hour written as a timestamp, 2014-10-21 00:00:00

    @property
    def repairable(self) -> bool:
        """True when the broken line still says which row it was (:attr:`GenerationTruth.repairs`)."""
        return self in _REPAIRABLE

    @property
    def expected_reason(self) -> Reason | None:
        """The reader's verdict on a row with this fault; ``None`` means the row is valid."""
        return _EXPECTED_REASON[self]


_EXPECTED_REASON = {
    FaultKind.FIELD_COUNT: Reason.FIELD_COUNT,
    FaultKind.NOT_INTEGER: Reason.NOT_INTEGER,
    FaultKind.EMPTY_REQUIRED: Reason.EMPTY_REQUIRED,
    FaultKind.BAD_HOUR: Reason.BAD_HOUR,
    FaultKind.BAD_UTF8: Reason.BAD_ENCODING,
    FaultKind.DUPLICATE_ID: None,
    FaultKind.CP1252_TEXT: Reason.BAD_ENCODING,
    FaultKind.QUOTED_DELIMITER: Reason.FIELD_COUNT,
    FaultKind.PADDED_FIELD: Reason.NOT_INTEGER,
    FaultKind.UPPER_HEX: Reason.BAD_HEX,
    FaultKind.TRAILING_DELIMITER: Reason.FIELD_COUNT,
    FaultKind.HOUR_TIMESTAMP: Reason.BAD_HOUR,
}
_REPAIRABLE = frozenset({
    FaultKind.CP1252_TEXT, FaultKind.QUOTED_DELIMITER, FaultKind.PADDED_FIELD,
    FaultKind.UPPER_HEX, FaultKind.TRAILING_DELIMITER, FaultKind.HOUR_TIMESTAMP,
})
# The original kinds: rows broken beyond repair (or, for duplicate ids, valid ones).
UNREPAIRABLE_KINDS = tuple(kind for kind in FaultKind if kind not in _REPAIRABLE)


@dataclass(frozen=True)
class GeneratorSpec:
    """What to generate. ``fault_rates`` maps a fault kind to the share of rows that get it."""

    rows: int
    start_hour: int = AVAZU_HOURS[0]
    hours: int = len(AVAZU_HOURS)
    seed: int = 7
    fault_rates: dict[FaultKind, float] = field(default_factory=dict)
    truncate_fraction: float | None = None
    # Level 1 writes three times faster than 6 for files ~15% larger; this is test data.
    compresslevel: int = 1

    @classmethod
    def with_every_fault(cls, rows: int, seed: int, fault_rate: float, **settings) -> GeneratorSpec:
        """``rows`` rows, each kind of fault on ``fault_rate`` of them: the shape of the project's default data."""
        return cls(rows, seed=seed, fault_rates={kind: fault_rate for kind in FaultKind if fault_rate}, **settings)

    def validated(self) -> GeneratorSpec:
        """Return self, or raise ``ValueError`` with one sentence naming the bad setting."""
        if self.rows < 0:
            raise ValueError(f"rows must be zero or more, got {self.rows}")
        if self.start_hour not in AVAZU_HOURS:
            raise ValueError(
                f"start hour {self.start_hour} is not one of the Avazu hours "
                f"{AVAZU_HOURS[0]}..{AVAZU_HOURS[-1]}"
            )
        first = AVAZU_HOURS.index(self.start_hour)
        if not 1 <= self.hours <= len(AVAZU_HOURS) - first:
            raise ValueError(
                f"hours must be 1..{len(AVAZU_HOURS) - first} from {self.start_hour}, "
                f"got {self.hours}"
            )
        for kind, rate in self.fault_rates.items():
            if not 0 <= rate <= 1:
                raise ValueError(f"fault rate for {kind.value} must be within 0..1, got {rate}")
        if self.seed < 0:
            raise ValueError(f"seed must be zero or more, got {self.seed}")
        if sum(int(round(rate * self.rows)) for rate in self.fault_rates.values()) > max(
            self.rows - 1, 0
        ):
            raise ValueError(
                "fault rates ask for more faulty rows than there are rows after the first: "
                "each row carries at most one fault"
            )
        if self.truncate_fraction is not None and not 0 < self.truncate_fraction < 1:
            raise ValueError(
                f"truncate_fraction must be strictly between 0 and 1, got {self.truncate_fraction}"
            )
        return self


@dataclass
class GenerationTruth:
    """What was written: counts, and every injected fault by line number (header = line 1)."""

    path: str
    rows: int
    seed: int
    hours: list[int]
    rows_per_hour: dict[int, int]
    faults: dict[str, list[int]]
    fault_fields: dict[int, str | None]
    gzip: bool
    # Line number -> the 24 fields of the row a repairable line stands for (the ground truth of repair).
    repairs: dict[int, list[str]] = field(default_factory=dict)
    truncated_at_byte: int | None = None
    complete_lines_after_truncation: int | None = None
    elapsed_s: float = 0.0

    def bad_lines(self) -> dict[int, Reason]:
        """Line number -> reason the reader must report, for every injected bad row."""
        return {
            line: FaultKind(kind).expected_reason
            for kind, lines in self.faults.items()
            for line in lines
            if FaultKind(kind).expected_reason
        }

    def to_json(self) -> str:
        data = asdict(self)
        data["rows_per_hour"] = {str(h): n for h, n in self.rows_per_hour.items()}
        data["fault_fields"] = {str(line): name for line, name in self.fault_fields.items()}
        data["repairs"] = {str(line): fields for line, fields in self.repairs.items()}
        return json.dumps(data, indent=1)

    @classmethod
    def from_json(cls, text: str) -> GenerationTruth:
        data = json.loads(text)
        data["rows_per_hour"] = {int(h): n for h, n in data["rows_per_hour"].items()}
        data["fault_fields"] = {int(line): name for line, name in data["fault_fields"].items()}
        data["repairs"] = {int(line): fields for line, fields in data.get("repairs", {}).items()}
        return cls(**data)


def generate_if_missing(spec: GeneratorSpec, out: str | Path) -> GenerationTruth | None:
    """Generate ``out`` unless it exists; None when it did. Written under a temporary name, then renamed,
    so a reader never sees half a file (callers that may race hold a lock around this)."""
    out = Path(out)
    if out.exists():
        return None
    scratch = out.with_name(f".generating-{out.name}")  # same suffix: .gz still means gzip
    truth = generate(spec, scratch)
    scratch.replace(out)
    truth.path = str(out)
    return truth


def generate(spec: GeneratorSpec, out: str | Path) -> GenerationTruth:
    """Write an Avazu-format CSV (gzip if ``out`` ends with ``.gz``); return the truth about it."""
    spec = spec.validated()
    started = time.monotonic()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    is_gzip = out.name.endswith(".gz")
    if spec.truncate_fraction is not None and not is_gzip:
        raise ValueError("truncation is a gzip fault: give an output name ending in .gz")
    first = AVAZU_HOURS.index(spec.start_hour)
    hours = AVAZU_HOURS[first : first + spec.hours]
    model = _RowModel(spec.seed, spec.rows)
    rows_per_hour = model.rows_per_hour(hours, spec.rows)
    plan = _FaultPlan(spec)
    hour_values = np.asarray(hours, dtype=np.int64)
    hour_of_row_end = np.cumsum(rows_per_hour)
    with open(out, "wb") as raw:
        sink = (
            gzip.GzipFile(
                filename="", mode="wb", fileobj=raw, compresslevel=spec.compresslevel, mtime=0
            )
            if is_gzip
            else raw
        )
        sink.write(HEADER_LINE.encode() + b"\n")
        for start in range(0, spec.rows, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, spec.rows)
            hour_index = np.searchsorted(hour_of_row_end, np.arange(start, stop), side="right")
            columns = model.block_columns(
                start, stop, hour_values[hour_index], start // _BLOCK_ROWS
            )
            blob, offsets = _render(columns)
            sink.write(plan.apply(blob, offsets, start, model))
        if is_gzip:
            sink.close()
    truth = GenerationTruth(
        path=str(out),
        rows=spec.rows,
        seed=spec.seed,
        hours=list(hours),
        rows_per_hour={h: int(n) for h, n in zip(hours, rows_per_hour)},
        faults={kind.value: lines for kind, lines in plan.lines_by_kind().items()},
        fault_fields=plan.fields,
        gzip=is_gzip,
        repairs=plan.repairs,
    )
    if spec.truncate_fraction is not None:
        truth.truncated_at_byte, truth.complete_lines_after_truncation = _truncate(
            out, spec.truncate_fraction
        )
    truth.elapsed_s = round(time.monotonic() - started, 3)
    return truth


class _RowModel:
    """The distributions rows are drawn from; block ``b`` uses its own seeded stream."""

    def __init__(self, seed: int, rows: int):
        self.seed = seed
        # Different seeds give disjoint-looking id sequences; the mixer makes ids unique per file.
        self.id_key = np.uint64(_mix64(np.array([seed], dtype=np.uint64))[0])
        self.device_id_count = max(1_000, int(rows * _DEVICE_ID_PER_ROW))
        self.device_ip_count = max(1_000, int(rows * _DEVICE_IP_PER_ROW))
        rng = np.random.default_rng([seed, 0xA7A2])
        self.c14_values = np.sort(rng.choice(np.arange(375, 24053), size=2626, replace=False))
        self.c17_values = np.sort(rng.choice(np.arange(112, 2759), size=435, replace=False))
        self.c19_values = np.sort(rng.choice(np.arange(33, 1960), size=68, replace=False))
        self.c21_values = np.sort(rng.choice(np.arange(1, 256), size=60, replace=False))
        self.day_ctr = 1 + rng.uniform(-0.06, 0.06, size=len(AVAZU_HOURS) // 24 + 1)
        self.day_volume = 1 + rng.uniform(-0.25, 0.25, size=len(AVAZU_HOURS) // 24 + 1)
        # Click rate = target x banner lift x device lift x hour rhythm; each lift averages 1.
        self.banner_lift = {k: v[1] / _weighted_mean(_BANNER_POS) for k, v in _BANNER_POS.items()}
        self.device_lift = {k: v[1] / _weighted_mean(_DEVICE_TYPE) for k, v in _DEVICE_TYPE.items()}

    def rows_per_hour(self, hours: tuple[int, ...], rows: int) -> np.ndarray:
        """Split ``rows`` over ``hours`` with a daily rhythm (busy afternoons, quiet nights)."""
        weights = np.array([self._volume_weight(h) for h in hours])
        rng = np.random.default_rng([self.seed, 0xB0C5])
        return rng.multinomial(rows, weights / weights.sum())

    def _volume_weight(self, hour: int) -> float:
        day, hod = divmod(AVAZU_HOURS.index(hour), 24)
        return self.day_volume[day] * (1 + 0.6 * math.sin(2 * math.pi * (hod - 8) / 24))

    def _ctr_factor(self, hours: np.ndarray) -> np.ndarray:
        hod = hours % 100
        day = (hours // 100 % 100) - 21
        return (1 + 0.08 * np.sin(2 * np.pi * (hod - 3) / 24)) * self.day_ctr[
            np.clip(day, 0, len(self.day_ctr) - 1)
        ]

    def row_ids(self, rows: np.ndarray) -> np.ndarray:
        """The uint64 id of each row index: a bijection, so ids never repeat by accident."""
        return _mix64(rows.astype(np.uint64) ^ self.id_key)

    def block_columns(
        self, start: int, stop: int, hours: np.ndarray, block: int
    ) -> list[np.ndarray]:
        """All 24 columns of rows ``start..stop-1`` as fixed-width byte-string arrays."""
        rng = np.random.default_rng([self.seed, block])
        m = stop - start
        banner_pos = _draw(rng, m, _BANNER_POS)
        device_type = _draw(rng, m, _DEVICE_TYPE)
        click_rate = (
            TARGET_CTR
            * _lookup(banner_pos, self.banner_lift)
            * _lookup(device_type, self.device_lift)
            * self._ctr_factor(hours)
        )
        click = (rng.random(m) < np.clip(click_rate, 0, 1)).astype(np.int64)

        is_app = rng.random(m) < _APP_TRAFFIC_SHARE
        site = _skewed(rng, m, _CARDINALITY["site_id"], 4.0)
        app = _skewed(rng, m, _CARDINALITY["app_id"], 4.0)
        site_cols = [
            _hex8(1, site),
            _hex8(
                2,
                np.where(
                    rng.random(m) < 0.9,
                    site % _CARDINALITY["site_domain"],
                    _skewed(rng, m, _CARDINALITY["site_domain"], 2.0),
                ),
            ),
            _hex8(3, _mix32(7, site) % _CARDINALITY["site_category"]),
        ]
        app_cols = [
            _hex8(4, app),
            _hex8(5, _mix32(8, app) % _CARDINALITY["app_domain"]),
            _hex8(6, _mix32(9, app) % _CARDINALITY["app_category"]),
        ]
        site_cols = [np.where(is_app, constant, col) for constant, col in zip(_NO_SITE, site_cols)]
        app_cols = [np.where(is_app, col, constant) for constant, col in zip(_NO_APP, app_cols)]
        device_id = np.where(
            rng.random(m) < _COMMON_DEVICE_ID_SHARE,
            _COMMON_DEVICE_ID,
            _hex8(10, rng.integers(0, self.device_id_count, size=m)),
        )
        device_ip = _hex8(11, _skewed(rng, m, self.device_ip_count, 1.5))
        device_model = _hex8(12, _skewed(rng, m, _CARDINALITY["device_model"], 3.0))

        sizes = list(_BANNER_SIZES)
        size_index = rng.choice(len(sizes), size=m, p=_probabilities(_BANNER_SIZES))
        c14_index = _skewed(rng, m, len(self.c14_values), 2.0)
        c20 = np.where(
            rng.random(m) < 0.47, -1, 100_000 + _skewed(rng, m, 249, 2.0).astype(np.int64)
        )
        return [
            self.row_ids(np.arange(start, stop)).astype("S20"),
            _decimal(click),
            _decimal(hours),
            _decimal(_draw(rng, m, _C1)),
            _decimal(banner_pos),
            *site_cols,
            *app_cols,
            device_id,
            device_ip,
            device_model,
            _decimal(device_type),
            _decimal(_draw(rng, m, _DEVICE_CONN_TYPE)),
            _decimal(self.c14_values[c14_index]),
            _decimal(np.array([w for w, _ in sizes])[size_index]),
            _decimal(np.array([h for _, h in sizes])[size_index]),
            _decimal(self.c17_values[c14_index % len(self.c17_values)]),
            _decimal(_draw(rng, m, _C18)),
            _decimal(self.c19_values[_skewed(rng, m, len(self.c19_values), 2.0)]),
            _decimal(c20),
            _decimal(self.c21_values[_skewed(rng, m, len(self.c21_values), 2.5)]),
        ]


class _FaultPlan:
    """Which rows get which fault, chosen up front so every fault is known before writing."""

    def __init__(self, spec: GeneratorSpec):
        rng = np.random.default_rng([spec.seed, 0xFA17])
        self.rng = np.random.default_rng([spec.seed, 0xFA18])
        counts = {
            kind: int(round(rate * spec.rows))
            for kind, rate in spec.fault_rates.items()
            if rate > 0
        }
        # Row 0 cannot repeat an earlier id, so duplicates are drawn from rows 1.. only.
        total = sum(counts.values())
        chosen = (
            rng.choice(spec.rows - 1, size=total, replace=False) + 1
            if total
            else np.array([], dtype=np.int64)
        )
        self.kind_of_row: dict[int, FaultKind] = {}
        position = 0
        for kind in FaultKind:
            for row in chosen[position : position + counts.get(kind, 0)]:
                self.kind_of_row[int(row)] = kind
            position += counts.get(kind, 0)
        self.fields: dict[int, str | None] = {}
        self.repairs: dict[int, list[str]] = {}
        self._rows_sorted = np.array(sorted(self.kind_of_row), dtype=np.int64)

    def lines_by_kind(self) -> dict[FaultKind, list[int]]:
        lines: dict[FaultKind, list[int]] = {kind: [] for kind in FaultKind}
        for row in self._rows_sorted.tolist():
            lines[self.kind_of_row[row]].append(row + 2)
        return {kind: found for kind, found in lines.items() if found}

    def apply(self, blob: bytes, offsets: np.ndarray, start: int, model: _RowModel) -> bytes:
        """Return the block's bytes with the faults of rows ``start..`` written in."""
        stop = start + len(offsets) - 1
        lo = np.searchsorted(self._rows_sorted, start)
        hi = np.searchsorted(self._rows_sorted, stop)
        if lo == hi:
            return blob
        pieces = []
        cursor = 0
        for row in self._rows_sorted[lo:hi].tolist():
            begin, end = (
                int(offsets[row - start]),
                int(offsets[row - start + 1]) - 1,
            )  # end excludes "\n"
            pieces.append(blob[cursor:begin])
            pieces.append(self._break(row, blob[begin:end].split(b","), model))
            cursor = end
        pieces.append(blob[cursor:])
        return b"".join(pieces)

    def _break(self, row: int, fields: list[bytes], model: _RowModel) -> bytes:
        kind = self.kind_of_row[row]
        rng = self.rng
        name: str | None = None
        if kind is FaultKind.FIELD_COUNT:
            fields = fields[:-1] if rng.random() < 0.5 else [*fields, b"1"]
        elif kind is FaultKind.NOT_INTEGER:
            name = str(
                rng.choice(
                    [
                        "id",
                        "click",
                        "C1",
                        "banner_pos",
                        "device_type",
                        "device_conn_type",
                        "C14",
                        "C15",
                        "C16",
                        "C17",
                        "C18",
                        "C19",
                        "C20",
                        "C21",
                    ]
                )
            )
            fields[COLUMN_INDEX[name]] = bytes(
                rng.choice([b"abc", b"1.5", b"12a", b"NaN", b"0x1F", b"1 000"])
            )
        elif kind is FaultKind.EMPTY_REQUIRED:
            name = str(rng.choice(["id", "click", "hour"]))
            fields[COLUMN_INDEX[name]] = b""
        elif kind is FaultKind.BAD_HOUR:
            name = "hour"
            fields[COLUMN_INDEX[name]] = bytes(
                rng.choice([b"14103100", b"14102124", b"14109900", b"13102100", b"1410210"])
            )
        elif kind is FaultKind.BAD_UTF8:
            name = str(rng.choice(["site_domain", "app_id", "device_model", "device_ip"]))
            fields[COLUMN_INDEX[name]] = bytes(
                rng.choice([b"\xff\xfe1a2b3c", b"caf\xc3", b"\xed\xa0\x80abcde", b"12\x80456a"])
            )
        elif kind is FaultKind.DUPLICATE_ID:
            source = self._earlier_clean_row(row)
            fields[0] = str(int(model.row_ids(np.array([source]))[0])).encode()
        else:
            name, fields = self._break_repairably(row, kind, fields)
        self.fields[row + 2] = name
        return b",".join(fields)

    def _break_repairably(self, row: int, kind: FaultKind, fields: list[bytes]) -> tuple[str, list[bytes]]:
        """Break a clean row so that it can be repaired; record the row it stands for in :attr:`repairs`."""
        rng = self.rng
        intended = [f.decode("ascii") for f in fields]
        written = list(fields)
        model = COLUMN_INDEX["device_model"]
        if kind is FaultKind.CP1252_TEXT:
            name = "device_model"
            intended[model] = str(rng.choice(["Café ", "Señor ", "Über ", "Naïve "])) + intended[model]
            written[model] = intended[model].encode("cp1252")
        elif kind is FaultKind.QUOTED_DELIMITER:
            name = "device_model"
            intended[model] = intended[model] + str(rng.choice([", Pro", ", Lite", ", 2nd gen"]))
            written[model] = b'"' + intended[model].encode("ascii") + b'"'
        elif kind is FaultKind.PADDED_FIELD:
            name = str(rng.choice(["C1", "banner_pos", "C14", "C18"]))
            index = COLUMN_INDEX[name]
            written[index] = bytes(rng.choice([b" ", b"  ", b"\t"])) + fields[index] + b" "
        elif kind is FaultKind.UPPER_HEX:
            name = str(rng.choice(["site_id", "app_id", "device_id", "device_ip"]))
            index = COLUMN_INDEX[name]
            if not re.search(rb"[a-f]", fields[index]):  # all digits: upper case would change nothing
                intended[index] = written[index].decode()[:-1] + "a"
            written[index] = intended[index].upper().encode()
        elif kind is FaultKind.TRAILING_DELIMITER:
            name = None
            written.append(b"")
        elif kind is FaultKind.HOUR_TIMESTAMP:
            name = "hour"
            moment = hour_to_datetime(int(intended[2]))
            written[2] = moment.strftime(str(rng.choice(["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:00:00Z"]))).encode()
        else:
            raise AssertionError(f"{kind} is not a repairable fault")
        self.repairs[row + 2] = intended
        return name, written

    def _earlier_clean_row(self, row: int) -> int:
        # The original must be a row that stays valid, so the duplicate is one among good rows.
        while True:
            source = int(self.rng.integers(0, row))
            if source not in self.kind_of_row:
                return source


def _render(columns: list[np.ndarray]) -> tuple[bytes, np.ndarray]:
    """Join byte-string columns into CSV lines; return the bytes and the start offset of each row.

    Each row is laid out at fixed width with NUL padding, then the NULs are dropped in one
    vectorised step (no field ever contains a NUL byte).
    """
    m = len(columns[0])
    widths = [c.dtype.itemsize for c in columns]
    grid = np.zeros((m, sum(widths) + len(columns)), dtype=np.uint8)
    offset = 0
    for column, width in zip(columns, widths):
        grid[:, offset : offset + width] = (
            np.ascontiguousarray(column).view(np.uint8).reshape(m, width)
        )
        offset += width
        grid[:, offset] = ord(",")
        offset += 1
    grid[:, -1] = ord("\n")
    filled = grid != 0
    offsets = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(filled.sum(axis=1), out=offsets[1:])
    return grid[filled].tobytes(), offsets


def _truncate(path: Path, fraction: float) -> tuple[int, int]:
    """Cut a gzip file to ``fraction`` of its size; return kept bytes and complete lines left."""
    data = path.read_bytes()
    kept = int(len(data) * fraction)
    path.write_bytes(data[:kept])
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    text = inflater.decompress(data[:kept]) + inflater.flush()
    return kept, text.count(b"\n")


def _mix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijection on uint64 that looks random."""
    z = values.astype(np.uint64, copy=True)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _mix32(salt: int, values: np.ndarray) -> np.ndarray:
    """Murmur3's finaliser over ``values + salt``: a bijection on uint32 per salt."""
    z = (values.astype(np.uint64) + np.uint64(salt * 0x9E3779B1)).astype(np.uint32)
    z = (z ^ (z >> np.uint32(16))) * np.uint32(0x85EBCA6B)
    z = (z ^ (z >> np.uint32(13))) * np.uint32(0xC2B2AE35)
    return z ^ (z >> np.uint32(16))


def _hex8(salt: int, index: np.ndarray) -> np.ndarray:
    """Distinct indexes -> distinct 8-hex-digit strings (an ``S8`` array), stable per salt."""
    nibbles = (_mix32(salt, index)[:, None] >> _NIBBLE_SHIFTS) & np.uint32(0xF)
    return np.ascontiguousarray(_HEX_DIGITS[nibbles]).view("S8").ravel()


def _decimal(values: np.ndarray) -> np.ndarray:
    """Integers -> decimal byte strings, as narrow as the widest value.

    Converting each element is slow in numpy (~0.4 us), so the distinct values are rendered once
    and gathered: through a lookup table over the value range when that range is small, else
    through ``np.unique``.
    """
    values = np.asarray(values, dtype=np.int64)
    if not len(values):
        return values.astype("S1")
    low, high = int(values.min()), int(values.max())
    width = max(len(str(low)), len(str(high)))
    if high - low <= 1 << 17:
        return np.arange(low, high + 1).astype(f"S{width}")[values - low]
    distinct, index = np.unique(values, return_inverse=True)
    return distinct.astype(f"S{width}")[index]


def _skewed(rng: np.random.Generator, m: int, size: int, power: float) -> np.ndarray:
    """Indexes in ``0..size-1`` with a heavy head: larger ``power`` means a few values dominate."""
    return np.minimum((size * rng.random(m) ** power).astype(np.int64), size - 1)


def _probabilities(table: dict) -> np.ndarray:
    shares = np.array([v[0] if isinstance(v, tuple) else v for v in table.values()], dtype=float)
    return shares / shares.sum()


def _draw(rng: np.random.Generator, m: int, table: dict) -> np.ndarray:
    return np.array(list(table), dtype=np.int64)[
        rng.choice(len(table), size=m, p=_probabilities(table))
    ]


def _lookup(values: np.ndarray, mapping: dict[int, float]) -> np.ndarray:
    keys = np.array(list(mapping), dtype=np.int64)
    order = np.argsort(keys)
    return np.array(list(mapping.values()))[order][np.searchsorted(keys[order], values)]


def _weighted_mean(table: dict[int, tuple[float, float]]) -> float:
    shares = _probabilities(table)
    return float(sum(s * v[1] for s, v in zip(shares, table.values())))


def _parse_fault(text: str) -> tuple[FaultKind, float]:
    kind, sep, rate = text.partition("=")
    try:
        return FaultKind(kind), float(rate)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--fault wants KIND=RATE with KIND one of {[k.value for k in FaultKind]}, got {text!r}"
        ) from None


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the truth summary and writes it to ``--truth``."""
    parser = argparse.ArgumentParser(
        prog="python -m include.avazu.generator", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--out", required=True, help="output file; gzip when it ends with .gz")
    parser.add_argument(
        "--start-hour", type=int, default=AVAZU_HOURS[0], help="first YYMMDDHH hour"
    )
    parser.add_argument(
        "--hours",
        type=int,
        default=None,
        help="number of hours (default: up to the last Avazu hour)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--fault-rate", type=float, default=0.0, help="rate applied to every row fault kind"
    )
    parser.add_argument(
        "--fault",
        type=_parse_fault,
        action="append",
        default=[],
        metavar="KIND=RATE",
        help="rate for one kind (overrides --fault-rate)",
    )
    parser.add_argument(
        "--truncate-fraction",
        type=float,
        default=None,
        help="cut the gzip file to this fraction of its size",
    )
    parser.add_argument("--compresslevel", type=int, default=1)
    parser.add_argument(
        "--truth",
        default=None,
        help="where to write the ground truth JSON (default: <out>.truth.json)",
    )
    args = parser.parse_args(argv)
    rates = {kind: args.fault_rate for kind in FaultKind if args.fault_rate}
    rates.update(dict(args.fault))
    hours = args.hours
    if hours is None:
        hours = (
            len(AVAZU_HOURS) - AVAZU_HOURS.index(args.start_hour)
            if args.start_hour in AVAZU_HOURS
            else 1
        )
    spec = GeneratorSpec(
        args.rows,
        args.start_hour,
        hours,
        args.seed,
        rates,
        args.truncate_fraction,
        args.compresslevel,
    )
    try:
        truth = generate(spec, args.out)
    except ValueError as err:
        parser.exit(2, f"error: {err}\n")
    truth_path = args.truth or f"{args.out}.truth.json"
    Path(truth_path).write_text(truth.to_json())
    faults = ", ".join(f"{kind}={len(lines)}" for kind, lines in truth.faults.items()) or "none"
    print(
        f"wrote {truth.rows:,} rows over {len(truth.hours)} hours to {truth.path} "
        f"in {truth.elapsed_s:.1f}s; faults: {faults}; truth: {truth_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

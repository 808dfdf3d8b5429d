"""The Avazu row contract: columns, types, nullability and the validation every row must pass.

Everything else that touches an Avazu row (reader, sampler, statistics, Avro schema, ingestion)
takes its column list and rules from here, so there is one place to change them.

A row arrives as a line or as a list of raw string fields (the CSV is unquoted, so a line is
split on commas). :func:`parse_line` and :func:`parse_fields` return either a typed record (a
``dict`` keyed by column name) or a :class:`RowError` carrying a :class:`Reason`, the column at
fault and a message. A fast path takes the common clean row; anything that looks wrong goes to
a column-by-column diagnosis, and both paths give identical answers (the unit tests check it).

Which columns may be empty follows the seed's Avro schema: ``id``, ``click`` and ``hour`` are
required, every other column is nullable (an empty field becomes ``None``). The real file has
no empty fields at all, so the statistics count them.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

AVRO_NAMESPACE = "io.adpipeline.avazu"
AVRO_RECORD_NAME = "AdEvent"

UINT64_MAX = 2**64 - 1
INT32_MAX = 2**31 - 1
# Avazu writes -1 for "unknown" in some anonymous columns (C20); nothing smaller occurs.
SMALL_INT_MIN = -1

# Avazu's "device id unknown" value: it is on most rows of train.gz (about 80%), so it says
# nothing about the device (the partition key falls back to the IP for it, include.encoding.rows).
PLACEHOLDER_DEVICE_ID = "a99f214a"

# The train file covers ten days, 2014-10-21 00:00 to 2014-10-30 23:00, hour by hour.
FIRST_HOUR = 14102100
LAST_HOUR = 14103023


class Reason(enum.StrEnum):
    """Why a row was rejected. The value is what goes into bad-row records and statistics."""

    FIELD_COUNT = "FIELD_COUNT"
    EMPTY_REQUIRED = "EMPTY_REQUIRED"
    NOT_INTEGER = "NOT_INTEGER"
    OUT_OF_RANGE = "OUT_OF_RANGE"
    BAD_HOUR = "BAD_HOUR"
    BAD_HEX = "BAD_HEX"
    BAD_ENCODING = "BAD_ENCODING"
    LINE_TOO_LONG = "LINE_TOO_LONG"


class Kind(enum.Enum):
    """How a column is written in the CSV and what Python type it becomes."""

    UINT64 = "uint64"  # unsigned 64-bit integer in canonical decimal; kept as its decimal string
    HOUR = "hour"  # YYMMDDHH inside the data set's span; kept as an int
    INT = "int"  # small integer within [min_value, max_value]; kept as an int
    HEX8 = "hex8"  # exactly 8 lower-case hex digits (an anonymised hash); kept as a str
    TEXT = "text"  # any non-empty text; kept as a str


@dataclass(frozen=True)
class Column:
    """One column of the Avazu CSV."""

    name: str
    kind: Kind
    nullable: bool
    doc: str
    min_value: int | None = None
    max_value: int | None = None


def _small_int(
    name: str, doc: str, max_value: int = INT32_MAX, min_value: int = SMALL_INT_MIN
) -> Column:
    return Column(name, Kind.INT, True, doc, min_value, max_value)


def _hex(name: str, doc: str) -> Column:
    return Column(name, Kind.HEX8, True, doc)


COLUMNS: tuple[Column, ...] = (
    Column(
        "id",
        Kind.UINT64,
        False,
        "Ad impression id: unsigned 64-bit integer as a decimal string (may exceed 2^63-1).",
    ),
    Column("click", Kind.INT, False, "Label: 1 if the impression was clicked, else 0.", 0, 1),
    Column(
        "hour",
        Kind.HOUR,
        False,
        "Hour of the impression as YYMMDDHH (UTC by convention), 14102100..14103023.",
    ),
    _small_int("C1", "Anonymised categorical variable (values like 1005, 1002)."),
    _small_int(
        "banner_pos",
        "Position of the banner on the page (0, 1, 2, ... 7).",
        max_value=255,
        min_value=0,
    ),
    _hex("site_id", "Site id (hashed)."),
    _hex("site_domain", "Site domain (hashed)."),
    _hex("site_category", "Site category (hashed); a few dozen values."),
    _hex("app_id", "App id (hashed); 'ecad2386' marks site traffic (no app)."),
    _hex("app_domain", "App domain (hashed)."),
    _hex("app_category", "App category (hashed); a few dozen values."),
    _hex("device_id", "Device id (hashed); millions of values, 'a99f214a' dominates."),
    _hex("device_ip", "Device IP address (hashed); millions of values."),
    Column(
        "device_model",
        Kind.TEXT,
        True,
        "Device model (hashed in the real file, treated as free text).",
    ),
    _small_int("device_type", "Device type (0, 1, 2, 4, 5).", max_value=255, min_value=0),
    _small_int("device_conn_type", "Connection type (0, 2, 3, 5).", max_value=255, min_value=0),
    _small_int("C14", "Anonymised categorical variable (a few thousand values)."),
    _small_int("C15", "Anonymised categorical variable (banner width, e.g. 320)."),
    _small_int("C16", "Anonymised categorical variable (banner height, e.g. 50)."),
    _small_int("C17", "Anonymised categorical variable."),
    _small_int("C18", "Anonymised categorical variable (0..3)."),
    _small_int("C19", "Anonymised categorical variable."),
    _small_int("C20", "Anonymised categorical variable; -1 means unknown."),
    _small_int("C21", "Anonymised categorical variable."),
)

COLUMN_NAMES: tuple[str, ...] = tuple(c.name for c in COLUMNS)
HEADER_LINE = ",".join(COLUMN_NAMES)
# A row in the shape of train.gz, for documentation and smoke checks.
EXAMPLE_LINE = (
    "10000169349117863715,0,14102100,1005,0,1fbe01fe,f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,"
    "a99f214a,ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79"
)
FIELD_COUNT = len(COLUMNS)
COLUMN_INDEX: dict[str, int] = {name: i for i, name in enumerate(COLUMN_NAMES)}


def _hour_span(first: int, last: int) -> tuple[int, ...]:
    start, end = hour_to_datetime(first, check_span=False), hour_to_datetime(last, check_span=False)
    hours = []
    while start <= end:
        hours.append(datetime_to_hour(start))
        start += timedelta(hours=1)
    return tuple(hours)


@dataclass(frozen=True, slots=True)
class RowError:
    """A row that breaks the contract: why, which column (None: the row as a whole), a message."""

    reason: Reason
    field: str | None
    message: str


def hour_to_datetime(hour: int, check_span: bool = True) -> datetime:
    """Turn an Avazu ``YYMMDDHH`` value (e.g. 14102100) into an aware UTC datetime.

    Raises ``ValueError`` with one sentence when the value is not a real date-hour, or (with
    ``check_span``) lies outside the data set's 240 hours.
    """
    yy, rest = divmod(hour, 1_000_000)
    mm, rest = divmod(rest, 10_000)
    dd, hh = divmod(rest, 100)
    try:
        moment = datetime(2000 + yy, mm, dd, hh, tzinfo=timezone.utc)
    except ValueError:
        raise ValueError(f"hour {hour} is not a valid YYMMDDHH value") from None
    if check_span and hour not in AVAZU_HOUR_SET:
        raise ValueError(f"hour {hour} is outside the Avazu span {FIRST_HOUR}..{LAST_HOUR}")
    return moment


def datetime_to_hour(moment: datetime) -> int:
    """Turn an aware datetime into the Avazu ``YYMMDDHH`` value of the hour it falls in (UTC)."""
    if moment.tzinfo is None:
        raise ValueError(
            "datetime_to_hour needs an aware datetime; naive values have no defined UTC hour"
        )
    utc = moment.astimezone(timezone.utc)
    if not 2000 <= utc.year <= 2099:
        raise ValueError(f"{utc.isoformat()} cannot be written as YYMMDDHH")
    return (utc.year - 2000) * 1_000_000 + utc.month * 10_000 + utc.day * 100 + utc.hour


def hour_to_epoch_ms(hour: int) -> int:
    """Milliseconds since the Unix epoch at the start of an Avazu hour."""
    return int(hour_to_datetime(hour, check_span=False).timestamp()) * 1000


AVAZU_HOURS: tuple[int, ...] = _hour_span(FIRST_HOUR, LAST_HOUR)
AVAZU_HOUR_SET: frozenset[int] = frozenset(AVAZU_HOURS)


def avro_schema() -> dict[str, Any]:
    """The Avro record schema of one Avazu row, generated from :data:`COLUMNS`.

    ``id`` is an Avro ``string`` holding the canonical decimal: Avazu ids use the full unsigned
    64-bit range, which an Avro ``long`` (signed) cannot hold, and a string keeps the value
    readable in every consumer and identical to the Kafka message key. Nullable columns are
    ``["null", T]`` unions defaulting to null, so later schema versions stay compatible.
    """
    avro_type = {
        Kind.UINT64: "string",
        Kind.HOUR: "int",
        Kind.INT: "int",
        Kind.HEX8: "string",
        Kind.TEXT: "string",
    }
    fields = []
    for column in COLUMNS:
        field: dict[str, Any] = {"name": column.name, "doc": column.doc}
        if column.nullable:
            field["type"] = ["null", avro_type[column.kind]]
            field["default"] = None
        else:
            field["type"] = avro_type[column.kind]
        fields.append(field)
    return {
        "type": "record",
        "name": AVRO_RECORD_NAME,
        "namespace": AVRO_NAMESPACE,
        "doc": "One Avazu ad impression (a row of train.gz) with its click label.",
        "fields": fields,
    }


# The fast path: one regex over the whole line accepts the common clean row. It is stricter
# than the contract (e.g. ids near 2^64, small ints of ten digits, banner_pos above 99 and any
# empty nullable field fall through) and everything it does not accept is decided by the
# column-by-column slow path, so both paths always agree (the unit tests check this).
_SMALL = r"(?:-1|[0-9]{1,9})"  # |value| < 10^9 fits the contract's -1..2^31-1
_TINY = r"[0-9]{1,2}"  # banner_pos, device_type, device_conn_type: 0..99 fits 0..255
_HEX = r"[0-9a-f]{8}"
# Unsigned decimal without leading zeros, at most 19 digits, or 20 digits below 1.84e19 < 2^64.
_UINT64 = r"(?:[1-9][0-9]{0,18}|1[0-7][0-9]{18}|18[0-3][0-9]{17})"
# Public so that the batch encoders use the very same pattern: Arrow's (include.encoding.arrow,
# RE2; it is written in the syntax both engines share) and the C codec's (native/, which states
# the pattern it implements; include.encoding.native refuses it if the two differ).
CLEAN_ROW_PATTERN = ",".join(
    [
        _UINT64,
        "[01]",
        "1[0-9]{7}",
        _SMALL,
        _TINY,
        *[_HEX] * 8,
        "[^,]+",
        _TINY,
        _TINY,
        *[_SMALL] * 8,
    ]
)
_CLEAN_ROW = re.compile(CLEAN_ROW_PATTERN)
_HEX8 = re.compile(r"[0-9a-f]{8}")
_ASCII_INT = re.compile(r"-?[0-9]+")
_DIGITS = re.compile(r"[0-9]+")
_UINT64_DIGITS = len(str(UINT64_MAX))


def parse_line(line: str) -> dict[str, Any] | RowError:
    """Validate one CSV line (without its line break): the typed record or a :class:`RowError`.

    The typed record maps every column name to ``None`` (an empty nullable field), an ``int``
    (click, hour, the small integers) or a ``str`` (id as canonical decimal, hex and text fields).
    """
    if _CLEAN_ROW.fullmatch(line) is not None:
        return _typed_clean_row(line.split(","))
    return _parse_fields_slow(line.split(","))


def parse_fields(fields: list[str]) -> dict[str, Any] | RowError:
    """Validate one row given as raw string fields; same result as :func:`parse_line`."""
    if len(fields) != FIELD_COUNT:
        return _field_count_error(len(fields))
    # The clean-row pattern has exactly 23 commas, so it only matches when no field held one.
    if _CLEAN_ROW.fullmatch(",".join(fields)) is not None:
        return _typed_clean_row(fields)
    return _parse_fields_slow(fields)


class _IntCache(dict):
    """Decimal text -> int for text the clean-row pattern already accepted.

    The Avazu integer columns hold a few thousand distinct values, and a dict hit costs a
    fraction of ``int()``; the size cap keeps memory bounded whatever the input.
    """

    def __missing__(self, text: str) -> int:
        value = int(text)
        if len(self) < 100_000:
            self[text] = value
        return value


_INT_OF = _IntCache()


def _typed_clean_row(f: list[str]) -> dict[str, Any] | RowError:
    i = _INT_OF
    hour = i[f[2]]
    if hour not in AVAZU_HOUR_SET:
        return _parse_fields_slow(f)
    # Spelled out: a dict display is about a third cheaper than dict(zip(...)) on the hot path.
    return {
        "id": f[0], "click": i[f[1]], "hour": hour, "C1": i[f[3]], "banner_pos": i[f[4]],
        "site_id": f[5], "site_domain": f[6], "site_category": f[7],
        "app_id": f[8], "app_domain": f[9], "app_category": f[10],
        "device_id": f[11], "device_ip": f[12], "device_model": f[13],
        "device_type": i[f[14]], "device_conn_type": i[f[15]],
        "C14": i[f[16]], "C15": i[f[17]], "C16": i[f[18]], "C17": i[f[19]],
        "C18": i[f[20]], "C19": i[f[21]], "C20": i[f[22]], "C21": i[f[23]],
    }  # fmt: skip


def _field_count_error(found: int) -> RowError:
    return RowError(Reason.FIELD_COUNT, None, f"expected {FIELD_COUNT} fields, found {found}")


def _parse_fields_slow(fields: list[str]) -> dict[str, Any] | RowError:
    """Check a row column by column and report the first column that breaks the contract."""
    if len(fields) != FIELD_COUNT:
        return _field_count_error(len(fields))
    record: dict[str, Any] = {}
    for column, raw in zip(COLUMNS, fields):
        if raw == "":
            if not column.nullable:
                return RowError(
                    Reason.EMPTY_REQUIRED, column.name, f"{column.name} is required but empty"
                )
            record[column.name] = None
            continue
        value = _COLUMN_PARSERS[column.kind](column, raw)
        if isinstance(value, RowError):
            return value
        record[column.name] = value
    return record


def _shown(raw: str) -> str:
    return repr(raw if len(raw) <= 40 else raw[:40] + "...")


def _parse_uint64(column: Column, raw: str) -> str | RowError:
    if _DIGITS.fullmatch(raw) is None:
        return RowError(
            Reason.NOT_INTEGER,
            column.name,
            f"{column.name} {_shown(raw)} is not an unsigned decimal integer",
        )
    if raw[0] == "0" and raw != "0":
        # Two spellings of one id would defeat duplicate detection and keying.
        return RowError(
            Reason.NOT_INTEGER, column.name, f"{column.name} {_shown(raw)} has leading zeros"
        )
    if len(raw) > _UINT64_DIGITS or int(raw) > UINT64_MAX:
        return RowError(
            Reason.OUT_OF_RANGE, column.name, f"{column.name} {_shown(raw)} exceeds 2^64-1"
        )
    return raw


def _parse_int(column: Column, raw: str) -> int | RowError:
    if _ASCII_INT.fullmatch(raw) is None:
        return RowError(
            Reason.NOT_INTEGER, column.name, f"{column.name} {_shown(raw)} is not an integer"
        )
    value = int(raw)
    if not column.min_value <= value <= column.max_value:
        return RowError(
            Reason.OUT_OF_RANGE,
            column.name,
            f"{column.name} {value} is outside {column.min_value}..{column.max_value}",
        )
    return value


def _parse_hour(column: Column, raw: str) -> int | RowError:
    if len(raw) != 8 or _DIGITS.fullmatch(raw) is None:
        return RowError(Reason.BAD_HOUR, column.name, f"hour {_shown(raw)} is not YYMMDDHH")
    value = int(raw)
    if value in AVAZU_HOUR_SET:
        return value
    try:
        hour_to_datetime(value, check_span=False)
    except ValueError:
        return RowError(Reason.BAD_HOUR, column.name, f"hour {raw} is not a valid date and hour")
    return RowError(
        Reason.BAD_HOUR,
        column.name,
        f"hour {raw} is outside the Avazu span {FIRST_HOUR}..{LAST_HOUR}",
    )


def _parse_hex(column: Column, raw: str) -> str | RowError:
    if _HEX8.fullmatch(raw) is None:
        return RowError(
            Reason.BAD_HEX,
            column.name,
            f"{column.name} {_shown(raw)} is not 8 lower-case hex digits",
        )
    return raw


def _parse_text(column: Column, raw: str) -> str:
    return raw


_COLUMN_PARSERS = {
    Kind.UINT64: _parse_uint64,
    Kind.HOUR: _parse_hour,
    Kind.INT: _parse_int,
    Kind.HEX8: _parse_hex,
    Kind.TEXT: _parse_text,
}


def _check_layout() -> None:
    # The fast path hard-codes positions; fail at import if someone reorders COLUMNS.
    kinds = [c.kind for c in COLUMNS]
    expected = [
        Kind.UINT64,
        Kind.INT,
        Kind.HOUR,
        Kind.INT,
        Kind.INT,
        *[Kind.HEX8] * 8,
        Kind.TEXT,
        *[Kind.INT] * 10,
    ]
    example = _typed_clean_row(EXAMPLE_LINE.split(","))
    if kinds != expected or not isinstance(example, dict) or tuple(example) != COLUMN_NAMES:
        raise RuntimeError("COLUMNS no longer matches the positions parse_line relies on")


_check_layout()

"""Repairs a data engineer applies to a broken Avazu line, each re-validated by the one row contract.

A repair takes the raw bytes of a dead-lettered line and returns the 24 fields it reads them as,
or None when it does not apply. Nothing a repair returns is trusted: :func:`repair` hands the
fields to :func:`include.avazu.contract.parse_fields`, and only a row the contract accepts comes
back. So a repair may be generous in what it tries and can never let a bad row through.

Each repair undoes one way real files break:

``decode_cp1252``       text written in Windows-1252 (or Latin-1) instead of UTF-8
``unquote_fields``      CSV quoting around a field that holds the delimiter
``strip_whitespace``    spaces or tabs around fields
``lowercase_hex``       hash fields written in upper-case hex digits
``drop_trailing_empty`` a delimiter after the last field
``hour_from_timestamp`` the hour written as a timestamp (2014-10-21 00:00:00, ISO 8601) instead of YYMMDDHH
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from include.avazu.contract import COLUMN_INDEX, COLUMNS, FIELD_COUNT, Kind, datetime_to_hour, parse_fields

Fields = list[str]
Repair = Callable[[bytes], "Fields | None"]

_HOUR = COLUMN_INDEX["hour"]
_HEX_INDEXES = [i for i, column in enumerate(COLUMNS) if column.kind is Kind.HEX8]
_UPPER_HEX = re.compile(r"[0-9A-Fa-f]{8}")
# Windows-1252's letters above 127: Š Œ Ž š œ ž Ÿ and À..ÿ without × and ÷.
_CP1252_LETTERS = frozenset({0x8A, 0x8C, 0x8E, 0x9A, 0x9C, 0x9E, 0x9F, *range(0xC0, 0x100)} - {0xD7, 0xF7})
_TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%SZ", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M")


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _split(raw: bytes, count: int | None = None) -> Fields | None:
    """The line's comma-separated fields when it is UTF-8 (and has ``count`` of them, when given)."""
    text = _text(raw)
    if text is None:
        return None
    fields = text.split(",")
    return fields if count is None or len(fields) == count else None


def decode_cp1252(raw: bytes) -> Fields | None:
    """Bytes that are not UTF-8 but are Windows-1252 text (Latin-1 is its subset for letters).

    Only text that reads as letters: every byte above 127 must be a Windows-1252 letter, and
    none may look like damaged UTF-8 instead - a byte order mark, or a UTF-8 lead byte cut off at
    the end of a field (``caf\\xc3``). Those lines are corrupt, not in another encoding, and a
    repair must not turn them into text nobody wrote.
    """
    if _text(raw) is not None or b"\xff\xfe" in raw or b"\xfe\xff" in raw:
        return None
    for index, byte in enumerate(raw):
        if byte < 0x80:
            continue
        if byte not in _CP1252_LETTERS:
            return None
        if 0xC2 <= byte <= 0xDF and raw[index + 1:index + 2] in (b"", b","):
            return None
    return raw.decode("cp1252").split(",")


def unquote_fields(raw: bytes) -> Fields | None:
    """A line with CSV quoting, read as CSV: a quoted field may hold the delimiter."""
    text = _text(raw)
    if text is None or '"' not in text:
        return None
    try:
        [fields] = list(csv.reader([text], strict=True))
    except (csv.Error, ValueError):
        return None
    return fields


def strip_whitespace(raw: bytes) -> Fields | None:
    """Spaces or tabs around fields (a carriage return at the end of a line is read as a line end already)."""
    fields = _split(raw)
    if fields is None:
        return None
    stripped = [field.strip(" \t") for field in fields]
    return stripped if stripped != fields else None


def lowercase_hex(raw: bytes) -> Fields | None:
    """Hash fields written in upper-case hex."""
    fields = _split(raw, FIELD_COUNT)
    if fields is None:
        return None
    changed = False
    for index in _HEX_INDEXES:
        value = fields[index]
        if value != value.lower() and _UPPER_HEX.fullmatch(value):
            fields[index] = value.lower()
            changed = True
    return fields if changed else None


def drop_trailing_empty(raw: bytes) -> Fields | None:
    """One delimiter too many at the end of the line."""
    fields = _split(raw, FIELD_COUNT + 1)
    return fields[:-1] if fields is not None and fields[-1].strip() == "" else None


def hour_from_timestamp(raw: bytes) -> Fields | None:
    """The hour as a timestamp (whole hours only): turned into YYMMDDHH."""
    fields = _split(raw, FIELD_COUNT)
    if fields is None:
        return None
    value = fields[_HOUR].strip()
    for fmt in _TIMESTAMP_FORMATS:
        try:
            moment = datetime.strptime(value, fmt)
        except ValueError:
            continue
        if moment.minute or moment.second:
            return None  # not an hour: a repair must not invent which hour was meant
        # Avazu hours are UTC; a timestamp without a zone is read as UTC too.
        fields[_HOUR] = str(datetime_to_hour(moment.replace(tzinfo=timezone.utc)))
        return fields
    return None


REPAIRS: dict[str, Repair] = {
    "decode_cp1252": decode_cp1252,
    "unquote_fields": unquote_fields,
    "strip_whitespace": strip_whitespace,
    "lowercase_hex": lowercase_hex,
    "drop_trailing_empty": drop_trailing_empty,
    "hour_from_timestamp": hour_from_timestamp,
}


@dataclass(frozen=True)
class Repaired:
    """A row the contract accepts, and the repair that made it."""

    record: dict[str, Any]
    rule: str


def repair(raw: bytes, names: list[str]) -> Repaired | None:
    """The first of the named repairs whose fields the row contract accepts, or None.

    Repairs are tried one at a time and then, for a line broken in two ways, each after another
    (e.g. a Windows-1252 line that also has an upper-case hash).
    """
    for name in names:
        fields = REPAIRS[name](raw)
        if fields is not None:
            record = parse_fields(fields)
            if type(record) is dict:
                return Repaired(record, name)
    for first in names:
        fields = REPAIRS[first](raw)
        if fields is None:
            continue
        for second in names:
            if second == first:
                continue
            again = REPAIRS[second](",".join(fields).encode("utf-8"))
            if again is not None:
                record = parse_fields(again)
                if type(record) is dict:
                    return Repaired(record, f"{first}+{second}")
    return None

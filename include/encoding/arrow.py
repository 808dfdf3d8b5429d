"""The clean rows of a batch of lines, validated and Avro-encoded a column at a time with Arrow.

The fallback of :mod:`include.encoding.batch` where the C codec is not installed. Arrow's C++
kernels release the GIL, so the ingestor's worker threads encode while it produces:

* the clean-row pattern, anchored, decides which lines are clean (RE2: the pattern keeps to the
  syntax both engines share) and the hour must be one of the data set's 240 hours;
* clean lines are split on commas into 24 columns;
* each integer column is dictionary-encoded (Avazu's integer columns hold at most a few thousand
  values) and every distinct text becomes its Avro zigzag varint once;
* hex columns are the union branch, the length 8 and the text; the id and the device model get
  their length prefixes (bytes, not characters) from a table;
* one element-wise join writes the wire-format header and all fields: the payload of each row.

A line the batch does not take - anything the clean-row pattern rejects, an hour outside the data
set, a device model of 1,024 bytes or more - comes back as ``None`` and is decided row by row by
:func:`include.avazu.contract.parse_line`, exactly as before.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from include.avazu.contract import (AVAZU_HOURS, CLEAN_ROW_PATTERN, COLUMNS, EXAMPLE_LINE, FIELD_COUNT,
                                    PLACEHOLDER_DEVICE_ID, Kind)
from include.encoding.batch import EncodedBatch
from include.encoding.rows import LENGTH_PREFIXES, TABLED_LENGTHS, AdEventEncoder, zigzag_varint

_PATTERN = f"^{CLEAN_ROW_PATTERN}$"
_HOUR_TEXTS = pa.array([str(hour) for hour in AVAZU_HOURS], pa.string())
# Length prefixes below TABLED_LENGTHS bytes come from the row encoder's table; longer device
# models go row by row.
_LENGTH_PREFIXES = pa.array(LENGTH_PREFIXES, pa.binary())
_UNION_VALUE = b"\x02"  # union branch 1 (the value, not null), zigzag-encoded
_HEX8_PREFIX = _UNION_VALUE + zigzag_varint(8)


_FIRST_HEX = next(i for i, c in enumerate(COLUMNS) if c.kind is Kind.HEX8)
_HEX_COLUMNS = 8


def _hex_block(columns: list[pa.Array]) -> pa.Array:
    """The eight hex columns' encoded fields as one binary column: per column ``\x02 \x10`` and 8 digits.

    Every row has exactly 8 ASCII characters in each of them (the clean-row pattern), so the
    80 bytes of a row are assembled as a fixed-width block from the columns' data buffers.
    """
    rows = len(columns[0])
    block = np.empty((rows, _HEX_COLUMNS, 10), np.uint8)
    block[:, :, :2] = np.frombuffer(_HEX8_PREFIX, np.uint8)
    for k, column in enumerate(columns):
        offsets = np.frombuffer(column.buffers()[1], np.int32, count=rows + 1, offset=4 * column.offset)
        if offsets[-1] - offsets[0] != 8 * rows:
            raise AssertionError("a hex column of clean rows does not hold exactly 8 characters per row")
        block[:, k, 2:] = np.frombuffer(column.buffers()[2], np.uint8, count=8 * rows, offset=int(offsets[0])).reshape(rows, 8)
    ends = np.arange(0, 10 * _HEX_COLUMNS * (rows + 1), 10 * _HEX_COLUMNS, dtype=np.int32)
    return pa.Array.from_buffers(pa.binary(), rows, [None, pa.py_buffer(ends), pa.py_buffer(block)])


def _check_layout() -> None:
    # encode() relies on these; fail at import if the contract changes under it.
    shape = [(c.kind, c.nullable) for c in COLUMNS if c.kind in (Kind.UINT64, Kind.TEXT, Kind.HEX8)]
    expected = [(Kind.UINT64, False), *[(Kind.HEX8, True)] * 8, (Kind.TEXT, True)]
    names = [c.name for c in COLUMNS]
    hex_columns = [i for i, c in enumerate(COLUMNS) if c.kind is Kind.HEX8]
    if (shape != expected or names[2] != "hour" or names[11:13] != ["device_id", "device_ip"]
            or hex_columns != list(range(_FIRST_HEX, _FIRST_HEX + _HEX_COLUMNS))):
        raise RuntimeError("the Avazu contract no longer matches what include.encoding.arrow relies on")


_check_layout()


class ArrowEncoder:
    """``encode(lines)``: per line, the wire-format payload and key, or ``None`` (an :class:`EncodedBatch`).

    ``None`` means "not a clean row: ask :func:`parse_line`". A clean row's payload and key are
    byte for byte what :class:`AdEventEncoder` and :func:`include.encoding.rows.partition_key`
    give for ``parse_line(line)``.
    """

    name = "arrow"

    def __init__(self, encoder: AdEventEncoder):
        self.header = encoder.header
        # Per integer column: decimal text -> encoded field (varint, after the union branch when
        # nullable). Bounded like the row encoder's caches: the texts come from clean rows only.
        self._varints = [({}, c.nullable) if c.kind in (Kind.INT, Kind.HOUR) else None for c in COLUMNS]

    def encode(self, lines: Sequence[str]) -> EncodedBatch:
        try:
            text = pa.array(lines, pa.string())
        except (pa.ArrowException, UnicodeError):
            # Not representable as UTF-8 (e.g. a lone surrogate): leave the whole batch to parse_line.
            return EncodedBatch([None] * len(lines), [None] * len(lines), 0, 0,
                                sum(len(line.encode("utf-8", "surrogatepass")) for line in lines), list(range(len(lines))))
        if not lines:
            return EncodedBatch([], [], 0, 0, 0, [])
        clean = pc.match_substring_regex(text, _PATTERN)
        # Lines that are not clean are swapped for a clean one so that every row splits into 24
        # fields; their results are dropped at the end.
        fields = pc.split_pattern(pc.if_else(clean, text, EXAMPLE_LINE), ",").flatten()
        # Now every row has exactly 24 fields: column i is every 24th field from the i-th on.
        starts = np.arange(0, len(fields), FIELD_COUNT)
        columns = [fields.take(starts + i) for i in range(FIELD_COUNT)]
        clean = pc.and_(clean, pc.is_in(columns[2], value_set=_HOUR_TEXTS))
        parts: list = [self.header]
        for index, (column, values, varints) in enumerate(zip(COLUMNS, columns, self._varints)):
            if varints is not None:
                parts.append(self._varint_column(values, *varints))
            elif column.kind is Kind.HEX8:
                if index == _FIRST_HEX:
                    parts.append(_hex_block(columns[_FIRST_HEX:_FIRST_HEX + _HEX_COLUMNS]))
            elif column.kind is Kind.UINT64:
                # The id: at most 20 decimal digits, so its length is always in the table.
                raw = values.cast(pa.binary())
                parts += [_LENGTH_PREFIXES.take(pc.binary_length(raw)), raw]
            else:  # TEXT, the device model: any length, in bytes; long ones go row by row
                raw = values.cast(pa.binary())
                length = pc.binary_length(raw)
                fits = pc.less(length, TABLED_LENGTHS)
                clean = pc.and_(clean, fits)
                parts += [_UNION_VALUE, _LENGTH_PREFIXES.take(pc.if_else(fits, length, 0)), raw]
        payloads = pc.if_else(clean, pc.binary_join_element_wise(*parts, b""), None)
        device, ip = columns[11], columns[12]
        keys = pc.if_else(pc.equal(device, PLACEHOLDER_DEVICE_ID), pc.binary_join_element_wise("ip:", ip, ""), device)
        taken = pc.sum(clean).as_py() or 0
        payload_bytes = pc.sum(pc.binary_length(payloads)).as_py() or 0
        text_bytes = pc.sum(pc.binary_length(text)).as_py() or 0
        declined = np.flatnonzero(~clean.to_numpy(zero_copy_only=False)).tolist()
        return EncodedBatch(payloads.to_pylist(), keys.to_pylist(), taken, payload_bytes, text_bytes, declined)

    @staticmethod
    def _varint_column(values: pa.Array, encoded: dict[str, bytes], nullable: bool) -> pa.Array:
        dictionary = pc.dictionary_encode(values)
        prefix = _UNION_VALUE if nullable else b""
        table = []
        for text in dictionary.dictionary.to_pylist():
            field = encoded.get(text)
            if field is None:
                field = prefix + zigzag_varint(int(text))
                if len(encoded) < 100_000:
                    encoded[text] = field
            table.append(field)
        return pa.array(table, pa.binary()).take(dictionary.indices)

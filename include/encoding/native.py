"""The C codec (native/avazu_rowcodec.c), refused when it does not fit the contract: as a batch
encoder for the ingestion, as a reader of the clean rows' figures for the EDA survey, and as a
counter of an int field of encoded records for the checks that count records in Kafka."""

from __future__ import annotations

from array import array
from typing import Sequence

import numpy as np

from include.avazu.contract import AVAZU_HOURS, CLEAN_ROW_PATTERN, COLUMN_NAMES, PLACEHOLDER_DEVICE_ID
from include.encoding.batch import EncodedBatch, RowCodec, RowCodecUnavailable
from include.encoding.rows import AdEventEncoder

try:
    import avazu_rowcodec as _native
except ImportError:  # not built here: `make install` builds it (needs a C compiler and Python's headers)
    _native = None


def native_codec_problem() -> str | None:
    """Why the C codec cannot be used here, or ``None`` when it can."""
    if _native is None:
        return "the C codec avazu_rowcodec is not installed (`make install` builds it from native/)"
    if _native.CLEAN_ROW_PATTERN != CLEAN_ROW_PATTERN or _native.COLUMNS != ",".join(COLUMN_NAMES):
        return ("the installed avazu_rowcodec implements another clean-row pattern or column layout than "
                "include.avazu.contract; update native/avazu_rowcodec.c and reinstall it (`make install`)")
    if _native.PLACEHOLDER_DEVICE_ID != PLACEHOLDER_DEVICE_ID:
        return "the installed avazu_rowcodec keys rows by another placeholder device id than include.avazu.contract"
    return None


def int_field_counts():
    """The C codec's ``int_field_counts(values, header, steps) -> (counts, declined)`` (see
    native/avazu_rowcodec.c), or None where the codec is not installed or older than it."""
    return getattr(_native, "int_field_counts", None)


class NativeEncoder:
    """``encode(lines)`` by the C codec: the same :class:`EncodedBatch` as the Arrow path, byte for byte."""

    name = RowCodec.NATIVE.value

    def __init__(self, encoder: AdEventEncoder):
        problem = native_codec_problem()
        if problem is not None:
            raise RowCodecUnavailable(problem)
        self._header = encoder.header
        self._hours = array("I", sorted(AVAZU_HOURS)).tobytes()

    def encode(self, lines: Sequence[str]) -> EncodedBatch:
        return EncodedBatch(*_native.encode(lines, self._header, self._hours))


# The packed record of one clean row that ``columns`` returns (its ROW_LAYOUT, native byte order).
ROW_DTYPE = np.dtype([("id", "=u8"), ("hour", "=u4"),
                      *[(name, "=u4") for name in ("site_id", "site_domain", "site_category",
                                                   "app_id", "app_domain", "app_category")],
                      *[(name, "u1") for name in ("click", "banner_pos", "device_type", "device_conn_type")]])
_ROW_LAYOUT = ",".join(f"{name}:{ROW_DTYPE[name].kind}{ROW_DTYPE[name].itemsize}" for name in ROW_DTYPE.names)


class NativeColumns:
    """``columns(lines)``: the clean rows' figures as a :data:`ROW_DTYPE` array, and the declined lines.

    A clean row's figures are exactly its fields as ``parse_line`` reads them: the id as an unsigned
    integer, the hex fields as 32-bit numbers (``f"{n:08x}"`` gives the text back), the others as
    integers. A declined line (its index in the list) is for ``parse_line`` to decide.
    """

    def __init__(self):
        problem = native_codec_problem()
        if problem is None and getattr(_native, "ROW_LAYOUT", None) != _ROW_LAYOUT:
            problem = ("the installed avazu_rowcodec has no columns() of the layout include.encoding.native reads; "
                       "reinstall it (`make install`)")
        if problem is not None:
            raise RowCodecUnavailable(problem)
        self._hours = array("I", sorted(AVAZU_HOURS)).tobytes()

    def columns(self, lines: Sequence[str]) -> tuple[np.ndarray, list[int]]:
        rows, declined = _native.columns(lines, self._hours)
        return np.frombuffer(rows, ROW_DTYPE), declined

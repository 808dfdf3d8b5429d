"""The C codec (native/avazu_rowcodec.c) as a batch encoder, refused when it does not fit the contract."""

from __future__ import annotations

from array import array
from typing import Sequence

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

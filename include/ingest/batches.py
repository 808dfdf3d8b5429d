"""The clean rows of a batch of lines, validated and encoded in one call: by the C codec, or by Arrow.

Row by row, Python spends about 19 microseconds on each Avazu line (match the clean-row pattern,
split, build the typed record, encode it); at 40 million rows that alone caps the ingestion near
50,000 rows/s on two cores. Nearly every line of the data set is a *clean* row - the shape
:data:`include.avazu.contract.CLEAN_ROW_PATTERN` describes - and for those the verdict and the
encoding are fixed, so they can be done for a whole batch at once, outside the interpreter:

``native``
    ``avazu_rowcodec`` (native/avazu_rowcodec.c, built and installed by ``make install``): one
    pass in C over each line's bytes, without the GIL; about 0.8 us a row on the development
    machine, building the result's Python objects included.
``arrow``
    :class:`include.ingest.columnar.ColumnarEncoder`: Arrow's compute kernels a column at a
    time. About 6 us a row of CPU; the fallback where the C codec is not installed.
``auto``
    ``native`` when it is installed and implements the contract's current pattern, else ``arrow``.

Both return an :class:`EncodedBatch`: per line the wire-format payload and partition key of a
clean row, or ``None`` for a line the batch does not take, which :func:`parse_line` then decides
row by row in its place. So neither ever changes a verdict; the unit tests hold both to
byte-for-byte agreement with the row path on mutated rows.
"""

from __future__ import annotations

import logging
from array import array
from dataclasses import dataclass
from typing import Protocol, Sequence

from include.avazu.contract import AVAZU_HOURS, CLEAN_ROW_PATTERN, COLUMN_NAMES
from include.ingest.config import RowCodec
from include.ingest.rows import PLACEHOLDER_DEVICE_ID, AdEventEncoder

log = logging.getLogger(__name__)

try:
    import avazu_rowcodec as _native
except ImportError:  # not built here: `make install` builds it (needs a C compiler and Python's headers)
    _native = None


class RowCodecUnavailable(RuntimeError):
    """``row_codec: native`` was asked for, and the C codec is not installed or does not fit the contract."""


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """Per line of a batch the payload and key of a clean row, or ``None`` for :func:`parse_line` to decide."""

    values: list[bytes | None]
    keys: list[str | None]
    taken: int  # lines with a payload
    payload_bytes: int  # their payloads' total size
    text_bytes: int  # the lines' total size in UTF-8, line breaks not counted
    declined: list[int]  # positions of the lines without a payload, in order


class BatchEncoder(Protocol):
    name: str

    def encode(self, lines: Sequence[str]) -> EncodedBatch: ...


def native_codec_problem() -> str | None:
    """Why the C codec cannot be used here, or ``None`` when it can."""
    if _native is None:
        return "the C codec avazu_rowcodec is not installed (`make install` builds it from native/)"
    if _native.CLEAN_ROW_PATTERN != CLEAN_ROW_PATTERN or _native.COLUMNS != ",".join(COLUMN_NAMES):
        return ("the installed avazu_rowcodec implements another clean-row pattern or column layout than "
                "include.avazu.contract; update native/avazu_rowcodec.c and reinstall it (`make install`)")
    if _native.PLACEHOLDER_DEVICE_ID != PLACEHOLDER_DEVICE_ID:
        return "the installed avazu_rowcodec keys rows by another placeholder device id than include.ingest.rows"
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


def batch_encoder(encoder: AdEventEncoder, codec: RowCodec | str = RowCodec.AUTO) -> BatchEncoder:
    """The batch encoder ``codec`` names, for rows encoded like ``encoder``'s (see the module doc)."""
    codec = RowCodec(codec)
    if codec is not RowCodec.ARROW:
        try:
            return NativeEncoder(encoder)
        except RowCodecUnavailable as problem:
            if codec is RowCodec.NATIVE:
                raise RowCodecUnavailable(f"row_codec is native, but {problem}") from None
            log.warning("encoding clean rows with Arrow, several times slower: %s", problem)
    from include.ingest.columnar import ColumnarEncoder  # imports pyarrow, only when it is used

    return ColumnarEncoder(encoder)

"""Avazu rows on their way to Kafka: the row encoder, and the batch encoders of clean rows.

* :mod:`include.encoding.rows`: one row - its Avro wire-format value and its partition key;
* :mod:`include.encoding.batch`: the batch protocol (:class:`EncodedBatch`, :class:`RowCodec`);
* :mod:`include.encoding.native`: the C codec (native/avazu_rowcodec.c);
* :mod:`include.encoding.arrow`: Arrow's compute kernels, the fallback;
* :func:`batch_encoder` (here): the batch encoder a :class:`RowCodec` names.

The clean rows of a batch of lines are validated and encoded in one call: by the C codec, or by Arrow.

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
    :class:`include.encoding.arrow.ArrowEncoder`: Arrow's compute kernels a column at a
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

from include.encoding.batch import BatchEncoder, RowCodec, RowCodecUnavailable
from include.encoding.native import NativeEncoder
from include.encoding.rows import AdEventEncoder

log = logging.getLogger(__name__)


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
    from include.encoding.arrow import ArrowEncoder  # imports pyarrow, only when it is used

    return ArrowEncoder(encoder)

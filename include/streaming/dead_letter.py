"""Dead-letter records: the failed input unchanged, with why and where in its headers.

The value and key are copied byte for byte (a reader of the DLQ sees exactly what the producer
sent); the record's own headers are kept and these are appended, all prefixed ``dlq.`` so they
never collide with the producer's.
"""

from __future__ import annotations

import datetime as dt

from include.kafka.headers import DLQ_HEADER_PREFIX
from include.streaming.records import Headers, InputRecord

# A stack of nested errors can make a message of megabytes; a header is for people to read.
MAX_MESSAGE_CHARS = 1000


def dead_letter_headers(error: BaseException, source: InputRecord, processor: str,
                        failed_at: dt.datetime) -> Headers:
    """The ``dlq.*`` headers describing why ``source`` failed in ``processor``."""
    message = str(error)
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[:MAX_MESSAGE_CHARS - 3] + "..."
    fields = {
        "error.class": type(error).__name__,
        "error.message": message,
        "source.topic": source.topic,
        "source.partition": str(source.partition),
        "source.offset": str(source.offset),
        "processor": processor,
        "failed.at": failed_at.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds"),
    }
    return tuple((DLQ_HEADER_PREFIX + name, value.encode("utf-8")) for name, value in fields.items())


def dead_letter_record_headers(error: BaseException, source: InputRecord, processor: str,
                               failed_at: dt.datetime) -> Headers:
    """The full header list of the DLQ copy of ``source``: its own headers, then the ``dlq.*`` ones."""
    return source.headers + dead_letter_headers(error, source, processor, failed_at)


def read_dead_letter_headers(headers: list[tuple[str, bytes]] | Headers | None) -> dict[str, str]:
    """The ``dlq.*`` headers of a DLQ record as a dict without the prefix (for readers and tests)."""
    return {
        name[len(DLQ_HEADER_PREFIX):]: (value or b"").decode("utf-8", "replace")
        for name, value in (headers or ())
        if name.startswith(DLQ_HEADER_PREFIX)
    }

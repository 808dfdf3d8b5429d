"""Seed 003: words on ``input-topic`` upper-cased onto ``output-topic``.

The seed sends its words without keys; the transform keeps each record in its input partition, so
the words of one partition come out in the order they went in, whatever the partition count
(output-topic needs at least as many partitions as input-topic; the processor says so otherwise).
"""

from __future__ import annotations

from include.streaming.records import InputRecord, OutputRecord, Transform, TransformContext

# The seed's test messages, in its order.
SEED_WORDS = ("hello", "world", "kafka", "streaming", "data")


def upper_case(record: InputRecord) -> list[OutputRecord]:
    """The record with its value upper-cased; bytes that are not UTF-8 are not words and fail."""
    value = None if record.value is None else record.value.decode("utf-8").upper().encode("utf-8")
    return [OutputRecord(key=record.key, value=value, headers=record.headers,
                         partition=record.partition)]


def uppercase_transform(context: TransformContext) -> Transform:
    """Transform factory for the seed 003 processor (it needs nothing from the context)."""
    return upper_case

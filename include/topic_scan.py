"""Read a whole topic as it is now, from each partition's start to its end, without a group."""

from __future__ import annotations

import time
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition


def scan_topic(consumer: Consumer, topic: str, timeout: float = 60.0,
               batch: int = 1000) -> Iterator[Message]:
    """Yield every record the topic holds, partition by partition from the low watermark.

    The consumer is assigned, not subscribed: no group offsets are read or committed. Create it
    with ``enable.partition.eof=True``; the end of a partition is its end-of-partition event, which
    also comes when the last offsets are transaction markers that deliver no record (with
    ``read_committed`` the end is the last stable offset). Raises TimeoutError naming the
    partitions not read to the end, and KafkaException for a missing topic or a consumer error.
    """
    described = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if described is None or described.error is not None:
        raise KafkaException(described.error if described is not None
                             else KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART))
    pending: set[int] = set()
    assignment = []
    for partition in sorted(described.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high > low:
            pending.add(partition)
            assignment.append(TopicPartition(topic, partition, low))
    if not assignment:
        return
    consumer.assign(assignment)
    deadline = time.monotonic() + timeout
    try:
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {timeout:.0f} s "
                                   f"(partitions not read to the end: {sorted(pending)})")
            # A short timeout: consume() waits that long whenever fewer records than asked are left,
            # which is every time near the end of a partition.
            for message in consumer.consume(num_messages=batch, timeout=0.02):
                error = message.error()
                if error is None:
                    yield message
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                else:
                    raise KafkaException(error)
    finally:
        consumer.unassign()

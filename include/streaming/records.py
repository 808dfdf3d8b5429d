"""What a transform sees and what it returns.

A transform is a plain function (or callable object) from one consumed record to the records it
wants written: ``InputRecord -> Iterable[OutputRecord]``. An empty result filters the record out;
an exception sends it to the processor's dead-letter topic. Transforms never see Kafka clients, so
they are unit-tested with no broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

Headers = tuple[tuple[str, bytes], ...]


@dataclass(frozen=True, slots=True)
class InputRecord:
    """One consumed record with where it came from."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: Headers = ()

    @classmethod
    def from_message(cls, message: Any) -> InputRecord:
        """Copy a confluent_kafka.Message (its accessors are C calls; read each once)."""
        timestamp_type, timestamp = message.timestamp()
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            value=message.value(),
            # Type 0 is TIMESTAMP_NOT_AVAILABLE.
            timestamp_ms=timestamp if timestamp_type else None,
            headers=tuple(message.headers() or ()),
        )


@dataclass(frozen=True, slots=True)
class OutputRecord:
    """A record for the processor's output topic.

    ``partition`` None lets the producer's partitioner choose from the key; a transform that maps
    records one to one may keep the input partition so unkeyed records stay in order.
    """

    key: bytes | None
    value: bytes | None
    headers: Headers = ()
    partition: int | None = None


Transform = Callable[[InputRecord], Iterable[OutputRecord]]


@dataclass(frozen=True)
class TransformContext:
    """What a transform factory may need to build its transform, resolved when the task runs.

    ``registry`` is a confluent_kafka SchemaRegistryClient when the processor was given one.
    """

    input_topics: Sequence[str]
    output_topic: str
    dlq_topic: str | None = None
    registry: Any = None


TransformFactory = Callable[..., Transform]

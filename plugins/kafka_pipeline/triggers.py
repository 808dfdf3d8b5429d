"""Triggers: the waiting part of event-driven scheduling, run by Airflow's triggerer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Hashable, Sequence
from typing import Any

from airflow.providers.apache.kafka.triggers.shared_stream import KafkaSharedStreamTrigger
from airflow.triggers.base import TriggerEvent


# The watcher's own Kafka connection: its own group.id, enable.auto.commit=false (the provider refuses
# to start otherwise), auto.offset.reset=earliest (a new watcher misses nothing; extra events are
# only extra wake-up calls).
DLQ_WATCH_CONN_ID = "kafka_dlq_watch"


class DeadLettersArrived(KafkaSharedStreamTrigger):
    """Fires when records arrive on DLQ topics: a wake-up call for the reprocessing DAG, nothing more.

    The provider's shared-stream trigger commits a message only after its trigger event is stored
    (its connection needs ``enable.auto.commit=false`` and a group of its own), so no arrival is
    missed. The record itself is not read here - DLQ values are Avro or arbitrary bytes - and the
    run that wakes up reads the DLQ from its own group's committed offsets: a missed or doubled
    event changes nothing but when that run starts.

    Without ``topics`` it watches the topic of every DLQ in include/config/dlq.yaml, looked up in
    the triggerer: the DAG file that creates the trigger reads no settings when it is parsed.
    """

    def __init__(self, *, topics: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(topics=topics, **kwargs)

    @staticmethod
    def watched(topics: Sequence[str]) -> list[str]:
        """``topics``, or when there are none the declared DLQ topics; sorted."""
        if topics:
            return sorted(topics)
        from include.dlq.config import load_dlq_config

        return sorted(spec.topic for spec in load_dlq_config().dlqs)

    def shared_stream_key(self) -> Hashable:
        return "kafka-shared-stream", tuple(self.watched(self.topics)), self.kafka_config_id

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> Any:
        return super().create_shared_stream_producer({**kwargs, "topics": cls.watched(kwargs["topics"])})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        topics = self.watched(self.topics)
        async for value in shared_stream:
            yield TriggerEvent({"topics": topics, "value_bytes": len(value or b"")})

"""Triggers: the waiting part of event-driven scheduling, run by Airflow's triggerer."""

from __future__ import annotations

from collections.abc import AsyncIterator
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
    """

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        async for value in shared_stream:
            yield TriggerEvent({"topics": self.topics, "value_bytes": len(value or b"")})

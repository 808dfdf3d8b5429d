"""Creating the stream pipelines' topics when they are missing (the broker never auto-creates)."""

from __future__ import annotations

from typing import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

# The declared names of the stream pipelines' topics (include/config/topics.yaml declares them for
# provisioning); DAGs take them as parameter defaults so tests can pass unique names.
WEB_EVENTS = "web-events"
PURCHASE_EVENTS = "purchase-events"
ANALYTICS_EVENTS = "analytics-events"
ANALYTICS_DLQ = "analytics-dlq"
INPUT_TOPIC = "input-topic"
OUTPUT_TOPIC = "output-topic"


def ensure_topics(admin: AdminClient, topics: Iterable[str], partitions: int = 3,
                  timeout: float = 30.0) -> list[str]:
    """Create each missing topic with ``partitions`` partitions; return the ones this call created.

    Existing topics are left as they are (their partition count included): declared topics are
    reconciled by the provisioning DAG, this only makes a fresh broker usable. The replication
    factor is the broker's default.
    """
    wanted = list(dict.fromkeys(topics))
    existing = admin.list_topics(timeout=timeout).topics
    missing = [t for t in wanted if t not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(t, num_partitions=partitions, replication_factor=-1) for t in missing],
        operation_timeout=timeout, request_timeout=timeout)
    created = []
    for topic, future in futures.items():
        try:
            future.result()
            created.append(topic)
        except KafkaException as exc:
            # Another task created it between the listing and now.
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    return sorted(created)

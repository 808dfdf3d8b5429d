"""The stream pipelines' declared topic names, and ensure_topics to create missing ones on a fresh broker."""

from __future__ import annotations

from include.kafka_admin.topics import ensure_topics

__all__ = ["ensure_topics", "WEB_EVENTS", "PURCHASE_EVENTS", "ANALYTICS_EVENTS", "ANALYTICS_DLQ",
           "INPUT_TOPIC", "OUTPUT_TOPIC"]

# The declared names of the stream pipelines' topics (include/config/topics.yaml declares them for
# provisioning); DAGs take them as parameter defaults so tests can pass unique names.
WEB_EVENTS = "web-events"
PURCHASE_EVENTS = "purchase-events"
ANALYTICS_EVENTS = "analytics-events"
ANALYTICS_DLQ = "analytics-dlq"
INPUT_TOPIC = "input-topic"
OUTPUT_TOPIC = "output-topic"

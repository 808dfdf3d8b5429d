"""The DAG params that name the stream pipelines' topics, declared once for every stream DAG."""

from __future__ import annotations

from airflow.sdk import Param

from include.streaming import topics

# Param name -> the declared topic it defaults to (include/config/topics.yaml).
STREAM_TOPIC_DEFAULTS = {
    "web_events_topic": topics.WEB_EVENTS,
    "purchase_events_topic": topics.PURCHASE_EVENTS,
    "analytics_events_topic": topics.ANALYTICS_EVENTS,
    "analytics_dlq_topic": topics.ANALYTICS_DLQ,
    "input_topic": topics.INPUT_TOPIC,
    "output_topic": topics.OUTPUT_TOPIC,
}


def stream_topic_params(*names: str) -> dict[str, Param]:
    """Params for the named topics (all six when none are named), defaulting to the declared names."""
    return {name: Param(STREAM_TOPIC_DEFAULTS[name], type="string") for name in names or STREAM_TOPIC_DEFAULTS}

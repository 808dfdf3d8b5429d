"""The parts the stream DAGs share: topic params, the simulator tasks and the two processors.

stream_processors (always on), stream_simulators and stream_pipelines_e2e build themselves from
these, so a topic, a simulator or a processor's wiring is written once. Each reads its topics,
counts and limits from its own DAG's params.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import Param, task
from kafka_pipeline.failures import fails_cleanly

from include.streaming import topics
from include.streaming.analytics import DLQ_NOTICE
from kafka_pipeline.operators.stream import StreamProcessorOperator

# A deployment that runs its own copy of the stream pipelines beside the declared one (a sandbox)
# gives every stream topic and consumer group this suffix.
STREAM_SUFFIX = os.environ.get("AVAZU_STREAM_SUFFIX", "")
# Param name -> the declared topic it defaults to (include/config/topics.yaml).
STREAM_TOPIC_DEFAULTS = {name: topic + STREAM_SUFFIX for name, topic in {
    "web_events_topic": topics.WEB_EVENTS,
    "purchase_events_topic": topics.PURCHASE_EVENTS,
    "analytics_events_topic": topics.ANALYTICS_EVENTS,
    "analytics_dlq_topic": topics.ANALYTICS_DLQ,
    "input_topic": topics.INPUT_TOPIC,
    "output_topic": topics.OUTPUT_TOPIC,
}.items()}


# What each topic param is for, in the trigger form.
STREAM_TOPIC_ROLES = {
    "web_events_topic": "Web events in (seed 004).",
    "purchase_events_topic": "Purchase events in (seed 004).",
    "analytics_events_topic": "Analytics events out (seed 004).",
    "analytics_dlq_topic": "Events the analytics processor could not transform (seed 004's DLQ).",
    "input_topic": "Words in (seed 003).",
    "output_topic": "Upper-cased words out (seed 003).",
}


def stream_topic_params(*names: str) -> dict[str, Param]:
    """Params for the named topics (all six when none are named), defaulting to the declared names."""
    return {name: Param(STREAM_TOPIC_DEFAULTS[name], type="string", description=STREAM_TOPIC_ROLES[name])
            for name in names or STREAM_TOPIC_DEFAULTS}


def analytics_processor(group_id: str, **kwargs: Any) -> StreamProcessorOperator:
    """Seed 004: web and purchase events -> analytics-events, failures -> analytics-dlq."""
    return StreamProcessorOperator(
        task_id="analytics_processor",
        transform_factory="include.streaming.analytics.analytics_transform",
        transform_kwargs={"web_topic": "{{ params.web_events_topic }}",
                          "purchase_topic": "{{ params.purchase_events_topic }}"},
        input_topics=["{{ params.web_events_topic }}", "{{ params.purchase_events_topic }}"],
        output_topic="{{ params.analytics_events_topic }}",
        dlq_topic="{{ params.analytics_dlq_topic }}",
        group_id=group_id,
        max_runtime="{{ params.max_runtime }}",
        dead_letter_notice=DLQ_NOTICE,
        schema_registry_conn_id="schema_registry_default",
        **kwargs,
    )


def uppercase_processor(group_id: str, **kwargs: Any) -> StreamProcessorOperator:
    """Seed 003: input-topic -> upper-cased -> output-topic."""
    return StreamProcessorOperator(
        task_id="uppercase_processor",
        transform_factory="include.streaming.words.uppercase_transform",
        input_topics=["{{ params.input_topic }}"],
        output_topic="{{ params.output_topic }}",
        group_id=group_id,
        max_runtime="{{ params.max_runtime }}",
        **kwargs,
    )


@task
@fails_cleanly
def simulate_web_events(params=None) -> dict:
    """Publish web events to the web events topic; some miss fields (seed 004)."""
    from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS, publish, web_events
    from kafka_pipeline.hooks import KafkaClusterHook

    producer = KafkaClusterHook().producer(**SIMULATOR_PRODUCER_SETTINGS)
    events = web_events(params["web_events"], seed=params["seed"], bad_ratio=params["bad_ratio"])
    return publish(producer, params["web_events_topic"], events, rate=params["rate"]).as_dict()


@task
@fails_cleanly
def simulate_purchase_events(params=None) -> dict:
    """Publish purchase events to the purchase events topic; some are malformed (seed 004)."""
    from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS, publish, purchase_events
    from kafka_pipeline.hooks import KafkaClusterHook

    producer = KafkaClusterHook().producer(**SIMULATOR_PRODUCER_SETTINGS)
    events = purchase_events(params["purchase_events"], seed=params["seed"], bad_ratio=params["bad_ratio"])
    return publish(producer, params["purchase_events_topic"], events, rate=params["rate"]).as_dict()


@task
@fails_cleanly
def publish_words(params=None) -> dict:
    """Publish the words to the input topic (seed 003)."""
    from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS, publish, word_events
    from kafka_pipeline.hooks import KafkaClusterHook

    producer = KafkaClusterHook().producer(**SIMULATOR_PRODUCER_SETTINGS)
    return publish(producer, params["input_topic"], word_events(params["words"])).as_dict()

"""The parts the stream DAGs share: topic params, the simulator tasks and the two processors.

stream_processors (always on), stream_simulators and stream_pipelines_e2e build themselves from
these, so a topic, a simulator or a processor's wiring is written once. Each reads its topics,
counts and limits from its own DAG's params. A topic param left empty is the topic with its role in
include/config/topics.yaml, looked up when a task runs (a DAG file reads no files when parsed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from airflow.sdk import Param, task
from kafka_pipeline.failures import fails_cleanly

from include.kafka_admin.catalog import topic_for
from include.streaming.analytics import DLQ_NOTICE
from kafka_pipeline.operators.stream import StreamProcessorOperator

# A deployment that runs its own copy of the stream pipelines beside the declared one (a sandbox)
# gives every stream consumer group this suffix; its topics are renamed in its own topics.yaml
# (AVAZU_CONFIG_DIR), the one place topic names are written.
STREAM_SUFFIX = os.environ.get("AVAZU_STREAM_SUFFIX", "")
# Topic param -> the topic's role in include/config/topics.yaml, and what it is for in the trigger form.
STREAM_TOPICS = {
    "web_events_topic": ("web_events", "Web events in (seed 004)."),
    "purchase_events_topic": ("purchase_events", "Purchase events in (seed 004)."),
    "analytics_events_topic": ("analytics_events", "Analytics events out (seed 004)."),
    "analytics_dlq_topic": ("analytics_dlq", "Events the analytics processor could not transform (seed 004's DLQ)."),
    "input_topic": ("words", "Words in (seed 003)."),
    "output_topic": ("uppercased_words", "Upper-cased words out (seed 003)."),
}


def stream_topic(params: Mapping[str, Any], name: str) -> str:
    """The topic of topic param ``name``: its value, or the declared topic of its role."""
    return params.get(name) or topic_for(STREAM_TOPICS[name][0])


# For the stream DAGs' user_defined_macros: operator fields name their topic as topic_field(name).
STREAM_MACROS = {"stream_topic": stream_topic}


def topic_field(name: str) -> str:
    """The template of topic param ``name``'s topic, rendered when the task runs."""
    return "{{ stream_topic(params, '%s') }}" % name


def stream_topic_params(*names: str) -> dict[str, Param]:
    """Params for the named topics (all six when none are named); empty means the declared topic."""
    return {name: Param("", type="string", description=f"{STREAM_TOPICS[name][1]} Empty: the topic with role "
                                                       f"{STREAM_TOPICS[name][0]} in include/config/topics.yaml.")
            for name in names or STREAM_TOPICS}


def analytics_processor(group_id: str, **kwargs: Any) -> StreamProcessorOperator:
    """Seed 004: web and purchase events -> analytics events, failures -> the analytics DLQ."""
    return StreamProcessorOperator(
        task_id="analytics_processor",
        transform_factory="include.streaming.analytics.analytics_transform",
        transform_kwargs={"web_topic": topic_field("web_events_topic"),
                          "purchase_topic": topic_field("purchase_events_topic")},
        input_topics=[topic_field("web_events_topic"), topic_field("purchase_events_topic")],
        output_topic=topic_field("analytics_events_topic"),
        dlq_topic=topic_field("analytics_dlq_topic"),
        group_id=group_id,
        max_runtime="{{ params.max_runtime }}",
        dead_letter_notice=DLQ_NOTICE,
        schema_registry_conn_id="schema_registry_default",
        **kwargs,
    )


def uppercase_processor(group_id: str, **kwargs: Any) -> StreamProcessorOperator:
    """Seed 003: words -> upper-cased -> the upper-cased words' topic."""
    return StreamProcessorOperator(
        task_id="uppercase_processor",
        transform_factory="include.streaming.words.uppercase_transform",
        input_topics=[topic_field("input_topic")],
        output_topic=topic_field("output_topic"),
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
    return publish(producer, stream_topic(params, "web_events_topic"), events, rate=params["rate"]).as_dict()


@task
@fails_cleanly
def simulate_purchase_events(params=None) -> dict:
    """Publish purchase events to the purchase events topic; some are malformed (seed 004)."""
    from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS, publish, purchase_events
    from kafka_pipeline.hooks import KafkaClusterHook

    producer = KafkaClusterHook().producer(**SIMULATOR_PRODUCER_SETTINGS)
    events = purchase_events(params["purchase_events"], seed=params["seed"], bad_ratio=params["bad_ratio"])
    return publish(producer, stream_topic(params, "purchase_events_topic"), events, rate=params["rate"]).as_dict()


@task
@fails_cleanly
def publish_words(params=None) -> dict:
    """Publish the words to the input topic (seed 003)."""
    from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS, publish, word_events
    from kafka_pipeline.hooks import KafkaClusterHook

    producer = KafkaClusterHook().producer(**SIMULATOR_PRODUCER_SETTINGS)
    return publish(producer, stream_topic(params, "input_topic"), word_events(params["words"])).as_dict()

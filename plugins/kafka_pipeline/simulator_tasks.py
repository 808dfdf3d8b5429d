"""The simulator tasks shared by stream_simulators and stream_pipelines_e2e.

TaskFlow tasks defined once here; each DAG calls them inside its own context, and each reads the
topic names, counts, rate and seed from its DAG's params.
"""

from __future__ import annotations

from airflow.sdk import task


@task
def simulate_web_events(params=None) -> dict:
    """Publish web events to the web events topic; some miss fields (seed 004)."""
    from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS, publish, web_events
    from kafka_pipeline.hooks import KafkaClusterHook

    producer = KafkaClusterHook().producer(**SIMULATOR_PRODUCER_SETTINGS)
    events = web_events(params["web_events"], seed=params["seed"], bad_ratio=params["bad_ratio"])
    return publish(producer, params["web_events_topic"], events, rate=params["rate"]).as_dict()


@task
def simulate_purchase_events(params=None) -> dict:
    """Publish purchase events to the purchase events topic; some are malformed (seed 004)."""
    from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS, publish, purchase_events
    from kafka_pipeline.hooks import KafkaClusterHook

    producer = KafkaClusterHook().producer(**SIMULATOR_PRODUCER_SETTINGS)
    events = purchase_events(params["purchase_events"], seed=params["seed"], bad_ratio=params["bad_ratio"])
    return publish(producer, params["purchase_events_topic"], events, rate=params["rate"]).as_dict()


@task
def publish_words(params=None) -> dict:
    """Publish the words to the input topic (seed 003)."""
    from include.streaming.simulators import SIMULATOR_PRODUCER_SETTINGS, publish, word_events
    from kafka_pipeline.hooks import KafkaClusterHook

    producer = KafkaClusterHook().producer(**SIMULATOR_PRODUCER_SETTINGS)
    return publish(producer, params["input_topic"], word_events(params["words"])).as_dict()

"""stream_pipelines_e2e: both stream pipelines end to end, bounded, for `airflow dags test`.

    create_topics -> simulate_web_events      -> analytics_processor -> report_analytics
                  -> simulate_purchase_events -^
                  -> publish_words            -> uppercase_processor -> report_words

The processors are the always-on ones of ``stream_processors`` with an ``idle_timeout``: they stop
once the simulated events are processed. The reports read the output with read_committed and fail
the run unless every good event arrived exactly once and every bad one went to the DLQ. Give it
topics and a group prefix of its own (the defaults are the declared topics): the check assumes the
topics carry only what this DAG sent since its groups last ran.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from kafka_pipeline.failures import fails_cleanly
from _stream_pipelines import (
    STREAM_MACROS,
    STREAM_TOPICS,
    analytics_processor,
    publish_words,
    simulate_purchase_events,
    simulate_web_events,
    stream_topic,
    stream_topic_params,
    uppercase_processor,
)

from include.streaming.words import SEED_WORDS

DEFAULT_ARGS = {"owner": "stream-processing", "retries": 1, "retry_delay": pendulum.duration(seconds=10)}


@dag(
    dag_id="stream_pipelines_e2e",
    description="Both stream pipelines end to end, bounded: simulate, process until idle, report and check the counts",
    schedule=None,
    max_active_runs=1,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    user_defined_macros=STREAM_MACROS,
    tags=["streaming", "kafka", "e2e", "seed-003", "seed-004"],
    params={
        **stream_topic_params(),
        "partitions": Param(3, type="integer", minimum=1, maximum=64,
                            description="Partitions of the topics this run has to create."),
        "group_prefix": Param("stream_pipelines_e2e", type="string",
                              description="Prefix of the processor and report consumer groups."),
        "web_events": Param(200, type="integer", minimum=0, maximum=100_000, description="Web events to simulate."),
        "purchase_events": Param(200, type="integer", minimum=0, maximum=100_000,
                                 description="Purchase events to simulate."),
        "rate": Param(None, type=["null", "number"], minimum=1,
                      description="Events per second per simulator; null sends as fast as possible."),
        "bad_ratio": Param(0.1, type="number", minimum=0, maximum=1,
                           description="Share of simulated events sent broken (missing fields, malformed)."),
        "seed": Param(0, type="integer", description="Seed of the simulators: the same seed sends the same events."),
        "words": Param(list(SEED_WORDS), type="array", description="Words for the seed 003 pipeline."),
        "idle_timeout": Param(5, type="number", minimum=1,
                              description="A processor stops after this many seconds without records."),
        "max_runtime": Param(300, type="number", minimum=5,
                             description="A processor stops after this many seconds in any case."),
    },
    doc_md=__doc__,
)
def stream_pipelines_e2e():
    @task
    @fails_cleanly
    def create_topics(params=None) -> list[str]:
        from kafka_pipeline.hooks import KafkaClusterHook

        from include.streaming.topics import ensure_topics

        names = [stream_topic(params, name) for name in STREAM_TOPICS]
        return ensure_topics(KafkaClusterHook().admin(), names, partitions=params["partitions"])

    analytics = analytics_processor("{{ params.group_prefix }}-analytics",
                                    idle_timeout="{{ params.idle_timeout }}")
    uppercase = uppercase_processor("{{ params.group_prefix }}-uppercase",
                                    idle_timeout="{{ params.idle_timeout }}")

    @task
    @fails_cleanly
    def report_analytics(web: dict, purchase: dict, processed: dict, params=None) -> dict:
        from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook

        from include.kafka.wire import AvroDecoder
        from include.kafka.reader import READER_SETTINGS
        from include.kafka.registry import schema_fetcher
        from include.streaming.readers import check_analytics_run, read_analytics_report

        kafka = KafkaClusterHook()
        registry = SchemaRegistryHook().get_conn()
        consumer = kafka.consumer(f"{params['group_prefix']}-analytics-report",
                                  **READER_SETTINGS)
        try:
            decoder = AvroDecoder(schema_fetcher(registry))
            report = read_analytics_report(consumer, stream_topic(params, "analytics_events_topic"),
                                           decoder.decode).as_dict()
        finally:
            consumer.close()
        return {**report, "check": check_analytics_run(report, [web, purchase], processed)}

    @task
    @fails_cleanly
    def report_words(processed: dict, params=None) -> dict:
        from kafka_pipeline.hooks import KafkaClusterHook

        from include.kafka.reader import READER_SETTINGS
        from include.streaming.readers import check_words_run, read_words_report

        consumer = KafkaClusterHook().consumer(f"{params['group_prefix']}-words-report",
                                               **READER_SETTINGS)
        try:
            report = read_words_report(consumer, stream_topic(params, "output_topic")).as_dict()
        finally:
            consumer.close()
        return {**report, "check": check_words_run(report, params["words"])}

    topics_ready = create_topics()
    web, purchase, words = simulate_web_events(), simulate_purchase_events(), publish_words()
    topics_ready >> [web, purchase, words]
    [web, purchase] >> analytics
    words >> uppercase
    report_analytics(web, purchase, analytics.output)
    report_words(uppercase.output)


stream_pipelines_e2e()

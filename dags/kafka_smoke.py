"""kafka_smoke: prove the stack works - broker and registry answer, Avro goes in and comes back.

check_stack -> avro_roundtrip. Triggered by hand (or by `make demo`); the round trip's counts are
its return value.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task
from kafka_pipeline.failures import fails_cleanly

DEFAULT_ARGS = {"owner": "data-platform", "retries": 1, "retry_delay": pendulum.duration(seconds=10)}


@dag(
    dag_id="kafka_smoke",
    description="Check the broker and the Schema Registry: Avro records through both and back, counted",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["smoke", "kafka", "schema-registry"],
    params={
        "topic": Param("smoke_avro_roundtrip", type="string", description="Topic to write and read."),
        "records": Param(1000, type="integer", minimum=1, maximum=1_000_000,
                         description="How many Avro records to round-trip."),
    },
    doc_md=__doc__,
)
def kafka_smoke():
    @task
    @fails_cleanly
    def check_stack() -> dict:
        from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook

        cluster = KafkaClusterHook().ensure_reachable()
        subjects = SchemaRegistryHook().ensure_reachable()
        return {"cluster_id": cluster.cluster_id, "brokers": cluster.brokers,
                "subjects": len(subjects)}

    @task
    @fails_cleanly
    def avro_roundtrip(params=None, run_id=None) -> dict:
        from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook

        from include.kafka.reader import READER_SETTINGS
        from include.kafka.smoke import run_roundtrip

        kafka = KafkaClusterHook()
        registry = SchemaRegistryHook().get_conn()
        producer = kafka.producer(**{"acks": "all", "enable.idempotence": True,
                                     "compression.type": "zstd"})
        consumer = kafka.consumer(f"kafka_smoke-{run_id}", **READER_SETTINGS)
        try:
            result = run_roundtrip(kafka.admin(), producer, consumer, registry,
                                   topic=params["topic"], count=int(params["records"]),
                                   run_id=run_id)
        finally:
            consumer.close()
        return result.as_dict()

    check_stack() >> avro_roundtrip()


kafka_smoke()

"""Operators of the hourly Avazu ingestion: stage the source, wait for the hour, ingest it.

Thin shells around include.ingest: the hooks turn the Airflow connections into clients, the
task instance becomes the ``Origin`` written into DLQ envelopes and checkpoints, and each
operator returns its counts to XCom. Failures are mapped by ``kafka_pipeline.failures``: what a
retry cannot fix (a reconciliation mismatch, an unregistered schema, a source that is not an
Avazu file, a fenced producer) fails the task without retries; an unreachable broker or registry,
or a chunk that kept aborting, fails it with retries - and the retry resumes after the last
committed chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, BaseOperator, BaseSensorOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout

from include.avazu.generator import GeneratorSpec
from include.dead_letters import Origin
from include.ingest.config import IngestConfig
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import find_partition, partition_manifest_uri, read_manifest, stage_source
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook
from kafka_pipeline.params import as_bool


class StageAvazuSourceOperator(BaseOperator):
    """Split the source into ``hour=YYMMDDHH/`` partitions; a no-op while the source is unchanged.

    :param source_uri: the Avazu CSV, local or s3:// (templated)
    :param staging_uri: folder or s3:// prefix of the partitions (templated)
    :param enabled: when false the task only reports what is staged (partitions come from elsewhere)
    :param generate: ``{rows, seed, fault_rate}`` to generate a missing local source with, or None
        (the config's ``generate_if_missing`` while the source is its default) (templated)
    """

    template_fields: Sequence[str] = ("source_uri", "staging_uri", "enabled", "generate")
    ui_color = "#f3efe0"

    def __init__(self, *, source_uri: str, staging_uri: str, enabled: Any = True, generate: Any = None,
                 progress_every_s: float = 10.0, **kwargs):
        super().__init__(**kwargs)
        self.source_uri = source_uri
        self.staging_uri = staging_uri
        self.enabled = enabled
        self.generate = generate
        self.progress_every_s = progress_every_s

    @fails_cleanly
    def execute(self, context) -> dict:
        if not as_bool(self.enabled):
            manifest = read_manifest(self.staging_uri)
            self.log.info("Staging is switched off; %s holds %s", self.staging_uri,
                          f"source {manifest['source_id']}" if manifest else "no manifest")
            return {"action": "disabled", "staging_uri": self.staging_uri,
                    "source_id": manifest["source_id"] if manifest else None}
        generate = GeneratorSpec.with_every_fault(**self.generate) if self.generate else None
        return stage_source(self.source_uri, self.staging_uri, progress_every_s=self.progress_every_s,
                            generate=generate).as_dict()


class AvazuHourPartitionSensor(BaseSensorOperator):
    """Wait until the hour's partition is staged; on timeout, say which hour and where it looked.

    ``wait_timeout_s`` and ``poke_interval_s`` are templated (they come from the ingestion config
    at run time) and replace the sensor's ``timeout`` and ``poke_interval`` when the task runs.
    """

    template_fields: Sequence[str] = ("staging_uri", "hour", "wait_timeout_s", "poke_interval_s")
    ui_color = "#f3efe0"

    def __init__(self, *, staging_uri: str, hour: Any, wait_timeout_s: Any = 900, poke_interval_s: Any = 60, **kwargs):
        kwargs.setdefault("mode", "reschedule")
        super().__init__(**kwargs)
        self.staging_uri = staging_uri
        self.hour = hour
        self.wait_timeout_s = wait_timeout_s
        self.poke_interval_s = poke_interval_s

    @fails_cleanly
    def poke(self, context) -> bool:
        found = find_partition(self.staging_uri, int(self.hour)) is not None
        if not found:
            self.log.info("hour %s is not staged yet: %s does not exist", self.hour, partition_manifest_uri(self.staging_uri, int(self.hour)))
        return found

    def execute(self, context) -> Any:
        self.timeout = float(self.wait_timeout_s)
        # Never sleep past the deadline: a short wait must not turn into one long poke interval.
        self.poke_interval = max(1.0, min(float(self.poke_interval_s), self.timeout))
        try:
            return super().execute(context)
        except AirflowSensorTimeout:
            manifest = read_manifest(self.staging_uri)
            staged = (f"the staged source {manifest['source']['uri']} covers {len(manifest['hours'])} hour(s), "
                      f"{min(manifest['hours'], default='-')}..{max(manifest['hours'], default='-')}"
                      if manifest else "nothing is staged there")
            raise AirflowSensorTimeout(
                f"no partition for Avazu hour {self.hour} after {self.timeout:.0f} s: looked for "
                f"{partition_manifest_uri(self.staging_uri, int(self.hour))}; {staged}") from None


class IngestAvazuHourOperator(BaseOperator):
    """Ingest one staged hour into the raw topic and the DLQ, exactly once (see include.ingest.ingestor).

    :param hour: the Avazu hour YYMMDDHH (templated)
    :param config: the run's ingestion settings, as ``IngestConfig.as_dict()`` (templated; the
        DAG's resolve_hour task checks them once and hands them on)
    :param reingest: write a finished hour again as a new generation (templated)
    """

    template_fields: Sequence[str] = ("hour", "config", "reingest")
    ui_color = "#e7f0e4"

    def __init__(self, *, hour: Any, config: Any, reingest: Any = False,
                 kafka_config_id: str = KafkaClusterHook.default_conn_name,
                 schema_registry_conn_id: str = SchemaRegistryHook.default_conn_name, **kwargs):
        super().__init__(**kwargs)
        self.hour = hour
        self.config = config
        self.reingest = reingest
        self.kafka_config_id = kafka_config_id
        self.schema_registry_conn_id = schema_registry_conn_id

    @fails_cleanly
    def execute(self, context) -> dict:
        hour = int(self.hour)
        config = IngestConfig.from_dict(self.config)
        partition = find_partition(config.staging_uri, hour)
        if partition is None:
            raise AirflowFailException(f"hour {hour} is not staged: {partition_manifest_uri(config.staging_uri, hour)} does not exist")
        kafka = KafkaClusterHook(self.kafka_config_id)
        kafka.ensure_reachable()
        registry = SchemaRegistryHook(self.schema_registry_conn_id)
        registry.ensure_reachable()
        ti = context["ti"]
        origin = Origin(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=ti.try_number)
        ingestor = HourlyIngestor(
            partition,
            config=config,
            kafka_config=kafka.client_config(),
            registry=registry.get_conn(),
            origin=origin,
            reingest=as_bool(self.reingest),
            request_id=ti.run_id,
        )
        result = ingestor.run()
        # The run's figures travel with the asset event its outlets get (pipeline_health times them).
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = result.run_summary()
        return result.as_dict()

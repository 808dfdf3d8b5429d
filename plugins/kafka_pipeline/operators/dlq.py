"""ReprocessDlqOperator: one declared DLQ reprocessed once (include.dlq), its outcome table in the log."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator

from include.dlq.config import load_dlq_config
from include.dlq.reprocessor import DlqReprocessor
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook


class ReprocessDlqOperator(BaseOperator):
    """Repair, retry or park the dead letters of one DLQ, exactly once (see include.dlq.reprocessor).

    :param dlq: the DLQ's name in include/config/dlq.yaml (templated)
    :param archive_uri: where parked records are archived; empty: the settings file's (templated)
    :param topics: per DLQ name, other topics for its roles (``dlq``, ``repaired``, ``parked``,
        ``retry1``..) and ``group``: the same DLQ on copies of its topics (templated)
    """

    template_fields: Sequence[str] = ("dlq", "archive_uri", "topics")
    ui_color = "#f6e7e1"

    def __init__(self, *, dlq: str, archive_uri: str | None = None, topics: Any = None,
                 kafka_config_id: str = KafkaClusterHook.default_conn_name,
                 schema_registry_conn_id: str = SchemaRegistryHook.default_conn_name, **kwargs: Any):
        super().__init__(**kwargs)
        self.dlq = dlq
        self.archive_uri = archive_uri
        self.topics = topics
        self.kafka_config_id = kafka_config_id
        self.schema_registry_conn_id = schema_registry_conn_id

    @fails_cleanly
    def execute(self, context: Any) -> dict[str, Any]:
        config = load_dlq_config()
        if self.archive_uri:
            config = dataclasses.replace(config, archive_uri=self.archive_uri)
        kafka = KafkaClusterHook(self.kafka_config_id)
        kafka.ensure_reachable()
        registry = SchemaRegistryHook(self.schema_registry_conn_id)
        registry.ensure_reachable()
        spec = config.dlq(self.dlq)
        overrides = dict((self.topics or {}).get(self.dlq) or {})
        if overrides:
            group = overrides.pop("group", None)
            spec = spec.sandboxed(overrides, group)
        result = DlqReprocessor(spec, config, kafka_config=kafka.client_config(),
                                registry=registry.get_conn()).run()
        return result.as_dict()

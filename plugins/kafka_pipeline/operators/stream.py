"""StreamProcessorOperator: a long-running stream processor as one Airflow task.

The task builds the transform from a factory in include/ (so the DAG file stays free of Kafka and
registry I/O), hands it to ``include.streaming.StreamProcessor`` with the ``kafka_default``
connection's client settings, and runs it until ``max_runtime`` or ``idle_timeout``. When Airflow
stops the task (``on_kill``, or SIGTERM from the supervisor, which follows with SIGKILL five
seconds later) the processor finishes the batch in hand, commits and closes; a SIGKILL loses
nothing either, because the open transaction is aborted by the next run of the same instance. The
counts are the task's return value (XCom) and its last log line.

For an always-on processor, put it in a ``schedule="@continuous"``, ``max_active_runs=1`` DAG:
``max_runtime`` bounds each run and Airflow starts the next one when a run ends or fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from airflow.providers.common.compat.module_loading import import_string
from airflow.sdk import BaseOperator

from include.streaming.processor import StreamProcessor
from include.streaming.records import TransformContext
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook
from kafka_pipeline.operators.lifecycle import seconds, stop_on_sigterm


class StreamProcessorOperator(BaseOperator):
    """Run a consume-transform-produce processor (exactly once) as an Airflow task.

    :param transform_factory: builds the transform when the task runs, called as
        ``factory(TransformContext, **transform_kwargs)``; a callable or its dotted import path
        (e.g. ``"include.streaming.words.uppercase_transform"``).
    :param input_topics: topics to consume (templated).
    :param output_topic: topic the transform's records go to (templated).
    :param group_id: consumer group of the processor; its instances share the partitions (templated).
    :param dlq_topic: where records whose transform raised go, unchanged, with the error in
        headers; None skips them (counted and logged) (templated).
    :param instance_id: stable id of this instance in the group; ``<group>-<instance>`` is its
        transactional id, so the next run of the same instance fences this one (templated).
    :param transform_kwargs: extra keyword arguments for the factory (templated).
    :param max_runtime: stop after this many seconds; None runs until stopped (templated).
    :param idle_timeout: stop after this many seconds without records; None never (templated).
    :param processor_name: name in logs and DLQ headers; defaults to the task id.
    :param batch_size: records per consume call.
    :param commit_interval: seconds between checkpoints (transaction commits).
    :param progress_interval: seconds between progress log lines.
    :param dead_letter_notice: a line to log verbatim for every dead-lettered record
        (``{dlq_topic}`` in it: the DLQ topic's name).
    :param kafka_config_id: the Kafka connection.
    :param schema_registry_conn_id: the registry connection, when the factory needs a client.
    """

    template_fields: Sequence[str] = (
        "input_topics", "output_topic", "group_id", "dlq_topic", "instance_id",
        "transform_kwargs", "max_runtime", "idle_timeout",
    )
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        transform_factory: Callable[..., Any] | str,
        input_topics: Sequence[str],
        output_topic: str,
        group_id: str,
        dlq_topic: str | None = None,
        instance_id: str = "0",
        transform_kwargs: dict[str, Any] | None = None,
        max_runtime: float | str | None = 3600,
        idle_timeout: float | str | None = None,
        processor_name: str | None = None,
        batch_size: int = 500,
        commit_interval: float = 0.1,
        progress_interval: float = 30.0,
        dead_letter_notice: str | None = None,
        kafka_config_id: str = KafkaClusterHook.default_conn_name,
        schema_registry_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.transform_factory = transform_factory
        self.input_topics = input_topics
        self.output_topic = output_topic
        self.group_id = group_id
        self.dlq_topic = dlq_topic
        self.instance_id = instance_id
        self.transform_kwargs = transform_kwargs or {}
        self.max_runtime = max_runtime
        self.idle_timeout = idle_timeout
        self.processor_name = processor_name
        self.batch_size = batch_size
        self.commit_interval = commit_interval
        self.progress_interval = progress_interval
        self.dead_letter_notice = dead_letter_notice
        self.kafka_config_id = kafka_config_id
        self.schema_registry_conn_id = schema_registry_conn_id
        self._processor: StreamProcessor | None = None
        self._killed = False

    @fails_cleanly
    def execute(self, context: Any) -> dict[str, Any]:
        factory = (import_string(self.transform_factory) if isinstance(self.transform_factory, str)
                   else self.transform_factory)
        input_topics = ([self.input_topics] if isinstance(self.input_topics, str)
                        else list(self.input_topics))
        kafka = KafkaClusterHook(self.kafka_config_id)
        kafka.ensure_reachable()
        registry = (SchemaRegistryHook(self.schema_registry_conn_id).get_conn()
                    if self.schema_registry_conn_id else None)
        transform = factory(
            TransformContext(input_topics, self.output_topic, self.dlq_topic or None, registry),
            **self.transform_kwargs,
        )
        self._processor = StreamProcessor(
            name=self.processor_name or self.task_id,
            transform=transform,
            client_config=kafka.client_config(),
            input_topics=input_topics,
            output_topic=self.output_topic,
            dlq_topic=self.dlq_topic or None,
            group_id=self.group_id,
            instance_id=str(self.instance_id),
            batch_size=self.batch_size,
            commit_interval=self.commit_interval,
            progress_interval=self.progress_interval,
            dead_letter_notice=self.dead_letter_notice,
        )
        if self._killed:
            # Killed while the transform was being built: start, commit nothing, stop.
            self._processor.stop("task killed")
        with stop_on_sigterm(self._processor):
            counts = self._processor.run(max_runtime=seconds(self.max_runtime),
                                         idle_timeout=seconds(self.idle_timeout))
        self.log.info("Stream processor counts: %s", counts.as_dict())
        return counts.as_dict()

    def on_kill(self) -> None:
        """Ask the processor to finish its batch, commit and close; execute() then returns."""
        self._killed = True
        if self._processor is not None:
            self._processor.stop("task killed")

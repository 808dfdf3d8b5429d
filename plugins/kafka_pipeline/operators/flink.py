"""CtrStreamOperator: the Flink CTR job (flink/ctr_job.py) started, watched and stopped as one Airflow task.

The job runs on the project's Flink session cluster (``python -m devstack.flink start``), not in
the task: the task submits it (``flink run`` from PyFlink's distribution, restored from the newest
savepoint or retained checkpoint), then watches it over Flink's REST API - a progress line and a
push of ``avazu_ctr_*`` metrics to the Pushgateway every ``progress_interval`` - and fails with
Flink's cause in one sentence if the job fails. On SIGTERM or ``on_kill`` it stops the job with a
savepoint and remembers where (``include.ctr.stream_job.RestorePointFile``, in the cluster's state
folder); the next run resumes from there. At ``max_runtime`` the task ends and, unless
``stop_at_end``, leaves the job running: the next run of a ``@continuous`` DAG takes it over
without a gap. With ``stop_when_caught_up`` the task stops the job with a savepoint as soon as its
consumer groups have committed every record of the topic: a bounded run over what is there (``make
demo``). The plain Python is ``include.ctr.stream_job.CtrStreamJob``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook, BaseOperator

from include.ctr.flink_rest import FlinkRestClient
from include.ctr.stream_job import (CtrJobFailed, CtrJobProgress, CtrStreamJob, RestorePointFile, newest_record_ms,
                                    unread_records)
from include.errors import PipelineError
from include.kafka_admin.catalog import declared_catalog, topic_for
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.hooks import KafkaClusterHook, SchemaRegistryHook
from kafka_pipeline.operators.lifecycle import seconds, stop_on_sigterm


class CtrStreamOperator(BaseOperator):
    """Run the CTR job on the Flink session cluster for as long as the task runs (see the module doc).

    :param job_name: the Flink job's name: a live job of this name is taken over, and its restore
        points are remembered under it (templated).
    :param topic: the topic of Avazu records; empty: the catalog's raw topic (templated).
    :param schema: the PostgreSQL schema of the CTR tables; empty: the role's search_path (templated).
    :param group_id: the job's sources commit offsets as ``<group_id>.hourly`` and ``.minute`` (templated).
    :param job_args: more arguments of flink/ctr_job.py, e.g. ``["--checkpoint-interval", "5 s"]`` (templated).
    :param max_runtime: seconds the task watches; None: until stopped (templated).
    :param stop_at_end: stop the job with a savepoint at ``max_runtime`` too, instead of handing it on
        (templated: "True"/"False" as a param renders).
    :param stop_when_caught_up: stop the job with a savepoint once its consumer groups have committed
        every record of the topic, before ``max_runtime`` (templated, like ``stop_at_end``).
    :param progress_interval: seconds between progress lines and metric pushes (templated).
    :param poll_interval: seconds between looks at the job's state.
    :param kafka_config_id: the Kafka connection: the job's sources sign in as it does (its librdkafka
        settings as Java client properties, handed to the job in its environment, never on a command
        line), and the newest record's time is read through it.
    :param schema_registry_conn_id: the registry the job looks writer schemas up in.
    :param postgres_conn_id: the CTR store the job's sinks write to.
    :param pushgateway_url: where the metrics go; default ``$PUSHGATEWAY_URL``, none: not pushed.
    """

    template_fields: Sequence[str] = ("job_name", "topic", "schema", "group_id", "job_args", "max_runtime",
                                      "stop_at_end", "stop_when_caught_up", "progress_interval")
    ui_color = "#fde9d9"

    def __init__(
        self,
        *,
        job_name: str = "ctr-aggregates",
        topic: str = "",
        schema: str = "",
        group_id: str = "ctr-flink",
        job_args: Sequence[str] = (),
        max_runtime: float | str | None = 3600,
        stop_at_end: bool | str = False,
        stop_when_caught_up: bool | str = False,
        progress_interval: float | str = 30.0,
        poll_interval: float = 2.0,
        kafka_config_id: str = KafkaClusterHook.default_conn_name,
        schema_registry_conn_id: str = SchemaRegistryHook.default_conn_name,
        postgres_conn_id: str = "postgres_default",
        pushgateway_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_name = job_name
        self.topic = topic
        self.schema = schema
        self.group_id = group_id
        self.job_args = list(job_args)
        self.max_runtime = max_runtime
        self.stop_at_end = stop_at_end
        self.stop_when_caught_up = stop_when_caught_up
        self.progress_interval = progress_interval
        self.poll_interval = poll_interval
        self.kafka_config_id = kafka_config_id
        self.schema_registry_conn_id = schema_registry_conn_id
        self.postgres_conn_id = postgres_conn_id
        self.pushgateway_url = pushgateway_url
        self._job: CtrStreamJob | None = None
        self._killed = False

    def _job_arguments(self, topic: str, kafka: KafkaClusterHook) -> list[str]:
        args = ["--topic", topic, "--name", self.job_name, "--group-id", self.group_id,
                "--bootstrap-servers", kafka.client_config()["bootstrap.servers"],
                "--registry-url", SchemaRegistryHook(self.schema_registry_conn_id).url]
        if self.schema:
            args += ["--schema", self.schema]
        return [*args, *self.job_args]

    @fails_cleanly
    def execute(self, context: Any) -> dict[str, Any]:
        try:  # the session cluster is the local stack's (devstack), which also holds the Flink client
            from devstack.flink import FlinkSettings, flink_kafka_properties, submit
            from devstack.stack import StackError
        except ImportError as error:
            raise CtrJobFailed(f"the Flink session cluster's client (devstack.flink) is not importable here ({error}); "
                               "run this task where the project's root is on PYTHONPATH (scripts/local-env.sh)") from None
        settings = FlinkSettings()
        topic = self.topic or topic_for("raw")
        kafka = KafkaClusterHook(self.kafka_config_id)
        kafka.ensure_reachable()
        # The sources sign in as the connection does; a setting the Java client cannot take fails here, in one sentence.
        kafka_properties = flink_kafka_properties(kafka.client_config())
        self._check_group(kafka_properties)
        job_args = self._job_arguments(topic, kafka)
        postgres_url = BaseHook.get_connection(self.postgres_conn_id).get_uri()

        def submit_job(savepoint: str | None) -> str:
            try:
                return submit(settings, job_args, savepoint, postgres_url, kafka_properties)
            except StackError as error:
                raise CtrJobFailed(f"submitting the CTR job to {settings.rest_url} failed: {error}") from None

        admin, kafka_config = kafka.admin(), kafka.client_config()
        pushgateway = self.pushgateway_url or os.environ.get("PUSHGATEWAY_URL", "")
        self._job = CtrStreamJob(
            self.job_name, FlinkRestClient(settings.rest_url), submit_job,
            RestorePointFile(restore_point_path(settings.home, self.job_name)),
            newest_record_ms=lambda: newest_record_ms(admin, topic),
            unread_records=lambda: unread_records(admin, kafka_config, topic, self.group_id),
            report=self._reporter(pushgateway), progress_interval=float(self.progress_interval),
            poll_interval=self.poll_interval)
        if self._killed:
            # Killed while this was set up: the loop stops the job (if one runs) before watching it.
            self._job.stop("task killed")
        self.log.info("CTR job %s on %s at %s; restore points in %s; metrics to %s", self.job_name, topic,
                      settings.rest_url, self._job.restore_points.path, pushgateway or "nowhere (no PUSHGATEWAY_URL)")
        with stop_on_sigterm(self._job):
            run = self._job.run(max_runtime=seconds(self.max_runtime), stop_at_end=_flag(self.stop_at_end),
                                stop_when_caught_up=_flag(self.stop_when_caught_up))
        if run.savepoint and pushgateway:
            try:  # the job is stopped and its savepoint remembered: a missing Pushgateway fails nothing now
                self._reporter(pushgateway)(None)
            except PipelineError as error:
                self.log.warning("the stopped job's metrics were not pushed: %s", error)
        return run.as_dict()

    def _check_group(self, kafka_properties: dict[str, str]) -> None:
        """Warn when the job's consumer groups are outside the catalog's group prefixes: on a cluster
        with ACLs (include/kafka_admin/acls.py) its sources could not read or commit offsets there."""
        access = declared_catalog().access
        if "sasl.mechanism" in kafka_properties and not access.covers_group(self.group_id):
            self.log.warning("the CTR job's consumer groups %s.hourly and .minute are under none of the group "
                             "prefixes of include/config/topics.yaml (%s): %s may not use them on a cluster with ACLs",
                             self.group_id, ", ".join(access.group_prefixes), access.principal)

    def _reporter(self, url: str):
        from include.ctr.metrics import push_progress

        def report(progress: CtrJobProgress | None) -> None:
            if url:
                push_progress(url, self.job_name, progress)
        return report

    def on_kill(self) -> None:
        """Ask the watch loop to stop the job with a savepoint; execute() then returns."""
        self._killed = True
        if self._job is not None:
            self._job.stop("task killed")


def _flag(value: bool | str) -> bool:
    """A templated boolean: a param renders as "True"/"False"."""
    return str(value).strip().lower() in ("true", "1", "yes")


def restore_point_path(cluster_home: Path, job_name: str) -> Path:
    """Where the restore point of ``job_name`` is remembered: the cluster's state folder, beside its savepoints."""
    return cluster_home / "restore-points" / f"{job_name}.json"

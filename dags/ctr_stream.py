"""ctr_stream: the Flink CTR job (ad_events_raw -> PostgreSQL), started, watched and stopped by Airflow.

    ctr_job: submit (or take over) the job on the Flink session cluster -> watch it -> hand it on / stop it

``schedule="@continuous"`` with ``max_active_runs=1``, like ``stream_processors``: one task watches
the job for ``max_runtime`` seconds, logging its progress (records in, window rows written, the
watermarks and how far they trail the newest record) and pushing ``avazu_ctr_*`` metrics, then
ends and leaves the job running; the next run takes it over without a gap. Stopping the task
(SIGTERM, marking it failed, ``make airflow-stop``) stops the job with a savepoint; the next run
resumes from it, or from the latest retained checkpoint if the job failed or was lost. With
``stop_when_caught_up`` a run stops the job with a savepoint once it has read everything the topic
holds (``make demo`` runs it so). The cluster:
``make flink-start`` (see the README's "Airflow runs the CTR job").
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag
from kafka_pipeline.operators.flink import CtrStreamOperator

DEFAULT_ARGS = {
    "owner": "stream-processing",
    "retries": 2,
    "retry_delay": pendulum.duration(seconds=30),
    # A safety net above max_runtime: the task normally ends long before.
    "execution_timeout": pendulum.duration(hours=25),
}


@dag(
    dag_id="ctr_stream",
    description="The Flink CTR job on the session cluster: submitted or taken over, watched, stopped with a savepoint",
    schedule="@continuous",
    max_active_runs=1,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["streaming", "flink", "ctr", "always-on"],
    params={
        "job_name": Param("ctr-aggregates", type="string", minLength=1,
                          description="The Flink job's name: a running job of this name is taken over, and its "
                                      "savepoints are remembered under it."),
        "topic": Param("", type="string",
                       description="The topic of Avazu records. Empty: the topic with role raw in include/config/topics.yaml."),
        "schema": Param("", type="string",
                        description="The PostgreSQL schema of the CTR tables. Empty: the ctr role's own."),
        "group_id": Param("ctr-flink", type="string", minLength=1,
                          description="The job's sources commit their offsets as <group_id>.hourly and .minute."),
        # AVAZU_STREAM_MAX_RUNTIME: a deployment's own default, as for stream_processors (no I/O when parsed).
        "max_runtime": Param(int(os.environ.get("AVAZU_STREAM_MAX_RUNTIME", "3600")), type="integer",
                             minimum=10, maximum=86_400,
                             description="Seconds each run watches the job before the next run takes over."),
        "stop_at_end": Param(False, type="boolean",
                             description="Also stop the job with a savepoint at max_runtime (the next run resumes it)."),
        "stop_when_caught_up": Param(False, type="boolean",
                                     description="Stop the job with a savepoint as soon as it has read and checkpointed "
                                                 "every record of the topic (a bounded run, as make demo does); "
                                                 "max_runtime still bounds the wait."),
        "progress_interval": Param(30, type="integer", minimum=1, maximum=3600,
                                   description="Seconds between progress lines and metric pushes."),
    },
    doc_md=__doc__,
)
def ctr_stream():
    CtrStreamOperator(
        task_id="ctr_job",
        job_name="{{ params.job_name }}",
        topic="{{ params.topic }}",
        schema="{{ params.schema }}",
        group_id="{{ params.group_id }}",
        max_runtime="{{ params.max_runtime }}",
        stop_at_end="{{ params.stop_at_end }}",
        stop_when_caught_up="{{ params.stop_when_caught_up }}",
        progress_interval="{{ params.progress_interval }}",
    )


ctr_stream()

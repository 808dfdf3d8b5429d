"""stream_processors: the seed 004 and seed 003 stream processors, always on.

    web events + purchase events -> analytics_processor -> analytics events   (failures: analytics DLQ)
    words                        -> uppercase_processor -> upper-cased words

``schedule="@continuous"`` with ``max_active_runs=1`` is how Airflow keeps them running: a run's
tasks stop after ``max_runtime`` seconds (or when the task is stopped from the UI: the batch in hand
is finished and committed), and the scheduler starts the next run at once - also after a failure,
once the task's retries are spent. Each task is one processor instance with a stable instance id:
the next run's instance fences the previous one and resumes from its committed offsets.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import Param, dag
from _stream_pipelines import STREAM_MACROS, STREAM_SUFFIX, analytics_processor, stream_topic_params, uppercase_processor


DEFAULT_ARGS = {
    "owner": "stream-processing",
    "retries": 2,
    "retry_delay": pendulum.duration(seconds=15),
    # A safety net above max_runtime: the processor normally stops itself long before.
    "execution_timeout": pendulum.duration(hours=25),
}


@dag(
    dag_id="stream_processors",
    description="The always-on stream processors (seed 004 analytics, seed 003 upper-case), restarted by Airflow",
    schedule="@continuous",
    max_active_runs=1,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    user_defined_macros=STREAM_MACROS,
    tags=["streaming", "kafka", "always-on", "seed-003", "seed-004"],
    params={
        **stream_topic_params(),
        "analytics_group": Param(f"stream-analytics{STREAM_SUFFIX}", type="string",
                                 description="Consumer group of the analytics processor."),
        "uppercase_group": Param(f"stream-uppercase{STREAM_SUFFIX}", type="string",
                                 description="Consumer group of the upper-case processor."),
        # AVAZU_STREAM_MAX_RUNTIME: a deployment's own default (read when the file is parsed, no I/O).
        "max_runtime": Param(int(os.environ.get("AVAZU_STREAM_MAX_RUNTIME", "3600")), type="integer",
                             minimum=10, maximum=86_400,
                             description="Seconds each run processes before the next run takes over."),
    },
    doc_md=__doc__,
)
def stream_processors():
    analytics_processor("{{ params.analytics_group }}")
    uppercase_processor("{{ params.uppercase_group }}")

stream_processors()

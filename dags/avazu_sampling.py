"""Avazu sampling and EDA (seed 002, day 1), triggered by hand.

One streaming pass over the source writes head / uniform / per-hour samples and
``data_stats.json``; a second task turns the statistics into ``eda_report.md`` and PNG plots.
If the default source is missing, the first task generates it and says so in its log.

The param defaults mirror ``include/config/avazu_sampling.yaml`` (a DAG test keeps them equal);
the file is not read here because DAG files must not do I/O when they are parsed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task
from kafka_pipeline.failures import fails_cleanly


@dag(
    dag_id="avazu_sampling",
    description="Sample Avazu data in one pass; write data_stats.json, an EDA report and plots",
    schedule=None,
    start_date=datetime(2024, 1, 1),
    catchup=False,
    tags=["avazu", "sampling", "eda"],
    default_args={"owner": "data-engineering", "retries": 1, "retry_delay": timedelta(minutes=2)},
    params={
        "source_uri": Param(
            "data/avazu/train_sample.csv.gz",
            type="string",
            description="Avazu CSV (gzip or plain): a path relative to the project root, "
            "an absolute path or s3://bucket/key",
        ),
        "output_uri": Param(
            "data/avazu/eda",
            type="string",
            description="Folder or s3:// prefix for samples, data_stats.json, report and plots",
        ),
        "head_sizes": Param(
            [1000, 10000, 50000],
            type="array",
            items={"type": "integer", "minimum": 1},
            description="Sizes of the head samples",
        ),
        "reservoir_size": Param(
            10000,
            type="integer",
            minimum=0,
            description="Rows in the uniform random sample of the whole file",
        ),
        "per_hour_size": Param(100, type="integer", minimum=0, description="Rows sampled per hour"),
        "seed": Param(
            7,
            type="integer",
            minimum=0,
            description="Seed: the same file and seed give the same samples",
        ),
    },
)
def avazu_sampling():
    # include/ is imported inside the tasks: parsing this file loads neither numpy nor matplotlib.
    @task
    @fails_cleanly
    def sample_and_profile(**context) -> dict:
        """One pass: samples and statistics; returns the counts and where everything went."""
        from include.eda.survey import run_sampling

        return run_sampling(dict(context["params"]))

    @task
    @fails_cleanly
    def write_eda_report(survey: dict) -> dict:
        """Render data_stats.json into eda_report.md and plots."""
        from include.eda.report import write_report

        written = write_report(survey["output_uri"])
        return {
            **written,
            "rows_read": survey["rows_read"],
            "good_rows": survey["good_rows"],
            "bad_rows": survey["bad_rows"],
        }

    write_eda_report(sample_and_profile())


avazu_sampling()

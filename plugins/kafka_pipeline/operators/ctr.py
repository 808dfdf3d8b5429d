"""The batch side of the CTR analytics: one staged hour's aggregates into the CTR store (include.ctr.batch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import Asset, BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from include.ctr.batch import HourNotStaged, run_staged_hour
from include.ingest.config import load_ingest_config
from include.ingest.staging import find_partition, partition_manifest_uri
from kafka_pipeline.failures import fails_cleanly
from kafka_pipeline.hooks import postgres_url


class CtrBatchHourOperator(BaseOperator):
    """Count a staged Avazu hour with DuckDB and replace its rows of ``ctr_batch_hourly`` (one transaction).

    Returns the counts (rows = good + repaired + parked, the hours written, timing) to XCom; each
    outlet asset's event carries the hours and their impressions.

    :param hour: the staged Avazu hour YYMMDDHH (templated)
    :param staging_uri: where it is staged; empty: include/config/ingest.yaml's (templated)
    :param postgres_conn_id: the CTR store
    """

    template_fields: Sequence[str] = ("hour", "staging_uri")
    ui_color = "#e9e4f3"

    def __init__(self, *, hour: Any, staging_uri: str | None = None, postgres_conn_id: str = "postgres_default",
                 **kwargs: Any):
        super().__init__(**kwargs)
        self.hour = hour
        self.staging_uri = staging_uri
        self.postgres_conn_id = postgres_conn_id

    @fails_cleanly
    def execute(self, context: Any) -> dict[str, Any]:
        hour = int(self.hour)
        staging = self.staging_uri or load_ingest_config().staging_uri
        partition = find_partition(staging, hour)
        if partition is None:
            raise HourNotStaged(f"hour {hour} is not staged: {partition_manifest_uri(staging, hour)} does not exist")
        url = postgres_url(self.postgres_conn_id)
        if url is None:
            raise AirflowFailException(f"there is no CTR store to write to: the Airflow connection {self.postgres_conn_id} "
                                       "is not set (scripts/local-env.sh sets it from POSTGRES_URL)")
        result = run_staged_hour(partition, url)
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = {
                    "staged_hour": hour, "hours": result["write"]["hours_rebuilt"], "rows": result["rows"],
                    "impressions": result["good_rows"] + result["repaired_rows"], "seconds": result["seconds"]}
        return result

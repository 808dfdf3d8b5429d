"""Assets shared by more than one DAG: defined once, so the producer and the consumers name the same one."""

from __future__ import annotations

from airflow.sdk import Asset

# Updated by every successful ingest_hour run (dags/avazu_hourly_ingest.py); its event's extra
# carries what the run did (hour, rows read, rows/s, seconds), which pipeline_health times. The
# URI names the raw topic by its role (include/config/topics.yaml), not by its name.
INGESTED_HOURS = Asset(name="avazu_ingested_hours", uri="kafka://ingestion/raw")

# Updated by every ctr_batch run of a staged hour (dags/ctr_batch.py): ctr_batch_hourly holds its
# hours; the event's extra names them.
CTR_BATCH_HOURS = Asset(name="ctr_batch_hours", uri="ctr://batch/hourly")

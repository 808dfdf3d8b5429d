"""Real-time CTR: the Flink job's tables and the REST client Airflow watches the job with (no PyFlink here)."""

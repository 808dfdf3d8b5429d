"""Click-through rates: the PostgreSQL store real-time (Flink) and batch CTR figures are written to, its migrations, and the REST client Airflow watches the Flink job with (no PyFlink here)."""

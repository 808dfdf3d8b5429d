"""Hourly chunked ingestion of the Avazu data into Kafka, exactly once across retries.

``staging``   split a source once into ``hour=YYMMDDHH/`` partitions with a manifest
``lines``     raw lines of a source or partition with exact line numbers (bytes kept for bad UTF-8)
``ingestor``  :class:`HourlyIngestor`: one hour, in chunks, one Kafka transaction per chunk
``checkpoint`` the hour's progress on a compacted topic and what a run does with it
``rows``      the partition key and the generated Avro encoder of good rows
``envelope``  DLQ envelopes of bad rows
``hours``     which Avazu hour a scheduled run ingests (backfill / replay)
``config``    include/config/ingest.yaml, checked
``topics``    the three topics, their schema ids, sandbox copies, reading a topic back

No Airflow imports here: the operators in plugins/kafka_pipeline/operators/ingest.py are thin
shells around these, and ``python -m include.ingest`` runs them from a shell.
"""

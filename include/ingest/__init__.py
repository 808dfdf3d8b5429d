"""Hourly chunked ingestion of the Avazu data into Kafka, exactly once across retries.

``config``     include/config/ingest.yaml, checked once: the settings every run is built from
``hours``      which Avazu hour a scheduled run ingests (backfill / replay)
``staging``    split a source once into ``hour=YYMMDDHH/`` partitions with a manifest
``chunks``     a partition's rows in chunks, read on a thread of their own
``ingestor``   :class:`HourlyIngestor`: one hour, one Kafka transaction per chunk with its checkpoint
``result``     what a run did, and the reconciliation of its counts
``checkpoint`` the hour's progress on a compacted topic and what a run does with it
``topics``     the three topics' schema ids, and sandbox copies of them

Rows are encoded by :mod:`include.encoding`; the transactions, the reader and the wire format are
:mod:`include.kafka`'s; the DLQ envelopes of bad rows are :mod:`include.dead_letters`'. No Airflow imports here: the operators in
plugins/kafka_pipeline/operators/ingest.py are thin shells around these, and
``python -m include.ingest`` runs them from a shell.
"""

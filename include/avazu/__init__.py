"""The Avazu data layer: plain Python, no Airflow.

- ``contract``  the 24 columns, their types, validation of a row, hour conversions, the placeholder
                device id, the Avro schema
- ``generator`` Avazu-format test data with injected faults and a record of the truth
- ``lines``     raw lines of a source or partition with exact line numbers (bytes kept for bad UTF-8)
- ``reader``    chunked, bounded-memory reading of gzip/plain CSV from a path or s3://

Sampling and EDA statistics over this data are in :mod:`include.eda`.
"""

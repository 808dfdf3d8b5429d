"""The Avazu data layer: plain Python, no Airflow.

- ``contract``  the 24 columns, their types, validation of a row, hour conversions, Avro schema
- ``generator`` Avazu-format test data with injected faults and a record of the truth
- ``reader``    chunked, bounded-memory reading of gzip/plain CSV from a path or s3://
- ``sampling``  head samples, uniform reservoir, per-hour reservoirs
- ``stats``     EDA statistics accumulated in the same pass
- ``survey``    the one pass that feeds sampling and statistics and writes the results
- ``report``    data_stats.json -> Markdown report and PNG plots
"""

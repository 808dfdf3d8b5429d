"""The one Kafka core every exactly-once loop runs on.

* :mod:`include.kafka.transactions`: the transactional producer's life cycle under one retry policy;
* :mod:`include.kafka.errors`: what a librdkafka error means (retriable, abortable, fenced, fatal);
* :mod:`include.kafka.reader`: read topics to their end, ``read_committed``;
* :mod:`include.kafka.wire`: Avro in the Confluent wire format, and schema files;
* :mod:`include.kafka.headers`: the record header names the project writes;
* :mod:`include.kafka.reachability`: is the broker or the registry there at all;
* :mod:`include.kafka.client_file`: client settings (credentials) from a file, for command-line tools;
* :mod:`include.kafka.smoke`: Avro records through the broker and the registry and back.

The ingestion (include.ingest) and the stream processors (include.streaming) both run on it.
"""

"""Declarative Kafka administration: topic declarations, topic reconciliation, schema registration."""

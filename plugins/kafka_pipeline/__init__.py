"""Airflow glue for the pipeline: hooks that turn connections into clients, and operators.

The plugins folder is on Airflow's sys.path, so DAGs import ``kafka_pipeline.hooks`` directly.
"""

"""The project's local stack: Kafka (KRaft), a Schema Registry, an S3 endpoint, a Pushgateway, Prometheus, PostgreSQL and Redis, as plain processes.

Nothing here needs Docker. The broker is Apache Kafka from its Maven Central jars, the registry is
Apicurio Registry (which serves the Confluent Schema Registry API) from its Maven Central
distribution, the S3 endpoint is moto's server mode, and Prometheus, its Pushgateway,
PostgreSQL and Redis are Debian's packages (the broker runs Prometheus's JMX exporter agent). Everything listens on loopback and keeps
its state under ``.devstack/`` in the project (or ``$DEVSTACK_HOME``).

Use it as ``python -m devstack start|stop|status|env``.
"""

from devstack.stack import Stack, StackError, StackSettings

__all__ = ["Stack", "StackError", "StackSettings"]

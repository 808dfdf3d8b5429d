"""python -m devstack start|stop|restart|status|env [service ...]"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
import urllib.parse

from devstack.stack import SERVICE_TYPES, Stack, StackError

PORT_VARIABLES = """\
ports and places (environment variables, all optional):
  KAFKA_PORT=9092  KAFKA_CONTROLLER_PORT=9093  KAFKA_METRICS_PORT=7071 (the broker's JMX exporter)
  KAFKA_BROKERS=1 (3: a cluster of nodes kafka-1..3, node n on those ports + 100*(n-1))
  SCHEMA_REGISTRY_PORT=8081  SCHEMA_REGISTRY_MANAGEMENT_PORT=8091  S3_PORT=9000
  PUSHGATEWAY_PORT=9091  PROMETHEUS_PORT=9090  POSTGRES_PORT=5432  REDIS_PORT=6379
  DEVSTACK_HOME=<project>/.devstack (state, logs)  DEVSTACK_CACHE=~/.cache/avazu-kafka-devstack (jars)
  KAFKA_JAVA_HOME / REGISTRY_JAVA_HOME (a JDK to use instead of the newest one found)
"""


def _print_status(stack: Stack, names: list[str] | None) -> bool:
    rows = stack.status(names)
    width = max(len(r.name) for r in rows)
    for r in rows:
        pid = f"pid {r.pid}" if r.pid else "no pid"
        print(f"  {r.name:<{width}}  {r.state:<8}  {r.endpoint}  ({pid}; log {r.log})")
    return all(r.state == "running" for r in rows)


def redacted(value: str) -> str:
    """value with the password of a URL's user replaced by ***, so printing it shows no secret."""
    url = urllib.parse.urlsplit(value)
    if not url.password:
        return value
    netloc = f"{url.username}:***@{url.netloc.rpartition('@')[2]}"
    return urllib.parse.urlunsplit(url._replace(netloc=netloc))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="The local Kafka + Schema Registry + S3 + Prometheus + PostgreSQL + Redis stack, "
                    "as processes on loopback.",
        epilog=PORT_VARIABLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=["start", "stop", "restart", "status", "env"])
    parser.add_argument(
        "services", nargs="*", metavar="service",
        help=f"any of {', '.join(SERVICE_TYPES)} (default: all)",
    )
    args = parser.parse_args(argv)
    try:
        stack = Stack()
        names = args.services or None
        if args.action == "env":
            # Passwords stay out of terminals and logs; scripts/local-env.sh reads them from their files.
            for key, value in stack.environment().items():
                print(f"export {key}={shlex.quote(redacted(value))}")
            return 0
        if args.action == "status":
            return 0 if _print_status(stack, names) else 1
        if args.action in ("stop", "restart"):
            print("Stopping the local stack")
            stack.stop(names)
        if args.action in ("start", "restart"):
            began = time.monotonic()
            print("Starting the local stack")
            stack.start(names)
            print(f"Ready in {time.monotonic() - began:.1f} s:")
            _print_status(stack, names)
        return 0
    except StackError as error:
        print(f"devstack: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("devstack: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""Command line: reprocess a declared DLQ once, outside Airflow.

    python -m include.dlq reprocess --dlq ad_events_error [--archive data/dlq/archive]
    python -m include.dlq list

The cluster and registry come from ``KAFKA_BOOTSTRAP_SERVERS`` and ``SCHEMA_REGISTRY_URL``
(``. scripts/local-env.sh`` sets both); everything else from include/config/dlq.yaml. The result
is printed as one JSON line on stdout, the outcome table and the logs go to stderr. Exit 1 for a
permanent failure, 75 for a retriable one.

For crash tests, ``AVAZU_DLQ_KILL_AT=<transaction>:<phase>`` makes the process SIGKILL itself
there (phases: after_begin, before_commit, after_commit).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys

from include.crash_points import kill_hook_from_env
from include.dlq.config import DEFAULT_CONFIG_PATH, load_dlq_config
from include.dlq.reprocessor import PHASES, DlqReprocessor
from include.errors import PipelineError
from include.kafka.registry import registry_client

KILL_AT_ENV = "AVAZU_DLQ_KILL_AT"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.dlq", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=f"the settings file (default: {DEFAULT_CONFIG_PATH}, or $AVAZU_CONFIG_DIR's)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the declared DLQs")
    run = commands.add_parser("reprocess", help="reprocess one declared DLQ")
    run.add_argument("--dlq", required=True, help="the DLQ's name in the settings file")
    run.add_argument("--archive", help="archive folder or s3:// prefix (default: the settings file's)")
    run.add_argument("--topic", action="append", default=[], metavar="ROLE=NAME",
                     help="use another topic for a role: dlq, repaired, parked, retry1, retry2, ... (sandboxes)")
    run.add_argument("--group", help="consumer group (default: the settings file's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_dlq_config(args.config)
        if args.command == "list":
            print(json.dumps(config.names()))
            return 0
        if args.archive:
            config = dataclasses.replace(config, archive_uri=args.archive)
        spec = config.dlq(args.dlq).sandboxed(dict(t.split("=", 1) for t in args.topic), args.group)

        result = DlqReprocessor(spec, config, kafka_config={"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]},
                                registry=registry_client(os.environ["SCHEMA_REGISTRY_URL"]),
                                phase_hook=kill_hook_from_env(KILL_AT_ENV, PHASES)).run()
    except PipelineError as error:
        parser.exit(75 if error.retriable else 1, f"error: {error}\n")
    print(json.dumps(result.as_dict(), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: stage a source, or ingest one staged hour, outside Airflow.

    python -m include.ingest stage  --source data/avazu/train_sample.csv.gz --staging data/avazu/staging
    python -m include.ingest ingest --staging data/avazu/staging --hour 14102100 [--chunk-rows 50000]

The cluster and registry come from ``KAFKA_BOOTSTRAP_SERVERS`` and ``SCHEMA_REGISTRY_URL``
(``. scripts/local-env.sh`` sets both); everything else from include/config/ingest.yaml unless
given. The result is printed as one JSON line on stdout; logs go to stderr.

For crash tests, ``AVAZU_INGEST_KILL_AT=<chunk>:<phase>`` makes the process SIGKILL itself when
it reaches that phase of that chunk (phases: after_begin, mid_produce, before_commit,
after_commit) - the way a lost worker dies, with no chance to clean up.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from include.crash_points import kill_hook_from_env
from include.dead_letters import Origin
from include.errors import PipelineError
from include.ingest.config import DEFAULT_CONFIG_PATH, IngestConfigError, load_ingest_config
from include.ingest.ingestor import PHASES, HourlyIngestor
from include.ingest.staging import find_partition, partition_manifest_uri, stage_source
from include.ingest.topics import provision_ingest_topics
from include.kafka.registry import registry_client

KILL_AT_ENV = "AVAZU_INGEST_KILL_AT"


def _registry():

    return registry_client(os.environ["SCHEMA_REGISTRY_URL"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help=f"the settings file (default: {DEFAULT_CONFIG_PATH}, or $AVAZU_CONFIG_DIR's)")
    commands = parser.add_subparsers(dest="command", required=True)
    stage = commands.add_parser("stage", help="split a source into hour partitions (a no-op when already staged)")
    stage.add_argument("--source")
    stage.add_argument("--staging")
    stage.add_argument("--force", action="store_true")
    ingest = commands.add_parser("ingest", help="ingest one staged hour into Kafka")
    ingest.add_argument("--staging")
    ingest.add_argument("--hour", type=int, required=True)
    ingest.add_argument("--chunk-rows", type=int)
    ingest.add_argument("--raw-topic")
    ingest.add_argument("--dlq-topic")
    ingest.add_argument("--checkpoint-topic")
    ingest.add_argument("--reingest", action="store_true")
    ingest.add_argument("--request-id", help="identifies a re-ingestion request across its retries")
    ingest.add_argument("--provision", action="store_true", help="create the topics and register the schemas first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    try:
        config = load_ingest_config(args.config).with_overrides({
            "source_uri": getattr(args, "source", None), "staging_uri": args.staging,
            "chunk_rows": getattr(args, "chunk_rows", None), "raw_topic": getattr(args, "raw_topic", None),
            "dlq_topic": getattr(args, "dlq_topic", None), "checkpoint_topic": getattr(args, "checkpoint_topic", None),
        })
    except IngestConfigError as error:
        parser.exit(2, f"error: {error}\n")

    try:
        result = _run(args, config, parser)
    except PipelineError as error:
        # Exit 1 for what a retry cannot fix, 75 (EX_TEMPFAIL) for what it may.
        parser.exit(75 if error.retriable else 1, f"error: {error}\n")
    print(json.dumps(result, default=str))
    return 0


def _run(args, config, parser) -> dict:
    if args.command == "stage":
        return stage_source(config.source_uri, config.staging_uri, force=args.force,
                            progress_every_s=config.progress_every_s).as_dict()
    partition = find_partition(config.staging_uri, args.hour)
    if partition is None:
        parser.exit(3, f"error: hour {args.hour} is not staged: {partition_manifest_uri(config.staging_uri, args.hour)} does not exist\n")
    kafka_config = {"bootstrap.servers": os.environ["KAFKA_BOOTSTRAP_SERVERS"]}
    registry = _registry()
    if args.provision:
        from confluent_kafka.admin import AdminClient

        provision_ingest_topics(AdminClient(kafka_config), registry, config.topics)
    ingestor = HourlyIngestor(partition, config=config, kafka_config=kafka_config, registry=registry,
                              origin=Origin(run_id=args.request_id), reingest=args.reingest,
                              request_id=args.request_id, phase_hook=kill_hook_from_env(KILL_AT_ENV, PHASES))
    return ingestor.run().as_dict()


if __name__ == "__main__":
    sys.exit(main())

"""Run one stream processor in the foreground, outside Airflow.

    python -m include.streaming uppercase --input input-topic --output output-topic --group words
    python -m include.streaming analytics --web-topic web-events --purchase-topic purchase-events \\
        --output analytics-events --dlq analytics-dlq --group analytics

SIGTERM and Ctrl-C stop it cleanly (the batch in hand is finished and committed); the counts are
printed as one JSON line on stdout at the end. The broker and registry come from
KAFKA_BOOTSTRAP_SERVERS and SCHEMA_REGISTRY_URL (see scripts/local-env.sh) unless given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from include.errors import PipelineError
from include.streaming.analytics import DLQ_NOTICE, analytics_transform
from include.streaming.processor import StreamProcessor
from include.streaming.records import Transform, TransformContext
from include.streaming.words import uppercase_transform
from include.kafka.client_file import client_settings
from include.kafka.registry import registry_client


def paced(transform: Transform, max_rate: float) -> Transform:
    """The transform slowed to at most ``max_rate`` records/s (to watch a processor at work)."""
    began: float | None = None
    seen = 0

    def run(record):
        nonlocal began, seen
        if began is None:
            # The clock starts at the first record, so start-up time is no credit for a burst.
            began = time.monotonic()
        seen += 1
        ahead = began + seen / max_rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
        return transform(record)

    return run


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m include.streaming", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("processor", choices=["uppercase", "analytics"])
    parser.add_argument("--input", action="append", default=[], help="input topic (uppercase)")
    parser.add_argument("--web-topic", help="web events topic (analytics)")
    parser.add_argument("--purchase-topic", help="purchase events topic (analytics)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--dlq", help="dead-letter topic (none: failed records are skipped)")
    parser.add_argument("--group", required=True, help="consumer group of the processor")
    parser.add_argument("--instance", default="0", help="instance id, stable across restarts")
    parser.add_argument("--max-runtime", type=float)
    parser.add_argument("--idle-timeout", type=float)
    parser.add_argument("--max-rate", type=float, help="process at most this many records/s")
    parser.add_argument("--commit-interval", type=float, default=0.1)
    parser.add_argument("--progress-interval", type=float, default=30.0)
    parser.add_argument("--bootstrap-servers",
                        default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))
    parser.add_argument("--client-config", type=Path, metavar="FILE",
                        help="librdkafka settings, one key=value a line (like Kafka's --command-config): "
                             "credentials stay off the command line, where every user could read them")
    parser.add_argument("--registry-url", default=os.environ.get("SCHEMA_REGISTRY_URL"))
    args = parser.parse_args(argv)
    if args.processor == "analytics":
        if not (args.web_topic and args.purchase_topic):
            parser.error("analytics needs --web-topic and --purchase-topic")
        args.input = [args.web_topic, args.purchase_topic]
    elif not args.input:
        parser.error("uppercase needs at least one --input")
    return args


def main(argv: list[str] | None = None) -> int:
    """Build the processor from the command line, run it, print its counts; 1 when it failed."""
    args = _arguments(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    registry = None
    if args.processor == "analytics":

        registry = registry_client(args.registry_url)
    context = TransformContext(args.input, args.output, args.dlq, registry)
    if args.processor == "analytics":
        transform = analytics_transform(context, args.web_topic, args.purchase_topic)
    else:
        transform = uppercase_transform(context)
    if args.max_rate:
        transform = paced(transform, args.max_rate)
    processor = StreamProcessor(
        name=args.processor, transform=transform,
        client_config={"bootstrap.servers": args.bootstrap_servers, **client_settings(args.client_config)},
        input_topics=args.input, output_topic=args.output, dlq_topic=args.dlq,
        group_id=args.group, instance_id=args.instance, commit_interval=args.commit_interval,
        progress_interval=args.progress_interval,
        dead_letter_notice=DLQ_NOTICE if args.processor == "analytics" else None,
    )
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, _frame: processor.stop(signal.Signals(number).name))
    try:
        counts = processor.run(max_runtime=args.max_runtime, idle_timeout=args.idle_timeout)
    except PipelineError as exc:  # ProcessorFailed, brokers down ...: the one sentence, no traceback
        logging.getLogger(__name__).error("%s: %s", type(exc).__name__, exc)
        return 1
    print(json.dumps(counts.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

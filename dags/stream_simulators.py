"""stream_simulators: feed the stream pipelines (seed 004's two producers, seed 003's words).

    simulate_web_events       -> web events        (some events miss a field)
    simulate_purchase_events  -> purchase events   (some are broken JSON or mistyped)
    publish_words             -> words             (the seed's five words, or the given ones)

Bounded runs, triggered by hand: ``count`` events at ``rate`` events/s from a seeded generator (the
same seed gives the same events). Each task returns what it sent, naming every bad event.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag
from _stream_pipelines import (
    publish_words,
    simulate_purchase_events,
    simulate_web_events,
    stream_topic_params,
)

from include.streaming.words import SEED_WORDS

DEFAULT_ARGS = {"owner": "stream-processing", "retries": 1, "retry_delay": pendulum.duration(seconds=10)}


@dag(
    dag_id="stream_simulators",
    description="Publish simulated web and purchase events (some broken) and words to the stream topics",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    default_args=DEFAULT_ARGS,
    tags=["streaming", "kafka", "simulator", "seed-003", "seed-004"],
    params={
        **stream_topic_params("web_events_topic", "purchase_events_topic", "input_topic"),
        # Bounded so the list of bad events in the XCom stays small.
        "web_events": Param(1000, type="integer", minimum=0, maximum=100_000,
                            description="How many web events to send."),
        "purchase_events": Param(1000, type="integer", minimum=0, maximum=100_000,
                                 description="How many purchase events to send."),
        "rate": Param(200, type=["null", "number"], minimum=1,
                      description="Events per second per simulator; null sends as fast as possible."),
        "bad_ratio": Param(0.1, type="number", minimum=0, maximum=1,
                           description="Share of events broken on purpose."),
        "seed": Param(0, type="integer",
                      description="Random seed: the same seed gives the same events."),
        "words": Param(list(SEED_WORDS), type="array",
                       description="The words for the words topic (seed 003)."),
    },
    doc_md=__doc__,
)
def stream_simulators():
    simulate_web_events()
    simulate_purchase_events()
    publish_words()


stream_simulators()

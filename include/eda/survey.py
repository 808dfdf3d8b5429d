"""One streaming pass over an Avazu file: statistics and samples together, then written out.

Output layout under ``output_uri`` (a local folder or an ``s3://`` prefix)::

    data_stats.json                  statistics (see include.eda.stats)
    samples/train_sample_1k.csv ...  head samples, uniform reservoir, per-hour sample
    samples/bad_rows_head.csv        the first bad rows with line numbers and reasons
    eda_report.md, plots/*.png       written afterwards by include.eda.report
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

from include import storage
from include.avazu.generator import GeneratorSpec, generate_if_missing
from include.avazu.reader import AvazuInputError, AvazuReader
from include.eda.sampling import SampleSet, SamplingPlan, WrittenSample, load_sampling_config
from include.eda.stats import DatasetStats
from include.encoding.batch import RowCodecUnavailable
from include.read_ahead import read_ahead

log = logging.getLogger(__name__)

STATS_FILE = "data_stats.json"
SAMPLES_FOLDER = "samples"


@dataclass
class SurveyResult:
    """Where the outputs went and the counts of the pass (what the DAG returns as XCom)."""

    source_uri: str
    output_uri: str
    stats_uri: str
    samples: list[WrittenSample]
    rows_read: int
    good_rows: int
    bad_rows: int
    bad_rows_by_reason: dict[str, int]
    duplicate_rows: int
    ctr: float | None
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def survey(
    source_uri: str,
    output_uri: str,
    plan: SamplingPlan,
    chunk_rows: int = 20_000,
    top_k: int = 20,
    progress_every_s: float = 10.0,
) -> SurveyResult:
    """Read ``source_uri`` once, write its samples and ``data_stats.json`` under ``output_uri``."""
    started = time.monotonic()
    source, output = storage.resolve_local(source_uri), storage.resolve_local(output_uri)
    plan = plan.validated()
    reader = AvazuReader(source, chunk_rows=chunk_rows, progress_every_s=progress_every_s)
    stats = DatasetStats(top_k=top_k)
    samples = SampleSet(plan)
    try:
        # Reading (inflating, the C codec) on a thread of its own, while this one counts and samples.
        chunks, add = read_ahead(reader.column_chunks(), name="survey-read"), stats.add_columns
    except RowCodecUnavailable as why:
        log.warning("%s; surveying row by row instead, several times slower", why)
        chunks, add = iter(reader), stats.add
    try:
        with contextlib.closing(chunks):
            for chunk in chunks:
                add(chunk)
                samples.add(chunk)
    except AvazuInputError:
        stats.duplicate_ids.close()
        raise
    progress = reader.progress
    if progress.rows_read != stats.good_rows + stats.bad_rows:
        raise RuntimeError(
            f"row accounting broke: read {progress.rows_read:,} rows but counted "
            f"{stats.good_rows:,} good + {stats.bad_rows:,} bad"
        )
    written = samples.write(storage.join_uri(output, SAMPLES_FOLDER))
    data = stats.result(progress, source)
    data["samples"] = [asdict(sample) for sample in written]
    data["sampling_plan"] = asdict(plan)
    data["survey_seconds"] = round(time.monotonic() - started, 3)
    stats_uri = storage.join_uri(output, STATS_FILE)
    storage.write_text(stats_uri, json.dumps(data, indent=2))
    result = SurveyResult(
        source_uri=source,
        output_uri=output,
        stats_uri=stats_uri,
        samples=written,
        rows_read=progress.rows_read,
        good_rows=stats.good_rows,
        bad_rows=stats.bad_rows,
        bad_rows_by_reason={reason: n for reason, n in data["bad_rows"]["by_reason"].items() if n},
        duplicate_rows=data["duplicate_ids"]["duplicate_rows"],
        ctr=data["ctr"],
        elapsed_s=data["survey_seconds"],
    )
    log.info(
        "surveyed %s: %s rows read = %s good + %s bad %s; %s duplicate ids; CTR %s; "
        "%s samples written to %s in %.1fs",
        source,
        f"{result.rows_read:,}",
        f"{result.good_rows:,}",
        f"{result.bad_rows:,}",
        result.bad_rows_by_reason or "",
        f"{result.duplicate_rows:,}",
        result.ctr,
        len(written),
        output,
        result.elapsed_s,
    )
    return result


def ensure_default_source(source_uri: str, config: dict[str, Any]) -> str | None:
    """Generate the configured default source when it is requested and missing locally.

    Returns a sentence describing what was generated, or None when nothing had to be done.
    A missing source other than the default is an error for the reader to report, not a
    reason to invent data.
    """
    default = storage.resolve_local(config["default_source_uri"])
    if storage.resolve_local(source_uri) != default or storage.exists(default):
        return None
    settings = dict(config["generate_if_missing"])
    rate = settings.pop("fault_rate", 0.0)
    truth = generate_if_missing(GeneratorSpec.with_every_fault(fault_rate=rate, **settings), default)
    if truth is None:
        return None
    return (
        f"default source {default} was missing: generated {truth.rows:,} rows of Avazu-format data "
        f"(seed {truth.seed}, {len(truth.hours)} hours, fault rate {rate}) "
        f"in {truth.elapsed_s:.1f}s"
    )


def run_sampling(params: dict[str, Any]) -> dict[str, Any]:
    """The ``avazu_sampling`` DAG's first task: params in, survey counts out (JSON-ready).

    ``params`` may hold source_uri, output_uri, head_sizes, reservoir_size, per_hour_size and
    seed; anything absent comes from ``include/config/avazu_sampling.yaml``.
    """
    config = load_sampling_config()
    source_uri = params.get("source_uri") or config["default_source_uri"]
    output_uri = params.get("output_uri") or config["default_output_uri"]
    overrides = {
        "head_sizes": params.get("head_sizes"),
        "uniform_size": params.get("reservoir_size"),
        "per_hour_size": params.get("per_hour_size"),
        "seed": params.get("seed"),
    }
    plan = SamplingPlan.from_mapping(config["plan"])
    plan = SamplingPlan.from_mapping(
        {k: v for k, v in overrides.items() if v is not None}, base=plan
    )
    generated = ensure_default_source(source_uri, config)
    if generated:
        log.info("%s", generated)
    result = survey(
        source_uri,
        output_uri,
        plan,
        chunk_rows=config["chunk_rows"],
        top_k=config["top_k"],
        progress_every_s=config["progress_every_s"],
    )
    summary = result.as_dict()
    summary["generated_source"] = generated
    return summary

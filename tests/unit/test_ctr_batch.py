"""The CTR batch's counting (include/ctr/batch.py) without a database: staged hours against an independent count.

The independent count is the generator's truth: the good rows as the reader parses them, plus the
row each repairable fault stands for (the generator's record of it, not a repair). DuckDB runs in
the process, so these need no service.
"""

from __future__ import annotations

import gzip
import importlib.util
import sys
from collections import Counter

import pytest

from include.avazu.contract import EXAMPLE_LINE, HEADER_LINE, parse_fields
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.reader import read_all
from include.ctr.batch import (
    ALL,
    DIMENSIONS,
    BatchMismatch,
    NotAnAvazuHour,
    RepairRules,
    asked_hours,
    count_staged_hour,
)
from include.ctr.migrate import discover
from include.ingest.staging import find_partition, stage_source
from include.paths import PROJECT_ROOT

HOURS = (14102100, 14102101, 14102102)


def _counts(records) -> Counter:
    """impressions per (hour, dimension, value) and clicks per the same key with 'clicks' appended."""
    counted: Counter = Counter()
    for record in records:
        keys = [(record["hour"], ALL, "")] + [
            (record["hour"], d, "" if record[d] is None else str(record[d])) for d in DIMENSIONS]
        for key in keys:
            counted[key] += 1
            counted[(*key, "clicks")] += record["click"]
    return counted


def _batch(aggregates) -> Counter:
    counted: Counter = Counter()
    for hour, dimension, value, impressions, clicks in aggregates:
        counted[(hour, dimension, value)] += impressions
        counted[(hour, dimension, value, "clicks")] += clicks
    return counted


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """Three generated hours with every kind of fault, staged; and the generator's truth."""
    folder = tmp_path_factory.mktemp("ctr-batch")
    truth = generate(GeneratorSpec.with_every_fault(9_000, seed=21, fault_rate=0.01, hours=len(HOURS)),
                     folder / "train.csv.gz")
    stage_source(str(folder / "train.csv.gz"), str(folder / "staging"))
    return folder, truth


def test_each_staged_hour_counts_the_good_rows_and_the_repaired_ones_as_the_truth_does(staged):
    folder, truth = staged
    good, bad, _ = read_all(str(folder / "train.csv.gz"))
    repaired = [parse_fields(fields) for fields in truth.repairs.values()]
    assert bad and repaired and len(bad) > len(repaired)  # some dead letters stay parked
    rules = RepairRules.declared()
    got, rows, parked = Counter(), 0, 0
    for hour in HOURS:
        partition = find_partition(str(folder / "staging"), hour)
        counts = count_staged_hour(partition, rules)
        assert counts.rows == partition.rows and counts.good_rows == partition.good_rows
        assert counts.rows == counts.good_rows + counts.repaired_rows + counts.parked_rows
        assert 0 < counts.pattern_rows < counts.good_rows  # most by DuckDB, a few by the contract
        got += _batch(counts.aggregates)
        rows += counts.rows
        parked += counts.parked_rows
    assert got == _counts(good + repaired)
    assert rows == truth.rows and parked == len(bad) - len(repaired)


def test_a_repaired_row_counts_in_the_hour_it_holds_not_the_hour_it_was_staged_in(tmp_path):
    # The hour written as a timestamp: staged with the line before it (hour 00), repaired into hour 01.
    fields = EXAMPLE_LINE.split(",")
    first = ",".join([*fields[:2], "14102100", *fields[3:]])
    broken = ",".join([*fields[:2], "2014-10-21 01:00:00", *fields[3:]])
    later = ",".join(["17", *fields[1:2], "14102101", *fields[3:]])
    source = tmp_path / "train.csv.gz"
    source.write_bytes(gzip.compress("\n".join([HEADER_LINE, first, broken, later, ""]).encode()))
    stage_source(str(source), str(tmp_path / "staging"))
    counts = count_staged_hour(find_partition(str(tmp_path / "staging"), 14102100), RepairRules.declared())
    assert (counts.good_rows, counts.repaired_rows, counts.repaired_by_hour) == (1, 1, {14102101: 1})
    assert [row for row in counts.aggregates if row[1] == ALL] == [(14102100, ALL, "", 1, 0), (14102101, ALL, "", 1, 0)]


def test_integers_count_as_their_decimal_text_and_empty_values_as_the_empty_string(tmp_path):
    fields = EXAMPLE_LINE.split(",")
    fields[4] = "05"  # banner_pos with a leading zero: the clean-row pattern takes it, the value is 5
    padded = ",".join(fields)
    fields = EXAMPLE_LINE.split(",")
    fields[5] = ""  # no site_id: a valid row the pattern leaves to the contract
    empty = ",".join(fields)
    source = tmp_path / "train.csv.gz"
    source.write_bytes(gzip.compress("\n".join([HEADER_LINE, padded, empty, ""]).encode()))
    stage_source(str(source), str(tmp_path / "staging"))
    counts = count_staged_hour(find_partition(str(tmp_path / "staging"), 14102100), RepairRules(None))
    assert (counts.good_rows, counts.pattern_rows) == (2, 1)
    rows = {(d, v): (i, c) for _, d, v, i, c in counts.aggregates}
    assert rows[("banner_pos", "5")] == (1, 0) and rows[("banner_pos", "0")] == (1, 0)
    assert rows[("site_id", "")] == (1, 0) and rows[("site_id", "1fbe01fe")] == (1, 0)


def test_without_repair_rules_every_dead_letter_is_parked(staged):
    folder, _ = staged
    partition = find_partition(str(folder / "staging"), HOURS[0])
    counts = count_staged_hour(partition, RepairRules(None))
    assert counts.repaired_rows == 0 and counts.parked_rows == partition.bad_rows


def test_a_staged_file_that_disagrees_with_its_manifest_is_refused(staged):
    folder, _ = staged
    partition = find_partition(str(folder / "staging"), HOURS[1])
    partition.good_rows += 1
    with pytest.raises(BatchMismatch, match=rf"hour {HOURS[1]} .* staging counted {partition.good_rows:,} good rows"):
        count_staged_hour(partition, RepairRules.declared())


def test_the_hours_a_run_computes():
    events = [{"hour": 14102101, "complete": True}, {"hour": 14102100, "complete": True},
              {"hour": 14102102, "complete": False}, {"hour": 14102101, "complete": True}]
    assert asked_hours([], events) == [14102100, 14102101]
    assert asked_hours([14102105, 14102103, 14102105], events) == [14102103, 14102105]
    with pytest.raises(NotAnAvazuHour, match="hour 14113000 is not an Avazu hour"):
        asked_hours([14113000], [])


def test_the_dimensions_are_the_flink_jobs_and_the_tables(monkeypatch):
    # The job's module imports no PyFlink at its top, so the project's interpreter can read it.
    spec = importlib.util.spec_from_file_location("ctr_job", PROJECT_ROOT / "flink" / "ctr_job.py")
    job = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ctr_job", job)
    spec.loader.exec_module(job)
    assert job.DIMENSIONS == DIMENSIONS
    allowed = ", ".join(f"'{d}'" for d in (ALL, *DIMENSIONS))
    assert f"CHECK (dimension IN ({allowed}))" in discover()[0].sql


def test_the_repair_rules_are_the_ingestion_dlqs():
    rules = RepairRules.declared()
    assert rules.spec is not None and rules.spec.repaired_topic is not None
    assert FaultKind.UPPER_HEX.repairable
    upper = EXAMPLE_LINE.replace("1fbe01fe", "1FBE01FE")
    assert rules.repaired("BAD_HEX", upper.encode())["site_id"] == "1fbe01fe"
    assert rules.repaired("EMPTY_REQUIRED", upper.encode()) is None  # a park rule
    assert rules.repaired("BAD_HEX", upper.encode() + b" " * 70_000) is None  # longer than an envelope keeps

"""The DLQ repairs: every repairable generated line comes back as the row it stands for, nothing else does."""

from __future__ import annotations

import pytest

from include.avazu.contract import EXAMPLE_LINE, Reason, parse_fields, parse_line
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.dlq.repairs import REPAIRS, repair

ROWS = 30_000


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    path = tmp_path_factory.mktemp("repairs") / "train.csv"
    truth = generate(GeneratorSpec(ROWS, seed=12, fault_rates={kind: 0.002 for kind in FaultKind}), path)
    return path.read_bytes().split(b"\n"), truth


def test_every_repairable_line_is_bad_at_ingestion_and_comes_back_as_its_row(faulty):
    lines, truth = faulty
    repairable = [kind for kind in FaultKind if kind.repairable]
    assert {kind.value for kind in repairable} <= set(truth.faults)
    assert sorted(truth.repairs) == sorted(line for kind in repairable for line in truth.faults[kind.value])
    rules = set()
    for line, fields in truth.repairs.items():
        raw = lines[line - 1]
        assert truth.bad_lines()[line] is not None  # the ingestion dead-letters it
        repaired = repair(raw, list(REPAIRS))
        assert repaired is not None, raw
        assert repaired.record == parse_fields(fields)  # field for field, the row the truth says
        rules.add(repaired.rule)
    assert rules == set(REPAIRS)  # each repair is needed by some fault


def test_lines_broken_beyond_repair_stay_broken(faulty):
    lines, truth = faulty
    beyond = [line for line in truth.bad_lines() if line not in truth.repairs]
    assert len(beyond) > 100
    assert all(repair(lines[line - 1], list(REPAIRS)) is None for line in beyond)


@pytest.mark.parametrize(("raw", "rule"), [
    (EXAMPLE_LINE.replace("1005", " 1005 ", 1), "strip_whitespace"),
    (EXAMPLE_LINE + ",", "drop_trailing_empty"),
    (EXAMPLE_LINE.replace("14102100", "2014-10-21T00:00:00Z", 1), "hour_from_timestamp"),
])
def test_each_repair_on_the_example_row(raw, rule):
    assert type(parse_line(raw)) is not dict
    repaired = repair(raw.encode(), list(REPAIRS))
    assert repaired is not None and repaired.rule == rule and repaired.record == parse_line(EXAMPLE_LINE)


@pytest.mark.parametrize("raw", [
    EXAMPLE_LINE.replace("14102100", "2014-10-21 00:30:00", 1).encode(),  # not a whole hour: which hour?
    EXAMPLE_LINE.encode().replace(b"1005", b"caf\xc3", 1),  # cut-off UTF-8, not Windows-1252
    b"\xff\xfe" + EXAMPLE_LINE.encode(),  # a byte order mark
])
def test_a_repair_never_guesses(raw):
    assert repair(raw, list(REPAIRS)) is None


def test_only_the_named_repairs_are_tried():
    raw = (EXAMPLE_LINE + ",").encode()
    assert repair(raw, ["strip_whitespace"]) is None
    assert repair(raw, ["drop_trailing_empty"]).rule == "drop_trailing_empty"
    assert Reason.FIELD_COUNT is parse_line(raw.decode()).reason

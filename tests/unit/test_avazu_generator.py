"""The Avazu-format generator: formats, distributions, determinism, every fault and its truth."""

from __future__ import annotations

import gzip
import re
import zlib
from collections import Counter

import pytest

from include.avazu.contract import AVAZU_HOURS, COLUMN_NAMES, HEADER_LINE
from include.avazu.generator import FaultKind, GenerationTruth, GeneratorSpec, generate, main

ROWS = 40_000


def _lines(path) -> list[bytes]:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data.split(b"\n")[:-1]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "clean.csv.gz"
    return path, generate(GeneratorSpec(ROWS, seed=11), path)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "faulty.csv"
    rates = {kind: 0.005 for kind in FaultKind}
    return path, generate(GeneratorSpec(ROWS, seed=12, fault_rates=rates), path)


def test_header_columns_and_row_count(clean):
    path, truth = clean
    lines = _lines(path)
    assert lines[0].decode() == HEADER_LINE
    assert len(lines) == ROWS + 1 == truth.rows + 1
    assert all(line.count(b",") == len(COLUMN_NAMES) - 1 for line in lines)


def test_field_formats_match_the_real_file(clean):
    path, _ = clean
    rows = [line.decode().split(",") for line in _lines(path)[1:]]
    ids = [int(r[0]) for r in rows]
    assert all(re.fullmatch(r"[1-9][0-9]*|0", r[0]) for r in rows)
    assert max(ids) > 2**63 and min(ids) < 2**63  # the full unsigned range, like train.gz
    assert len(set(ids)) == len(ids)
    hexes = re.compile(r"[0-9a-f]{8}")
    assert all(hexes.fullmatch(value) for r in rows for value in r[5:14])
    assert {r[1] for r in rows} == {"0", "1"}
    assert {r[3] for r in rows} <= {"1005", "1002", "1010", "1012", "1007", "1001", "1008"}


def test_hours_are_in_order_and_cover_the_span(clean):
    path, truth = clean
    hours = [int(line.split(b",")[2]) for line in _lines(path)[1:]]
    assert hours == sorted(hours)
    assert set(hours) == set(AVAZU_HOURS) == set(truth.hours)
    assert Counter(hours) == truth.rows_per_hour


def test_a_partial_span(tmp_path):
    truth = generate(
        GeneratorSpec(5_000, start_hour=14102710, hours=5, seed=3), tmp_path / "part.csv"
    )
    hours = {int(line.split(b",")[2]) for line in _lines(tmp_path / "part.csv")[1:]}
    assert hours == {14102710, 14102711, 14102712, 14102713, 14102714} == set(truth.hours)


def test_click_rate_and_cardinalities_look_like_avazu(clean):
    path, _ = clean
    rows = [line.decode().split(",") for line in _lines(path)[1:]]
    clicks = [int(r[1]) for r in rows]
    assert 0.15 < sum(clicks) / len(clicks) < 0.19

    def ctr(column, value):
        picked = [int(r[1]) for r in rows if r[COLUMN_NAMES.index(column)] == value]
        return sum(picked) / len(picked)

    assert ctr("banner_pos", "1") > ctr("banner_pos", "0")
    assert ctr("device_type", "0") > ctr("device_type", "1") > ctr("device_type", "4")
    distinct = {
        name: len({r[COLUMN_NAMES.index(name)] for r in rows})
        for name in ("device_ip", "device_id", "site_category", "app_category")
    }
    assert distinct["device_ip"] > ROWS * 0.1 and distinct["device_id"] > ROWS * 0.03
    assert distinct["site_category"] <= 27 and distinct["app_category"] <= 37


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    spec = GeneratorSpec(3_000, seed=5, fault_rates={FaultKind.NOT_INTEGER: 0.01})
    first, second = generate(spec, tmp_path / "a.csv.gz"), generate(spec, tmp_path / "b.csv.gz")
    assert (tmp_path / "a.csv.gz").read_bytes() == (tmp_path / "b.csv.gz").read_bytes()
    assert first.faults == second.faults
    generate(GeneratorSpec(3_000, seed=6), tmp_path / "c.csv.gz")
    assert _lines(tmp_path / "a.csv.gz")[1:] != _lines(tmp_path / "c.csv.gz")[1:]


def test_plain_and_gzip_hold_the_same_rows(tmp_path):
    spec = GeneratorSpec(2_000, seed=9)
    generate(spec, tmp_path / "x.csv")
    generate(spec, tmp_path / "x.csv.gz")
    assert (tmp_path / "x.csv").read_bytes()[:2] != b"\x1f\x8b"
    assert _lines(tmp_path / "x.csv") == _lines(tmp_path / "x.csv.gz")


def test_every_fault_kind_is_injected_at_its_rate_on_distinct_lines(faulty):
    _, truth = faulty
    assert set(truth.faults) == {kind.value for kind in FaultKind}
    all_lines = [line for lines in truth.faults.values() for line in lines]
    assert len(all_lines) == len(set(all_lines)) == len(FaultKind) * round(0.005 * ROWS)
    assert all(3 <= line <= ROWS + 1 for line in all_lines)  # never the header nor the first row


@pytest.mark.parametrize("kind", list(FaultKind))
def test_each_fault_looks_as_announced(faulty, kind):
    path, truth = faulty
    lines = _lines(path)
    first_line_of_id: dict[bytes, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        first_line_of_id.setdefault(line.split(b",", 1)[0], number)
    for line_number in truth.faults[kind.value]:
        raw = lines[line_number - 1]
        fields = raw.split(b",")
        column = truth.fault_fields[line_number]
        if kind is FaultKind.FIELD_COUNT:
            assert len(fields) != len(COLUMN_NAMES)
        elif kind is FaultKind.BAD_UTF8:
            with pytest.raises(UnicodeDecodeError):
                raw.decode("utf-8")
        elif kind is FaultKind.EMPTY_REQUIRED:
            assert fields[COLUMN_NAMES.index(column)] == b""
        elif kind is FaultKind.NOT_INTEGER:
            assert not re.fullmatch(rb"-?[0-9]+", fields[COLUMN_NAMES.index(column)])
        elif kind is FaultKind.BAD_HOUR:
            assert int(fields[2]) not in AVAZU_HOURS if fields[2].isdigit() else True
        elif kind is FaultKind.DUPLICATE_ID:
            assert first_line_of_id[fields[0]] < line_number


def test_truth_maps_faults_to_reader_reasons(faulty):
    _, truth = faulty
    bad = truth.bad_lines()
    # Duplicate ids are valid rows; every other kind is a bad row with its reason.
    assert len(bad) == sum(kind.expected_reason is not None for kind in FaultKind) * round(0.005 * ROWS)
    assert set(truth.faults["duplicate_id"]).isdisjoint(bad)
    assert GenerationTruth.from_json(truth.to_json()) == truth


def test_truncated_gzip_records_what_survives(tmp_path):
    path = tmp_path / "cut.csv.gz"
    truth = generate(GeneratorSpec(20_000, seed=4, truncate_fraction=0.6), path)
    assert path.stat().st_size == truth.truncated_at_byte
    with pytest.raises(EOFError):
        gzip.decompress(path.read_bytes())
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    survived = inflater.decompress(path.read_bytes()) + inflater.flush()
    assert survived.count(b"\n") == truth.complete_lines_after_truncation
    assert 1 < truth.complete_lines_after_truncation < 20_001


@pytest.mark.parametrize(
    "spec, message",
    [
        (GeneratorSpec(10, start_hour=14110100), "not one of the Avazu hours"),
        (GeneratorSpec(10, start_hour=14103020, hours=5), "hours must be"),
        (GeneratorSpec(10, fault_rates={FaultKind.BAD_HOUR: 1.5}), "within 0..1"),
        (
            GeneratorSpec(10, fault_rates={FaultKind.BAD_HOUR: 0.6, FaultKind.BAD_UTF8: 0.6}),
            "more faulty rows",
        ),
        (GeneratorSpec(-1), "zero or more"),
    ],
)
def test_bad_settings_are_one_sentence(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        generate(spec, tmp_path / "x.csv.gz")


def test_truncation_needs_gzip(tmp_path):
    with pytest.raises(ValueError, match="gzip"):
        generate(GeneratorSpec(10, truncate_fraction=0.5), tmp_path / "x.csv")


def test_command_line(tmp_path, capsys):
    out = tmp_path / "cli.csv.gz"
    assert (
        main(
            [
                "--rows",
                "1000",
                "--out",
                str(out),
                "--start-hour",
                "14102100",
                "--hours",
                "24",
                "--seed",
                "7",
                "--fault-rate",
                "0.01",
                "--fault",
                "duplicate_id=0.02",
            ]
        )
        == 0
    )
    truth = GenerationTruth.from_json((tmp_path / "cli.csv.gz.truth.json").read_text())
    assert truth.rows == 1000 and len(truth.hours) == 24
    assert len(truth.faults["duplicate_id"]) == 20 and len(truth.faults["bad_hour"]) == 10
    assert "wrote 1,000 rows" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["--rows", "10", "--out", str(out), "--start-hour", "99999999"])
    assert exit_info.value.code == 2

"""EDA statistics checked against pandas on the same file, duplicate counting, and the report."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from include.avazu.contract import COLUMN_NAMES, EXAMPLE_LINE, HEADER_LINE
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.reader import AvazuReader, ReadProgress
from include.eda.report import write_report
from include.eda.sampling import SamplingPlan
from include.eda.stats import CATEGORY_COLUMNS, DatasetStats, DuplicateIdCounter
from include.eda.survey import survey

ROWS = 30_000


@pytest.fixture(scope="module")
def surveyed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stats")
    source = folder / "src.csv.gz"
    truth = generate(
        GeneratorSpec(ROWS, seed=41, fault_rates={kind: 0.002 for kind in FaultKind}), source
    )
    survey(
        str(source),
        str(folder / "out"),
        SamplingPlan(head_sizes=(100,), uniform_size=100, per_hour_size=2),
    )
    stats = json.loads((folder / "out" / "data_stats.json").read_text())
    return source, truth, stats, folder / "out"


@pytest.fixture(scope="module")
def frame(surveyed):
    """The good rows, read by pandas alone: bad lines come from the generator's truth."""
    source, truth, _, _ = surveyed
    skip = [line - 1 for line in truth.bad_lines()]
    return pd.read_csv(
        source, dtype=str, keep_default_na=False, skiprows=skip, encoding_errors="replace"
    )


def test_row_counts_and_bad_rows_by_reason(surveyed, frame):
    _, truth, stats, _ = surveyed
    assert stats["rows"] == {"read": ROWS, "good": len(frame), "bad": ROWS - len(frame)}
    expected = Counter(reason.value for reason in truth.bad_lines().values())
    assert {k: v for k, v in stats["bad_rows"]["by_reason"].items() if v} == expected


def test_click_rates_match_pandas(surveyed, frame):
    _, _, stats, _ = surveyed
    clicks = frame["click"].astype(int)
    assert stats["clicks"] == clicks.sum()
    assert stats["ctr"] == pytest.approx(clicks.mean(), abs=1e-6)
    by_hour = (
        frame.assign(click=clicks).groupby(frame["hour"].astype(int))["click"].agg(["count", "sum"])
    )
    assert [(h["hour"], h["rows"], h["clicks"]) for h in stats["hourly"]] == [
        (hour, row["count"], row["sum"]) for hour, row in by_hour.iterrows()
    ]
    for column in ("banner_pos", "device_type", "device_conn_type"):
        grouped = (
            frame.assign(click=clicks)
            .groupby(frame[column].astype(int))["click"]
            .agg(["count", "sum", "mean"])
        )
        assert [(r["value"], r["rows"], r["clicks"]) for r in stats["ctr_by"][column]] == [
            (value, row["count"], row["sum"]) for value, row in grouped.iterrows()
        ]
        assert [r["ctr"] for r in stats["ctr_by"][column]] == pytest.approx(
            list(grouped["mean"]), abs=1e-6
        )


def test_duplicates_time_range_and_nulls_match_pandas(surveyed, frame):
    _, truth, stats, _ = surveyed
    assert (
        stats["duplicate_ids"]["duplicate_rows"]
        == frame["id"].duplicated().sum()
        == len(truth.faults["duplicate_id"])
    )
    assert stats["duplicate_ids"]["distinct_ids"] == frame["id"].nunique()
    hours = frame["hour"].astype(int)
    assert (stats["time_range"]["first_hour"], stats["time_range"]["last_hour"]) == (
        hours.min(),
        hours.max(),
    )
    assert stats["time_range"]["hours_present"] == hours.nunique()
    assert stats["time_range"]["out_of_order_rows"] == int((hours.diff() < 0).sum())
    assert stats["nulls"] == {name: int((frame[name] == "").sum()) for name in COLUMN_NAMES}


def test_top_categories_match_pandas(surveyed, frame):
    _, _, stats, _ = surveyed
    for column in CATEGORY_COLUMNS:
        counts = frame[column].value_counts()
        entry = stats["top_categories"][column]
        assert entry["distinct"] == len(counts) and not entry["approximate"]
        assert [r["rows"] for r in entry["top"]] == list(
            counts.iloc[:20]
        )  # ties may list values in another order
        assert all(counts[r["value"]] == r["rows"] for r in entry["top"])


def test_empty_optional_fields_are_counted_and_grouped(tmp_path):
    fields = EXAMPLE_LINE.split(",")
    with_nulls = list(fields)
    with_nulls[COLUMN_NAMES.index("site_id")] = ""
    with_nulls[COLUMN_NAMES.index("banner_pos")] = ""
    last_empty = list(fields)
    last_empty[-1] = ""  # an empty last field leaves no ",," inside its own line
    path = tmp_path / "nulls.csv"
    path.write_text(
        "\n".join(
            [
                HEADER_LINE,
                EXAMPLE_LINE,
                ",".join(with_nulls),
                ",".join(with_nulls),
                ",".join(last_empty),
            ]
        )
        + "\n"
    )
    stats = DatasetStats()
    reader = AvazuReader(str(path))
    for chunk in reader:
        stats.add(chunk)
    result = stats.result(reader.progress, str(path))
    assert {name: n for name, n in result["nulls"].items() if n} == {
        "site_id": 2,
        "banner_pos": 2,
        "C21": 1,
    }
    assert [(r["value"], r["rows"]) for r in result["ctr_by"]["banner_pos"]] == [(0, 2), (None, 2)]
    assert result["duplicate_ids"]["duplicate_rows"] == 3


@pytest.mark.parametrize("buffer_ids", [10**9, 1_000])  # all in memory / spilled to partition files
def test_duplicate_id_counter_is_exact(buffer_ids, tmp_path):
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 2**64 - 1, size=20_000, dtype=np.uint64, endpoint=True)
    repeats = ids[rng.integers(0, len(ids), size=700)]
    stream = [str(int(v)) for v in np.concatenate([ids, repeats])]
    counter = DuplicateIdCounter(partitions=16, buffer_ids=buffer_ids, tmp_dir=str(tmp_path))
    for start in range(0, len(stream), 3_000):
        counter.add(stream[start : start + 3_000])
    result = counter.result()
    series = pd.Series(stream)
    assert result["duplicate_rows"] == series.duplicated().sum()
    assert result["distinct_ids"] == series.nunique()
    assert result["ids_seen_more_than_once"] == (series.value_counts() > 1).sum()
    assert result["spilled_to_disk"] == (buffer_ids < len(stream))
    assert list(tmp_path.iterdir()) == []  # spill files are removed


@pytest.mark.parametrize("columns", [False, True], ids=["rows", "columns"])
def test_category_counters_are_pruned_and_marked_approximate(surveyed, frame, columns):
    source = surveyed[0]
    stats = DatasetStats(max_tracked_values=500)
    reader = AvazuReader(str(source))
    for chunk in reader.column_chunks() if columns else reader:
        (stats.add_columns if columns else stats.add)(chunk)
    result = stats.result(reader.progress, str(source))
    for column in CATEGORY_COLUMNS:
        entry = result["top_categories"][column]
        assert entry["approximate"] and entry["distinct"] <= 500
        # The heavy hitters survive pruning; only the long tail is cut.
        assert entry["top"][0]["value"] == frame[column].value_counts().index[0]


def test_result_of_an_empty_file():
    result = DatasetStats().result(ReadProgress(), "nothing.csv")
    assert result["rows"] == {"read": 0, "good": 0, "bad": 0}
    assert result["ctr"] is None and result["hourly"] == []


def test_report_and_plots_are_written(surveyed):
    _, _, stats, out = surveyed
    written = write_report(str(out))
    assert written["report_uri"] == str(out / "eda_report.md")
    for uri in written["plot_uris"]:
        with open(uri, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    report = (out / "eda_report.md").read_text()
    for heading in (
        "## Overview",
        "## Columns",
        "## Click-through rate",
        "## Volume",
        "## Top categories",
        "## Data quality",
        "## Samples",
    ):
        assert heading in report
    for name in ("ctr_by_hour.png", "rows_per_hour.png", "ctr_by_banner_pos_and_device_type.png"):
        assert f"](plots/{name})" in report and (out / "plots" / name).is_file()
    assert f"| Rows read (after the header) | {ROWS:,} |" in report
    assert (
        f"{ROWS:,} read = {stats['rows']['good']:,} good + {stats['rows']['bad']:,} bad" in report
    )


def _stats_by(source, columns: bool, chunk_rows: int) -> dict:
    stats = DatasetStats()
    reader = AvazuReader(str(source), chunk_rows=chunk_rows)
    for chunk in reader.column_chunks() if columns else reader:
        (stats.add_columns if columns else stats.add)(chunk)
    result = stats.result(reader.progress, str(source))
    result.pop("computed_at"), result.pop("read_seconds"), result.pop("rows_per_second")
    return result


@pytest.mark.parametrize("chunk_rows", [1, 7_000, 100_000])
def test_the_column_path_gives_the_row_paths_figures(surveyed, chunk_rows, tmp_path):
    # Every fault kind, clean and declined rows mixed in each chunk, an undecodable line among them.
    source = surveyed[0]
    assert _stats_by(source, True, chunk_rows) == _stats_by(source, False, 20_000)


def test_column_chunks_keep_every_good_line_in_file_order(surveyed):
    source, truth, _, _ = surveyed
    reader = AvazuReader(str(source), chunk_rows=5_000)
    rows = [(number, line, hour) for chunk in reader.column_chunks()
            for number, line, hour in zip(chunk.line_numbers, chunk.lines, chunk.hours)]
    by_rows = [(number, line, record["hour"]) for chunk in AvazuReader(str(source))
               for number, line, record in zip(chunk.line_numbers, chunk.lines, chunk.records)]
    assert rows == by_rows and len(rows) == ROWS - len(truth.bad_lines())


def test_without_the_c_codec_the_survey_reads_row_by_row(surveyed, tmp_path, monkeypatch, caplog):
    import include.encoding.native as native

    source, _, stats, _ = surveyed
    monkeypatch.setattr(native, "_native", None)
    survey(str(source), str(tmp_path / "out"), SamplingPlan(head_sizes=(100,), uniform_size=100, per_hour_size=2))
    again = json.loads((tmp_path / "out" / "data_stats.json").read_text())
    for key in ("computed_at", "read_seconds", "rows_per_second", "survey_seconds", "samples", "source_uri"):
        again.pop(key), stats.pop(key, None)
    assert again == {k: v for k, v in stats.items() if k in again}
    assert "surveying row by row instead" in caplog.text

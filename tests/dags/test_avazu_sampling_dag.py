"""The avazu_sampling DAG end to end with dag.test() on a million generated rows."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.eda.sampling import load_sampling_config

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "avazu_sampling.py"
ROWS = 1_000_000


def _load_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAG_FILE))
    assert bag.import_errors == {}
    return bag.dags["avazu_sampling"]


@pytest.fixture(scope="session")
def million_rows(tmp_path_factory):
    path = tmp_path_factory.mktemp("avazu-dag") / "train_1m.csv.gz"
    truth = generate(
        GeneratorSpec(ROWS, seed=2014, fault_rates={kind: 0.0005 for kind in FaultKind}), path
    )
    return path, truth


def test_param_defaults_mirror_the_sampling_config():
    # The DAG cannot read the config when parsed (no I/O at import), so it repeats the values.
    dag = _load_dag()
    config = load_sampling_config()
    params = {name: dag.params[name] for name in dag.params}
    assert params == {
        "source_uri": config["default_source_uri"],
        "output_uri": config["default_output_uri"],
        "head_sizes": config["plan"]["head_sizes"],
        "reservoir_size": config["plan"]["uniform_size"],
        "per_hour_size": config["plan"]["per_hour_size"],
        "seed": config["plan"]["seed"],
    }
    assert dag.schedule is None or str(dag.timetable.summary) == "None"
    assert [t.task_id for t in dag.topological_sort()] == ["sample_and_profile", "write_eda_report"]


@pytest.mark.slow
def test_dag_run_writes_stats_that_match_pandas(airflow_db, million_rows, tmp_path):
    import pandas as pd

    source, truth = million_rows
    out = tmp_path / "eda"
    run = _load_dag().test(
        run_conf={
            "source_uri": str(source),
            "output_uri": str(out),
            "head_sizes": [1_000, 10_000, 50_000],
            "reservoir_size": 20_000,
            "per_hour_size": 50,
            "seed": 11,
        }
    )
    assert str(run.state) == "success"

    summary = run.get_task_instance("sample_and_profile").xcom_pull(task_ids="sample_and_profile")
    report = run.get_task_instance("write_eda_report").xcom_pull(task_ids="write_eda_report")
    bad_lines = truth.bad_lines()
    assert summary["rows_read"] == ROWS == summary["good_rows"] + summary["bad_rows"]
    assert summary["bad_rows"] == len(bad_lines)
    assert report["rows_read"] == ROWS

    stats = json.loads((out / "data_stats.json").read_text())
    frame = pd.read_csv(
        source,
        dtype=str,
        keep_default_na=False,
        skiprows=[n - 1 for n in bad_lines],
        encoding_errors="replace",
    )
    clicks = frame["click"].astype(int)
    assert stats["rows"]["good"] == len(frame)
    assert stats["clicks"] == clicks.sum()
    assert (
        stats["duplicate_ids"]["duplicate_rows"]
        == frame["id"].duplicated().sum()
        == len(truth.faults["duplicate_id"])
    )
    per_hour = clicks.groupby(frame["hour"].astype(int)).agg(["count", "sum"])
    assert [(h["hour"], h["rows"], h["clicks"]) for h in stats["hourly"]] == [
        (hour, r["count"], r["sum"]) for hour, r in per_hour.iterrows()
    ]
    for column in ("banner_pos", "device_type"):
        grouped = clicks.groupby(frame[column].astype(int)).agg(["count", "sum"])
        assert [(r["value"], r["rows"], r["clicks"]) for r in stats["ctr_by"][column]] == [
            (v, g["count"], g["sum"]) for v, g in grouped.iterrows()
        ]
    for column in ("site_id", "app_category"):
        assert [r["rows"] for r in stats["top_categories"][column]["top"]] == list(
            frame[column].value_counts().iloc[:20]
        )

    assert (out / "eda_report.md").is_file()
    for name in ("ctr_by_hour.png", "rows_per_hour.png", "ctr_by_banner_pos_and_device_type.png"):
        assert (out / "plots" / name).read_bytes()[:4] == b"\x89PNG"
    sample_rows = {s["name"]: s["rows"] for s in summary["samples"]}
    assert (
        sample_rows["train_sample_50k.csv"] == 50_000
        and sample_rows["train_uniform_20k.csv"] == 20_000
    )
    assert sample_rows["train_per_hour_50.csv"] == 50 * 240


@pytest.mark.parametrize("broken", ["missing", "empty", "wrong_header"])
def test_a_bad_source_fails_the_task_at_once_without_a_retry(airflow_db, tmp_path, broken, capfd):
    """Retrying cannot fix a missing or broken file: one try, one sentence, no 2-minute retry wait."""
    import time

    source = tmp_path / "train.csv"
    if broken == "empty":
        source.write_bytes(b"")
    elif broken == "wrong_header":
        source.write_text("a,b,c\n1,2,3\n")
    started = time.monotonic()
    run = _load_dag().test(run_conf={"source_uri": str(source), "output_uri": str(tmp_path / "eda")})
    elapsed = time.monotonic() - started
    captured = capfd.readouterr()
    task_log = captured.out + captured.err
    assert str(run.state) == "failed"
    ti = run.get_task_instance("sample_and_profile")
    assert str(ti.state) == "failed" and ti.try_number == 1  # not up_for_retry: the retry was skipped
    assert elapsed < 60, f"the failed run took {elapsed:.0f} s: it waited for a retry"
    expected = {"missing": f"{source} does not exist", "empty": "is empty: there is no header line",
                "wrong_header": "is not the Avazu header"}[broken]
    # The task log ends with the project's sentence as the task's failure, not a raw traceback.
    assert f"AirflowFailException: {source}" in task_log and expected in task_log
    failure = task_log[task_log.rindex("Task failed with exception"):task_log.index("AirflowFailException: ")]
    assert "FileNotFoundError" not in failure and failure.count("Traceback") == 1  # Airflow's own, ending at ours

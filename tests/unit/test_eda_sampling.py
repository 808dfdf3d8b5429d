"""Sampling in one pass: exact sizes, reproducibility, and a uniformity test that can fail."""

from __future__ import annotations

import json
import math
import random
from collections import Counter

import pytest

from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.reader import read_all
from include.eda.sampling import (
    DEFAULT_CONFIG,
    HourlyReservoirs,
    SamplingPlan,
    UniformReservoir,
    _size_label,
    SamplingConfigError,
    load_sampling_config,
)
from include.eda.survey import ensure_default_source, run_sampling, survey

ROWS = 20_000
PLAN = SamplingPlan(head_sizes=(10, 100, 1_000), uniform_size=500, per_hour_size=20, seed=3)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("sampling") / "src.csv.gz"
    truth = generate(
        GeneratorSpec(ROWS, seed=31, fault_rates={kind: 0.003 for kind in FaultKind}), path
    )
    return path, truth


@pytest.fixture(scope="module")
def surveyed(source, tmp_path_factory):
    out = tmp_path_factory.mktemp("sampling-out")
    return survey(str(source[0]), str(out), PLAN), out


def _sample(out, name):
    records, bad, _ = read_all(str(out / "samples" / name))
    assert bad == []  # samples are valid Avazu files
    return records


def test_sample_files_have_exact_sizes(surveyed, source):
    result, out = surveyed
    by_name = {s.name: s for s in result.samples}
    assert {n: s.rows for n, s in by_name.items()} == {
        "train_sample_10.csv": 10,
        "train_sample_100.csv": 100,
        "train_sample_1k.csv": 1_000,
        "train_uniform_500.csv": 500,
        "train_per_hour_20.csv": 20 * 240,
        "bad_rows_head.csv": len(source[1].bad_lines()),
    }
    for name in ("train_sample_1k.csv", "train_uniform_500.csv", "train_per_hour_20.csv"):
        assert len(_sample(out, name)) == by_name[name].rows


def test_head_samples_are_the_first_good_rows(surveyed, source):
    _, out = surveyed
    all_records, _, _ = read_all(str(source[0]))
    assert _sample(out, "train_sample_1k.csv") == all_records[:1_000]
    assert _sample(out, "train_sample_100.csv") == all_records[:100]


def test_uniform_and_hourly_samples_are_good_rows_in_file_order(surveyed, source):
    _, out = surveyed
    all_records, _, _ = read_all(str(source[0]))
    # Whole records as keys: the file has duplicate ids on purpose.
    position = {tuple(record.values()): i for i, record in enumerate(all_records)}
    for name in ("train_uniform_500.csv", "train_per_hour_20.csv"):
        sample = _sample(out, name)
        indexes = [position[tuple(r.values())] for r in sample]
        assert indexes == sorted(indexes)
    per_hour = Counter(r["hour"] for r in _sample(out, "train_per_hour_20.csv"))
    available = Counter(r["hour"] for r in all_records)
    assert per_hour == {hour: min(20, n) for hour, n in available.items()}


def test_bad_rows_head_lists_line_reason_and_raw_text(surveyed, source):
    _, out = surveyed
    text = (out / "samples" / "bad_rows_head.csv").read_text()
    assert text.splitlines()[0] == "line_number,reason,field,message,raw"
    first_bad = min(source[1].bad_lines())
    assert text.splitlines()[1].startswith(f"{first_bad},{source[1].bad_lines()[first_bad].value},")


def test_same_seed_same_samples_other_seed_other_samples(source, tmp_path):
    for folder, seed in (("a", 3), ("b", 3), ("c", 4)):
        survey(
            str(source[0]),
            str(tmp_path / folder),
            SamplingPlan(head_sizes=(5,), uniform_size=300, per_hour_size=5, seed=seed),
        )
    read = lambda folder, name: (tmp_path / folder / "samples" / name).read_bytes()  # noqa: E731
    for name in ("train_uniform_300.csv", "train_per_hour_5.csv"):
        assert read("a", name) == read("b", name)
        assert read("a", name) != read("c", name)


def test_compressed_samples(source, tmp_path):
    result = survey(
        str(source[0]),
        str(tmp_path),
        SamplingPlan(head_sizes=(50,), uniform_size=10, per_hour_size=1, compress=True),
    )
    names = sorted(s.name for s in result.samples)
    assert names == [
        "bad_rows_head.csv",
        "train_per_hour_1.csv.gz",
        "train_sample_50.csv.gz",
        "train_uniform_10.csv.gz",
    ]
    assert len(_sample(tmp_path, "train_sample_50.csv.gz")) == 50


def _algorithm_l(population: int, size: int, seed: int, chunk_sizes: random.Random) -> list[int]:
    reservoir = UniformReservoir(size, random.Random(seed))
    start = 0
    while start < population:
        stop = min(population, start + chunk_sizes.randint(1, 9))
        items = [str(i) for i in range(start, stop)]
        reservoir.offer(items, list(range(start, stop)))
        start = stop
    return [number for number, _ in reservoir.rows()]


def _off_by_one_reservoir(population: int, size: int, seed: int, _chunks) -> list[int]:
    # The classic bug: keep item i with probability size / i instead of size / (i + 1).
    rng = random.Random(seed)
    kept = list(range(size))
    for i in range(size, population):
        j = rng.randrange(i)
        if j < size:
            kept[j] = i
    return kept


def _inclusion_chi_square(sampler, population=60, size=6, trials=8_000) -> float:
    """Chi-square of how often each item was picked (expected: size/population of the trials)."""
    chunk_sizes = random.Random(99)
    counts = Counter()
    for trial in range(trials):
        counts.update(sampler(population, size, 1_000 + trial, chunk_sizes))
    p = size / population
    expected, variance = trials * p, trials * p * (1 - p)
    return sum((counts[i] - expected) ** 2 / variance for i in range(population))


def _chi_square_critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of a chi-square quantile (z = +-3.09: upper/lower 0.1%)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def test_reservoir_is_uniform_over_positions_and_chunk_boundaries():
    # Two-sided: too regular a spread (a sampler that rotates through items) fails as well.
    statistic = _inclusion_chi_square(_algorithm_l)
    assert _chi_square_critical(59, z=-3.09) < statistic < _chi_square_critical(59, z=3.09), (
        statistic
    )


def test_the_uniformity_test_catches_a_biased_sampler():
    # The same statistic must reject a sampler with the off-by-one bias, or the test above
    # proves nothing.
    assert _inclusion_chi_square(_off_by_one_reservoir) > _chi_square_critical(59)


def test_reservoir_result_does_not_depend_on_chunking():
    whole = _algorithm_l(10_000, 50, 5, random.Random(0))
    reservoir = UniformReservoir(50, random.Random(5))
    reservoir.offer([str(i) for i in range(10_000)], list(range(10_000)))
    assert whole == [n for n, _ in reservoir.rows()]


def test_reservoir_edges():
    empty = UniformReservoir(0, random.Random(1))
    empty.offer(["a", "b"], [1, 2])
    assert empty.rows() == [] and empty.seen == 2
    small = UniformReservoir(10, random.Random(1))
    small.offer(["a", "b", "c"], [1, 2, 3])
    assert small.rows() == [(1, "a"), (2, "b"), (3, "c")]


def test_hourly_reservoirs_keep_each_hour_apart():
    hourly = HourlyReservoirs(2, seed=1)
    hours = [1] * 5 + [2] * 1 + [3] * 10
    hourly.offer([f"r{i}" for i in range(16)], list(range(16)), hours)
    picked = Counter(hours[n] for n, _ in hourly.rows())
    assert picked == {1: 2, 2: 1, 3: 2}


@pytest.mark.parametrize(
    "values, message",
    [
        ({"head_sizes": [0]}, "head_sizes"),
        ({"head_sizes": [10, 10]}, "repeated"),
        ({"uniform_size": -1}, "uniform_size"),
        ({"seed": "x"}, "seed"),
        ({"sample_size": 5}, "sampling settings: unknown key .sample_size."),
    ],
)
def test_bad_plans_are_one_sentence(values, message):
    with pytest.raises(SamplingConfigError, match=message):
        SamplingPlan.from_mapping(values)


def test_config_file_loads_and_bad_config_is_one_sentence(tmp_path):
    config = load_sampling_config()
    assert SamplingPlan.from_mapping(config["plan"]).head_sizes == (1_000, 10_000, 50_000)
    (tmp_path / "c.yaml").write_text(json.dumps({"plan": {}}))  # JSON is YAML too
    with pytest.raises(SamplingConfigError, match="c.yaml: chunk_rows is missing"):
        load_sampling_config(tmp_path / "c.yaml")
    with pytest.raises(SamplingConfigError, match="sampling settings file .*missing.yaml does not exist"):
        load_sampling_config(tmp_path / "missing.yaml")
    (tmp_path / "typo.yaml").write_text(DEFAULT_CONFIG.read_text().replace("top_k:", "topk:"))
    with pytest.raises(SamplingConfigError, match="unknown key 'topk' \\(did you mean 'top_k'\\?\\)"):
        load_sampling_config(tmp_path / "typo.yaml")
    assert DEFAULT_CONFIG.is_file()


def test_size_labels_follow_the_seed_file_names():
    assert [_size_label(n) for n in (1_000, 10_000, 50_000, 2_000_000, 1_500)] == [
        "1k",
        "10k",
        "50k",
        "2m",
        "1500",
    ]


def test_missing_default_source_is_generated_and_said(tmp_path):
    config = load_sampling_config()
    config["default_source_uri"] = str(tmp_path / "default.csv.gz")
    config["generate_if_missing"] = {
        "rows": 500,
        "start_hour": 14102100,
        "hours": 3,
        "seed": 1,
        "fault_rate": 0.01,
    }
    message = ensure_default_source(str(tmp_path / "default.csv.gz"), config)
    assert "was missing: generated 500 rows" in message
    assert ensure_default_source(str(tmp_path / "default.csv.gz"), config) is None
    assert ensure_default_source(str(tmp_path / "other.csv.gz"), config) is None


def test_run_sampling_takes_dag_params(source, tmp_path):
    summary = run_sampling(
        {
            "source_uri": str(source[0]),
            "output_uri": str(tmp_path),
            "head_sizes": [3],
            "reservoir_size": 7,
            "per_hour_size": 1,
            "seed": 1,
        }
    )
    assert summary["rows_read"] == ROWS == summary["good_rows"] + summary["bad_rows"]
    assert {s["name"]: s["rows"] for s in summary["samples"]}["train_uniform_7.csv"] == 7
    assert summary["generated_source"] is None
    json.dumps(summary)  # XCom-ready

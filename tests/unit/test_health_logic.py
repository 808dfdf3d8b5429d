"""pipeline_health's pure logic: the lag statuses over a window, the settings' checks, the report and metrics."""

from __future__ import annotations

import pytest

from include.health.config import HealthConfigError, LagLimits, load_health_config, parse_health_config
from include.health.lag import LagSample, consumption_rate, judge, window_after
from include.health.metrics import build_registry
from include.health.outcome import CheckOutcome, Metric
from include.health.report import MIN_LAG_WINDOW_S, lag_time_window, plot_lag, render_markdown, summary_table
from include.health.state import HealthState
from include.health.lag import PartitionKey

LIMITS = LagLimits(max_records=1000, max_seconds=60, stall_after_s=10, window_samples=5, breach_samples=2)


def _sample(at, committed, end, *, start=0, lag_s=0.0, state="STABLE", members=1):
    return LagSample(at=at, committed=committed, end=end, start=start, lag_seconds=lag_s, state=state, members=members)


def test_a_caught_up_group_is_ok_however_long_nothing_moves_even_without_members():
    window = [_sample(t, 100, 100, state="EMPTY", members=0) for t in range(0, 50, 10)]
    assert judge(window, LIMITS).status == "OK" and not judge(window, LIMITS).failing


def test_still_offsets_with_records_waiting_stall_with_members_and_stop_without():
    stalled = [_sample(0, 10, 20), _sample(10, 10, 25)]
    verdict = judge(stalled, LIMITS)
    assert (verdict.status, verdict.breach, verdict.failing) == ("STALL", True, False)
    stalled.append(_sample(20, 10, 30))
    assert judge(stalled, LIMITS).failing
    stopped = [_sample(0, 10, 20, state="EMPTY", members=0), _sample(10, 10, 20, state="EMPTY", members=0),
               _sample(20, 10, 20, state="EMPTY", members=0)]
    verdict = judge(stopped, LIMITS)
    assert verdict.status == "STOP" and verdict.failing and "no member (state EMPTY)" in verdict.reason


def test_a_standstill_shorter_than_stall_after_s_is_a_consumer_between_its_batches_not_a_stall():
    window = [_sample(0, 10, 20), _sample(4, 10, 25), _sample(8, 10, 30)]
    verdict = judge(window, LIMITS)
    assert (verdict.status, verdict.breach) == ("OK", False)
    assert "committed offset still for 8 s (a STALL or STOP after 10 s)" in verdict.reason
    assert consumption_rate(window) is None  # standing still is not slow consuming


def test_one_sample_over_a_limit_is_a_breach_but_not_yet_a_failure():
    window = [_sample(0, 0, 5000, lag_s=10)]
    verdict = judge(window, LIMITS)
    assert verdict.breach and not verdict.failing and "5,000 records behind (limit 1,000)" in verdict.reason


def test_lag_growing_while_committing_is_a_warning_and_a_rewind_is_reported():
    growing = [_sample(0, 10, 20), _sample(10, 15, 30), _sample(20, 20, 45)]
    assert judge(growing, LIMITS).status == "WARN" and not judge(growing, LIMITS).failing
    rewound = [_sample(0, 50, 60), _sample(10, 5, 60)]
    assert judge(rewound, LIMITS).status == "REWIND" and not judge(rewound, LIMITS).breach


def test_a_committed_offset_below_the_log_start_is_data_lost_at_once():
    verdict = judge([_sample(0, 3, 50, start=10)], LIMITS)
    assert verdict.status == "LOST" and verdict.failing and "7 records were deleted by retention" in verdict.reason


def test_the_window_keeps_the_newest_samples_and_drops_old_ones():
    window = []
    for t in range(10):
        window = window_after(window, _sample(t, t, 20), LIMITS)
    assert [s.at for s in window] == [5, 6, 7, 8, 9]
    aged = window_after(window, _sample(10 + LIMITS.max_sample_age_s + 1, 10, 20), LIMITS)
    assert len(aged) == 1
    assert consumption_rate([_sample(0, 10, 50), _sample(10, 60, 80)]) == 5.0
    assert consumption_rate([_sample(0, 10, 10), _sample(10, 60, 80)]) is None  # nothing waited


def test_the_lag_window_survives_a_round_trip_through_its_state_file_format():
    key = PartitionKey("stream-analytics", "web-events", 2)
    state = HealthState({key: [_sample(1.5, 1, 2)]})
    assert HealthState.from_json(state.to_json()).windows == state.windows
    assert HealthState.from_json('{"format": 0, "windows": {}}').windows == {}


def test_the_settings_file_is_valid_and_mistakes_are_one_sentence():
    config = load_health_config()
    assert config.lag.breach_samples <= config.lag.window_samples and 0 < config.dlq.max_ratio < 1
    with pytest.raises(HealthConfigError, match=r"health.yaml: lag: unknown key 'max_record' \(did you mean 'max_records'\?\)"):
        parse_health_config({"lag": {"max_record": 5}}, "health.yaml")
    with pytest.raises(HealthConfigError, match=r"dlq.max_ratio must be a number from 0 to 1, not 5"):
        parse_health_config({"dlq": {"max_ratio": 5}}, "health.yaml")
    with pytest.raises(HealthConfigError, match=r"lag.breach_samples must be a whole number 1..4"):
        parse_health_config({"lag": {"window_samples": 4, "breach_samples": 9}}, "health.yaml")


def test_the_report_and_the_metrics_say_which_check_failed():
    outcomes = [CheckOutcome("dlq_ratio", False, "hour 1 is over", ["hour"], [{"hour": 1}],
                             [Metric("dlq_ratio_worst", 0.2)]),
                CheckOutcome("brokers", True, "1 broker(s)", metrics=[Metric("offline_partitions", 0.0)])]
    text = render_markdown(outcomes, "Pipeline health", {}, ["reconciliation"])
    assert "**2 of 3 checks failed**: dlq_ratio, reconciliation" in text
    table = summary_table(outcomes, ["reconciliation"])
    assert "dlq_ratio       FAIL" in table and "reconciliation  ERROR" in table
    registry = build_registry(outcomes, ["reconciliation"], now=100.0)
    value = registry.get_sample_value
    assert value("avazu_pipeline_check_ok", {"check": "dlq_ratio"}) == 0
    assert value("avazu_pipeline_check_ok", {"check": "brokers"}) == 1
    assert value("avazu_pipeline_check_ok", {"check": "reconciliation"}) == 0
    assert value("avazu_pipeline_dlq_ratio_worst") == 0.2
    assert value("avazu_pipeline_last_run_timestamp_seconds") == 100.0


def test_the_lag_plot_spans_ten_minutes_at_least_so_one_sample_is_not_drawn_on_an_axis_of_years():
    start, end = lag_time_window([1_800_000_000.0])
    assert (end - start).total_seconds() == MIN_LAG_WINDOW_S == 600
    assert start.timestamp() == 1_800_000_000.0 - 300
    # A longer history is drawn as it is.
    start, end = lag_time_window([1_800_000_000.0, 1_800_007_200.0, 1_800_003_600.0])
    assert (start.timestamp(), end.timestamp()) == (1_800_000_000.0, 1_800_007_200.0)
    lag = {"g|t|0": [{"at": 1_800_000_000.0, "lag": 3, "lag_seconds": 1.5}]}
    assert plot_lag([CheckOutcome("consumer_lag", True, "ok", series={"lag": lag})]).startswith(b"\x89PNG")


def _throughput_inputs(tmp_path, runs):
    from include.health.checks import HealthInputs
    from include.ingest.config import load_ingest_config

    config = load_health_config().replace(state_uri=str(tmp_path / "state.json"))
    return HealthInputs(config=config, kafka_config={}, registry=None, ingest=load_ingest_config(), catalog=None,
                        runs=runs)


def _run(hour, rows, per_s):
    return {"hour": hour, "action": "ingest", "rows_read": rows, "rows_per_s": per_s, "duration_s": rows / per_s}


def test_a_small_slow_ingestion_run_is_not_judged_so_a_busy_machine_does_not_fail_the_demo(tmp_path):
    from include.health.throughput import NOT_JUDGED, check_throughput

    # The demo's hour beside a CPU burner: 44,572 rows at 18,665 rows/s, mostly start-up.
    outcome = check_throughput(_throughput_inputs(tmp_path, [_run(14102100, 44_572, 18_665.0)]))
    assert outcome.ok
    assert [r["verdict"] for r in outcome.rows] == [NOT_JUDGED]
    assert "1 run(s) under 100,000 rows not judged" in outcome.summary
    assert not outcome.metrics  # an untimed run is no rate to plot or alert on


def test_a_large_slow_ingestion_run_still_fails_the_throughput_check(tmp_path):
    from include.health.throughput import check_throughput

    runs = [_run(14102101, 168_000, 9_500.0), _run(14102100, 44_572, 18_665.0)]
    outcome = check_throughput(_throughput_inputs(tmp_path, runs))
    assert not outcome.ok
    assert outcome.summary.startswith("1 run(s) or processor(s) are too slow: ingestion of hour 14102101 ran at "
                                      "9,500 rows/s (limit 20,000) over 168,000 rows")
    assert [r["verdict"] for r in outcome.rows] == ["SLOW", "not judged"]
    fast = check_throughput(_throughput_inputs(tmp_path, [_run(14102101, 168_000, 250_000.0)]))
    assert fast.ok and "newest ingestion 250,000 rows/s" in fast.summary

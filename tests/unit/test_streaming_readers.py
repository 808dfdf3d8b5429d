"""The end-to-end checks of the pipelines' final consumers, without a broker."""

from __future__ import annotations

import pytest

from include.streaming.readers import PipelineMismatch, check_analytics_run, check_words_run

SIMULATIONS = [{"good": 90, "bad": 10}, {"good": 45, "bad": 5}]
PROCESSED = {"records_in": 150, "dead_lettered": 15, "stop_reason": "idle_timeout"}
REPORT = {"records": 135, "duplicates": 0, "undecodable": 0}


def test_a_complete_run_passes():
    assert check_analytics_run(REPORT, SIMULATIONS, PROCESSED)["expected_analytics"] == 135


@pytest.mark.parametrize("report, processed, message", [
    ({**REPORT, "records": 134}, PROCESSED, "saw 134 analytics events, 135"),
    ({**REPORT, "records": 136, "duplicates": 1}, PROCESSED, "1 duplicate"),
    (REPORT, {**PROCESSED, "records_in": 100, "stop_reason": "max_runtime"}, "stopped by max_runtime"),
    (REPORT, {**PROCESSED, "dead_lettered": 14}, "14 events went to the DLQ, 15"),
])
def test_a_difference_fails_naming_it(report, processed, message):
    with pytest.raises(PipelineMismatch, match=message):
        check_analytics_run(report, SIMULATIONS, processed)


def test_words_check():
    report = {"by_partition": {"0": ["HELLO", "KAFKA"], "2": ["WORLD"]}}
    assert check_words_run(report, ["world", "hello", "kafka"]) == {"words_sent": 3, "words_seen": 3}
    with pytest.raises(PipelineMismatch):
        check_words_run(report, ["hello", "kafka", "world", "world"])

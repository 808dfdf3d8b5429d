"""ctr_reconciliation's comparison (include/health/ctr.py) without a database: which hours are judged, what
differs, and the one sentence a failure is."""

from __future__ import annotations

from include.health.ctr import Difference, StoreSnapshot, _outcome, compare_hour, judge

H0, H1, H2 = 14102100, 14102101, 14102102


def _hour(impressions: int = 100, clicks: int = 17, **values: tuple[int, int]) -> dict:
    """One hour's rows: 'all' and each given 'dimension=value' -> (impressions, clicks)."""
    rows = {("all", ""): (impressions, clicks)}
    for key, figures in values.items():
        dimension, value = key.split("__")
        rows[(dimension, value)] = figures
    return rows


def test_equal_hours_have_no_difference():
    hour = _hour(site_id__1fbe01fe=(60, 10), site_id__85f751fd=(40, 7))
    assert compare_hour(H0, hour, dict(hour)) == []


def test_differences_list_all_first_then_dimensions_in_order_with_a_missing_side_as_none():
    stream = _hour(101, 17, banner_pos__0=(101, 17), site_id__1fbe01fe=(61, 10))
    batch = _hour(100, 17, banner_pos__0=(100, 17), site_id__1fbe01fe=(60, 10), app_id__ecad2386=(5, 1))
    found = compare_hour(H0, stream, batch)
    assert [(d.dimension, d.value) for d in found] == [
        ("all", ""), ("site_id", "1fbe01fe"), ("app_id", "ecad2386"), ("banner_pos", "0")]
    assert found[2].stream is None and (found[2].impressions, found[2].clicks) == (-5, -1)
    assert (found[1].impressions, found[1].clicks) == (1, 0)


def test_a_difference_reads_as_one_clause_naming_hour_dimension_value_and_both_sides():
    difference = Difference(H0, "site_id", "1fbe01fe", (5124, 880), (5123, 881))
    assert difference.describe() == (
        "hour 14102100 site_id=1fbe01fe: the stream counts 1 impression more and 1 click fewer than the batch "
        "(impressions / clicks 5,124 / 880 against 5,123 / 881)")
    missing = Difference(H0, "device_type", "", None, (3, 0))
    assert missing.describe().startswith("hour 14102100 device_type=(empty): the stream counts 3 impressions fewer "
                                         "and 0 clicks more")
    assert "against 3 / 0" in missing.describe() and "no row against" in missing.describe()


def test_hours_after_the_newest_closed_one_are_open_and_not_judged():
    snapshot = StoreSnapshot([H0, H1, H2], H1, {H0: _hour(), H1: _hour(), H2: _hour()},
                             {H0: _hour(), H1: _hour(99, 17)})
    verdicts = judge(snapshot)
    assert [(v.hour, v.verdict) for v in verdicts] == [(H0, "ok"), (H1, "DIFFERS"), (H2, "open")]
    assert verdicts[2].stream_impressions is None and verdicts[2].row()["rows_differing"] == "-"
    assert [v.verdict for v in judge(StoreSnapshot([H0], None, {H0: _hour()}, {}))] == ["open"]


def test_a_closed_hour_the_stream_never_wrote_differs_in_every_row():
    verdicts = judge(StoreSnapshot([H0, H1], H1, {H0: _hour(site_id__a=(100, 17)), H1: _hour()}, {H1: _hour()}))
    assert verdicts[0].verdict == "DIFFERS" and len(verdicts[0].differences) == 2
    assert verdicts[0].stream_impressions == 0


def test_a_mismatch_fails_in_one_sentence_naming_the_hour_dimension_value_and_difference():
    snapshot = StoreSnapshot([H0, H1, H2], H1, {H0: _hour(site_id__1fbe01fe=(60, 10)), H1: _hour(), H2: _hour()},
                             {H0: _hour(site_id__1fbe01fe=(61, 10)), H1: _hour()})
    outcome = _outcome(judge(snapshot), snapshot, 24, "127.0.0.1:5432/ctr", [])
    assert not outcome.ok
    assert outcome.summary == (
        "1 of 2 closed hour(s) differ between the stream (ctr_hourly) and the batch (ctr_batch_hourly): hour "
        "14102100 site_id=1fbe01fe: the stream counts 1 impression more and 0 clicks more than the batch "
        "(impressions / clicks 61 / 10 against 60 / 10); 1 hour(s) the stream has not closed yet are not judged "
        "(14102102; the newest hour it has closed is 14102101); look at the CTR job (its task log, ctr_late) and "
        "at the hour's ctr_batch run")
    assert "\n" not in outcome.summary
    metrics = {(m.name, tuple(m.labels.items())): m.value for m in outcome.metrics}
    assert metrics[("ctr_reconciliation_rows_differing", ())] == 1
    assert metrics[("ctr_reconciliation_hours", (("state", "judged"),))] == 2
    assert metrics[("ctr_reconciliation_hours", (("state", "open"),))] == 1
    assert [r["verdict"] for r in outcome.rows] == ["DIFFERS", "ok", "open"]


def test_late_records_and_repairs_the_stream_has_not_seen_are_named_beside_the_difference():
    snapshot = StoreSnapshot([H0], H0, {H0: _hour(100, 17)}, {H0: _hour(88, 15)}, late={H0: 12}, repaired={H0: 12})
    (verdict,) = judge(snapshot)
    problem = verdict.problem()
    assert problem.startswith("hour 14102100 all: the stream counts 12 impressions fewer and 2 clicks fewer")
    assert "(12 of its records reached the job after the hour closed: ctr_late)" in problem
    assert "the batch counts 12 dead letters the DLQ reprocessing repairs: has dlq_reprocessing run on them?" in problem


def test_many_differences_in_an_hour_are_counted_not_listed():
    batch = _hour(**{f"site_id__{i:08x}": (10, 1) for i in range(10)})
    stream = _hour(**{f"site_id__{i:08x}": (10, 2) for i in range(10)})
    (verdict,) = judge(StoreSnapshot([H0], H0, {H0: batch}, {H0: stream}))
    assert verdict.problem().endswith("and 9 more row(s) of the hour differ")


def test_agreement_and_nothing_to_judge_pass_with_what_was_compared():
    snapshot = StoreSnapshot([H0, H1], H0, {H0: _hour(site_id__a=(100, 17)), H1: _hour()},
                             {H0: _hour(site_id__a=(100, 17))})
    outcome = _outcome(judge(snapshot), snapshot, 24, "db", [])
    assert outcome.ok and outcome.summary.startswith(
        "1 closed hour(s) agree exactly: stream = batch in all 2 rows of 5 dimensions (100 impressions); "
        "1 hour(s) the stream has not closed yet are not judged (14102101;")
    empty = StoreSnapshot([], None, {}, {})
    assert _outcome(judge(empty), empty, 6, "db", []).summary.startswith("no hour was batched in the last 6 h")
    unclosed = StoreSnapshot([H0], None, {H0: _hour()}, {})
    outcome = _outcome(judge(unclosed), unclosed, 24, "db", [])
    assert outcome.ok and "the stream has closed none of the 1 hour(s)" in outcome.summary
    assert "it has closed no hour yet" in outcome.summary

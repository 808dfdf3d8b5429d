"""The DLQ reprocessing settings: the shipped file loads, every mistake is one sentence, backoff is bounded."""

from __future__ import annotations

import random

import pytest
import yaml

from include.dlq.config import DEFAULT_CONFIG_PATH, Action, DlqConfigError, load_dlq_config, parse_dlq_config


def _document(**changes):
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for key, value in changes.items():
        document[key] = value
    return document


def test_the_shipped_settings_declare_both_dlqs():
    config = load_dlq_config()
    assert config.names() == ["ad_events_error", "analytics-dlq"]
    ingest = config.dlq("ad_events_error")
    assert ingest.retry_topics == ("ad_events_retry", "ad_events_retry_2", "ad_events_retry_3")
    assert ingest.rule_for("BAD_ENCODING", "ingest").action is Action.REPAIR
    assert ingest.rule_for("NO_SUCH_REASON", "ingest") is None  # parked, never looped
    assert all(rule.action is Action.PARK for rule in config.dlq("analytics-dlq").rules)


def test_each_attempt_has_its_own_retry_topic_and_the_last_takes_the_rest():
    spec = load_dlq_config().dlq("ad_events_error")
    assert [spec.retry_topic(n) for n in (1, 2, 3, 4, 9)] == [
        "ad_events_retry", "ad_events_retry_2", "ad_events_retry_3", "ad_events_retry_3", "ad_events_retry_3"]


def test_backoff_grows_by_the_multiplier_up_to_the_cap_within_the_jitter():
    policy = load_dlq_config().retry
    rng = random.Random(1)
    for attempt in range(1, 8):
        expected = min(policy.cap_s, policy.base_s * policy.multiplier ** (attempt - 1))
        delay = policy.delay_s(attempt, rng)
        assert expected * (1 - policy.jitter) <= delay <= expected * (1 + policy.jitter)


@pytest.mark.parametrize(("changes", "message"), [
    ({"retries": {}}, "unknown key 'retries' \\(did you mean 'retry'\\?\\)"),
    ({"retry": {"max_attempts": 0}}, "retry.max_attempts must be a whole number 1..100"),
    ({"retry": {"jitter": 2}}, "retry.jitter must be a number from 0 to 1"),
    ({"dlqs": []}, "dlqs must be a non-empty list"),
    ({"dlqs": [{"name": "x", "topic": "t", "format": "csv", "parked_topic": "p"}]}, "format must be one of"),
    ({"dlqs": [{"name": "x", "topic": "t", "format": "headers", "parked_topic": "p",
                "rules": [{"reason": "R", "action": "repair", "repairs": ["strip_whitespace"]}]}]},
     "only Avazu rows \\(format envelope\\) can be repaired"),
    ({"dlqs": [{"name": "x", "topic": "t", "format": "envelope", "parked_topic": "p", "repaired_topic": "r",
                "rules": [{"reason": "R", "action": "repair", "repairs": ["guess"]}]}]}, "repairs must be one of"),
    ({"dlqs": [{"name": "x", "topic": "t", "format": "envelope", "parked_topic": "p",
                "rules": [{"reason": "R", "action": "retry"}]}]}, "a retry rule needs retry_topics"),
    ({"dlqs": [{"name": "x", "topic": "t", "format": "envelope", "parked_topic": "t"}]}, "must all differ"),
])
def test_a_wrong_setting_is_one_sentence_naming_the_key(changes, message):
    with pytest.raises(DlqConfigError, match=message):
        parse_dlq_config(_document(**changes), "dlq.yaml")


def test_an_unknown_dlq_name_says_which_are_declared():
    with pytest.raises(DlqConfigError, match="declares no DLQ named 'nope'; it declares ad_events_error, analytics-dlq"):
        load_dlq_config().dlq("nope")

"""The DLQ reprocessing settings: the shipped file loads, every mistake is one sentence, backoff is bounded."""

from __future__ import annotations

import random

import pytest
import yaml

from include.dlq.config import DEFAULT_CONFIG_PATH, Action, DlqConfigError, load_dlq_config, parse_dlq_config
from include.kafka_admin.catalog import declared_catalog


def _document(**changes):
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    for key, value in changes.items():
        document[key] = value
    return document


def test_the_shipped_settings_declare_both_dlqs_on_the_declared_topics_of_their_roles():
    config, topic = load_dlq_config(), declared_catalog().topic_for
    # A DLQ is called by its topic's name (its group id too: offsets survive this change).
    assert config.names() == [topic("dlq"), topic("analytics_dlq")]
    ingest = config.dlq(topic("dlq"))
    assert ingest.group_id == f"dlq-reprocessing.{topic('dlq')}"
    assert (ingest.repaired_topic, ingest.parked_topic) == (topic("raw"), topic("dlq_parked"))
    assert ingest.retry_topics == (topic("dlq_retry_1"), topic("dlq_retry_2"), topic("dlq_retry_3"))
    assert ingest.rule_for("BAD_ENCODING", "ingest").action is Action.REPAIR
    assert ingest.rule_for("NO_SUCH_REASON", "ingest") is None  # parked, never looped
    analytics = config.dlq(topic("analytics_dlq"))
    assert analytics.parked_topic == topic("analytics_parked")
    assert all(rule.action is Action.PARK for rule in analytics.rules)


def test_each_attempt_has_its_own_retry_topic_and_the_last_takes_the_rest():
    spec = load_dlq_config().dlq(declared_catalog().topic_for("dlq"))
    retry = [declared_catalog().topic_for(f"dlq_retry_{n}") for n in (1, 2, 3)]
    assert [spec.retry_topic(n) for n in (1, 2, 3, 4, 9)] == [*retry, retry[2], retry[2]]


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
    ({"dlqs": [{"name": "x", "topic": "dlq", "format": "csv", "parked_topic": "dlq_parked"}]}, "format must be one of"),
    ({"dlqs": [{"name": "x", "topic": "dlq", "format": "headers", "parked_topic": "dlq_parked",
                "rules": [{"reason": "R", "action": "repair", "repairs": ["strip_whitespace"]}]}]},
     "only Avazu rows \\(format envelope\\) can be repaired"),
    ({"dlqs": [{"name": "x", "topic": "dlq", "format": "envelope", "parked_topic": "dlq_parked", "repaired_topic": "raw",
                "rules": [{"reason": "R", "action": "repair", "repairs": ["guess"]}]}]}, "repairs must be one of"),
    ({"dlqs": [{"name": "x", "topic": "dlq", "format": "envelope", "parked_topic": "dlq_parked",
                "rules": [{"reason": "R", "action": "retry"}]}]}, "a retry rule needs retry_topics"),
    ({"dlqs": [{"name": "x", "topic": "dlq", "format": "envelope", "parked_topic": "dlq"}]}, "must all differ"),
])
def test_a_wrong_setting_is_one_sentence_naming_the_key(changes, message):
    with pytest.raises(DlqConfigError, match=message):
        parse_dlq_config(_document(**changes), "dlq.yaml")


@pytest.mark.parametrize(("dlq", "message"), [
    ({"topic": "dead_letters", "format": "headers", "parked_topic": "dlq_parked"},
     "dlq.yaml: dlqs #1: topic: .*topics.yaml declares no topic with role 'dead_letters'; roles: raw, dlq, "),
    ({"topic": "dlq", "format": "headers", "parked_topic": "dlq_parkd"},
     "dlq.yaml: dlq .*: parked_topic: .* role 'dlq_parkd' \\(did you mean 'dlq_parked'\\?\\)"),
])
def test_a_topic_that_is_no_declared_role_is_one_sentence(dlq, message):
    with pytest.raises(DlqConfigError, match=message):
        parse_dlq_config(_document(dlqs=[dlq]), "dlq.yaml")


def test_a_topic_name_where_a_role_belongs_says_which_role_it_is():
    name = declared_catalog().topic_for("dlq")
    with pytest.raises(DlqConfigError, match=f"{name!r} is the name of role 'dlq': name topics by role"):
        parse_dlq_config(_document(dlqs=[{"topic": name, "format": "headers", "parked_topic": "dlq_parked"}]), "dlq.yaml")


def test_an_unknown_dlq_name_says_which_are_declared():
    names = ", ".join(load_dlq_config().names())
    with pytest.raises(DlqConfigError, match=f"declares no DLQ named 'nope'; it declares {names}"):
        load_dlq_config().dlq("nope")

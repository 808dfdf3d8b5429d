"""The alert rules and the Prometheus configs are valid for Prometheus's own checker, and the rules'
unit tests (devstack/prometheus/alerts_test.yml) pass: each alert fires on a broken pipeline or
broker and stays quiet on a healthy one.

promtool comes with Debian's prometheus package, which the local stack needs anyway.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from devstack.stack import Prometheus, StackSettings

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "devstack" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts_test.yml"
COMPOSE_CONFIG = PROMETHEUS_DIR / "prometheus.compose.yml"
GROUP = "avazu-pipeline"


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed (not on PATH); install Debian's prometheus package "
                    "(apt-get install prometheus), which brings it", pytrace=False)
    return path


def _run(promtool: str, *args: str, cwd: Path = ROOT) -> str:
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def _rules() -> dict[str, dict]:
    (group,) = yaml.safe_load(ALERTS.read_text())["groups"]
    assert group["name"] == GROUP
    return {rule["alert"]: rule for rule in group["rules"]}


def test_alert_rules_pass_promtools_check(promtool):
    output = _run(promtool, "check", "rules", str(ALERTS))
    assert f"SUCCESS: {len(_rules())} rules found" in output


def test_every_alert_says_how_bad_what_is_wrong_and_where_to_look():
    rules = _rules()
    assert {"AvazuConsumerLagGrowing", "AvazuDlqRatioHigh", "AvazuPipelineHealthStale",
            "AvazuCheckFailing", "KafkaUnderReplicatedPartitions", "KafkaOfflinePartitions",
            "KafkaNoActiveController"} <= rules.keys()
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name


def test_alert_unit_tests_pass(promtool):
    # Every alert is proved by at least one case that fires and stays quiet on healthy input.
    cases = yaml.safe_load(ALERTS_TEST.read_text())["tests"]
    checks = [check for case in cases for check in case["alert_rule_test"]]
    for name in _rules():
        mine = [check for check in checks if check["alertname"] == name]
        assert any(check["exp_alerts"] for check in mine), f"{name} is never shown firing"
        assert any(not check["exp_alerts"] for check in mine), f"{name} is never shown quiet"
    output = _run(promtool, "test", "rules", ALERTS_TEST.name, cwd=PROMETHEUS_DIR)
    assert "SUCCESS" in output


def test_the_local_config_loads_the_rules_and_scrapes_where_the_stack_listens(promtool, tmp_path):
    settings = StackSettings(home=tmp_path / "devstack", kafka_metrics_port=17071,
                             pushgateway_port=19091, prometheus_port=19090)
    written = Prometheus(settings).write_config(tmp_path / "prometheus.yml")
    output = _run(promtool, "check", "config", str(written))
    assert "SUCCESS: 1 rule files found" in output
    config = yaml.safe_load(written.read_text())
    assert config["rule_files"] == [str(ALERTS)]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {name: job["static_configs"][0]["targets"] for name, job in jobs.items()}
    assert targets == {"kafka": ["127.0.0.1:17071"], "pushgateway": ["127.0.0.1:19091"],
                       "prometheus": ["127.0.0.1:19090"]}
    # Pushed series keep their own job label (job="pipeline_health"), which the alerts expect.
    assert jobs["pushgateway"]["honor_labels"] is True
    assert config["global"]["scrape_interval"] == "5s"


def test_the_compose_config_has_the_same_jobs_and_rules(promtool):
    _run(promtool, "check", "config", "--syntax-only", str(COMPOSE_CONFIG))
    compose = yaml.safe_load(COMPOSE_CONFIG.read_text())
    local = yaml.safe_load(Prometheus.config_template.read_text())
    assert ({job["job_name"] for job in compose["scrape_configs"]}
            == {job["job_name"] for job in local["scrape_configs"]})
    pushgateway = [job for job in compose["scrape_configs"] if job["job_name"] == "pushgateway"]
    assert pushgateway[0]["honor_labels"] is True
    assert [Path(path).name for path in compose["rule_files"]] == [ALERTS.name]

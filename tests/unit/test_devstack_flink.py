"""devstack.flink without a cluster: what the CTR job is handed for its sinks and its sources, and
what flink/ctr_job.py makes of it."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from devstack.flink import CONNECTOR_KAFKA_PACKAGE, flink_kafka_properties, job_environment, main
from devstack.stack import PROJECT_ROOT, StackError
from include.kafka.java_client import UnsupportedClientSetting

SCRAM = {"bootstrap.servers": "127.0.0.1:9092", "security.protocol": "SASL_SSL", "sasl.mechanisms": "SCRAM-SHA-512",
         "sasl.username": "pipeline", "sasl.password": "kafka-s3cret", "ssl.ca.location": "/stack/ca.pem"}


@pytest.fixture
def ctr_job(monkeypatch):
    # The job's module imports no PyFlink at its top, so the project's interpreter can read it.
    spec = importlib.util.spec_from_file_location("ctr_job", PROJECT_ROOT / "flink" / "ctr_job.py")
    job = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ctr_job", job)
    spec.loader.exec_module(job)
    return job


def test_the_job_gets_a_jdbc_url_without_the_password_and_the_password_apart():
    env = job_environment("postgresql://ctr:s%40cret@127.0.0.1:5432/ctr")
    assert env == {"CTR_JDBC_URL": "jdbc:postgresql://127.0.0.1:5432/ctr", "CTR_JDBC_USER": "ctr",
                   "CTR_JDBC_PASSWORD": "s@cret", "CTR_KAFKA_PROPERTIES": "{}", "CTR_KAFKA_SECRET_PROPERTIES": "{}"}


def test_a_url_that_is_not_postgresql_is_refused_without_echoing_it():
    with pytest.raises(StackError, match="is not a postgresql://") as error:
        job_environment("mysql://ctr:topsecret@127.0.0.1/ctr")
    assert "topsecret" not in str(error.value)


def test_the_kafka_sign_in_is_split_so_only_variables_flink_masks_hold_a_secret():
    properties = flink_kafka_properties(SCRAM)
    env = job_environment("postgresql://ctr:pg-s3cret@127.0.0.1:5432/ctr", properties)
    # Flink's client masks an environment variable whose lower-cased name contains "password" or "secret".
    masked = {name for name in env if "password" in name.lower() or "secret" in name.lower()}
    for secret in ("kafka-s3cret", "pg-s3cret"):
        assert all(secret not in value for name, value in env.items() if name not in masked), secret
    assert json.loads(env["CTR_KAFKA_PROPERTIES"]) == {
        "security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
        "ssl.truststore.type": "PEM", "ssl.truststore.location": "/stack/ca.pem"}
    # flink-sql-connector-kafka relocates the Kafka client: its login module has the shaded name.
    assert json.loads(env["CTR_KAFKA_SECRET_PROPERTIES"]) == {"sasl.jaas.config": (
        f"{CONNECTOR_KAFKA_PACKAGE}.common.security.scram.ScramLoginModule required "
        'username="pipeline" password="kafka-s3cret";')}


def test_the_jobs_sources_take_the_properties_as_connector_options(ctr_job, monkeypatch):
    env = job_environment("postgresql://ctr:pg@127.0.0.1:5432/ctr", flink_kafka_properties(SCRAM))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    properties = ctr_job.kafka_properties_from_environment()
    args = ctr_job.parse_args(["--topic", "raw", "--bootstrap-servers", "127.0.0.1:9092",
                               "--registry-url", "http://registry"])
    ddl = ctr_job.source_ddl("events", args, "hourly", "t AS t", "t TIMESTAMP(3)", properties)
    assert "'properties.security.protocol' = 'SASL_SSL'" in ddl
    assert "'properties.sasl.mechanism' = 'SCRAM-SHA-512'" in ddl
    assert "'properties.ssl.truststore.location' = '/stack/ca.pem'" in ddl
    assert f"'properties.sasl.jaas.config' = '{CONNECTOR_KAFKA_PACKAGE}.common.security.scram" in ddl
    assert "'properties.group.id' = 'ctr-flink.hourly'" in ddl
    # Every statement of the job: both sources sign in.
    target = ctr_job.JdbcTarget("jdbc:postgresql://h/ctr", "ctr", "pg")
    ddl, _ = ctr_job.statements(args, target, properties)
    assert sum("'properties.sasl.jaas.config'" in statement for statement in ddl) == 2


def test_without_kafka_variables_the_sources_sign_in_as_no_one(ctr_job, monkeypatch):
    for name in ctr_job.KAFKA_ENV:
        monkeypatch.delenv(name, raising=False)
    assert ctr_job.kafka_properties_from_environment() == {}


@pytest.mark.parametrize("value, message", [
    ('{"sasl.jaas.config": ', "CTR_KAFKA_SECRET_PROPERTIES is not a JSON object of Kafka client properties"),
    ('["x"]', "CTR_KAFKA_SECRET_PROPERTIES is not a JSON object of Kafka client properties"),
    ('{"group.id": "other", "isolation.level": "read_uncommitted"}',
     "set group.id, isolation.level, which the job sets from its own arguments"),
])
def test_bad_kafka_variables_stop_the_job_in_one_sentence(ctr_job, monkeypatch, value, message):
    monkeypatch.setenv("CTR_KAFKA_SECRET_PROPERTIES", value)
    with pytest.raises(SystemExit, match=message) as stopped:
        ctr_job.kafka_properties_from_environment()
    assert "other" not in str(stopped.value)


def test_an_untranslatable_connection_setting_is_refused_naming_it():
    with pytest.raises(UnsupportedClientSetting, match="ssl.key.location"):
        flink_kafka_properties({**SCRAM, "ssl.key.location": "/key.pem"})


def test_submit_from_the_command_line_refuses_a_client_file_it_cannot_translate(tmp_path, capsys):
    settings = tmp_path / "client.properties"
    settings.write_text("security.protocol=SASL_SSL\nsasl.mechanism=GSSAPI\nsasl.username=u\nsasl.password=hush\n")
    assert main(["submit", "--client-config", str(settings)]) == 1
    error = capsys.readouterr().err
    assert error.startswith("devstack.flink: the SASL mechanism GSSAPI is not translated") and "hush" not in error
    assert error.count("\n") == 1



def test_submit_from_the_command_line_hands_the_file_and_the_savepoint_on_and_the_rest_to_the_job(
        tmp_path, monkeypatch, capsys):
    import devstack.flink

    settings = tmp_path / "client.properties"
    settings.write_text("# the pipeline principal\n" + "".join(f"{k}={v}\n" for k, v in SCRAM.items()
                                                             if k != "bootstrap.servers"))
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092")
    handed = {}
    monkeypatch.setattr(devstack.flink, "submit", lambda _settings, job_args, savepoint, kafka_properties: handed.update(
        job_args=job_args, savepoint=savepoint, kafka_properties=kafka_properties) or "a-job-id")
    assert main(["submit", "--savepoint", "/sp/1", "--client-config", str(settings), "--", "--topic", "t"]) == 0
    assert capsys.readouterr().out == "a-job-id\n"
    assert handed == {"job_args": ["--topic", "t"], "savepoint": "/sp/1",
                      "kafka_properties": flink_kafka_properties(SCRAM)}

"""The stack's three-node cluster, as configured (no processes): names, ports, quorum, bootstrap, scrape targets."""

from __future__ import annotations

import pytest

from devstack import Stack, StackError, StackSettings


def _cluster(tmp_path) -> Stack:
    return Stack(StackSettings(home=tmp_path, kafka_port=19092, kafka_controller_port=19093,
                               kafka_metrics_port=17071, kafka_brokers=3))


def test_three_nodes_are_named_and_placed_apart_and_kafka_selects_them_all(tmp_path):
    stack = _cluster(tmp_path)
    brokers = stack.select(["kafka"])
    assert [b.name for b in brokers] == ["kafka-1", "kafka-2", "kafka-3"]
    assert [b.ports() for b in brokers] == [[19092, 19093, 17071], [19192, 19193, 17171], [19292, 19293, 17271]]
    assert len({b.data_dir for b in brokers}) == 3 and len({b.log for b in brokers}) == 3
    assert stack.environment()["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:19092,127.0.0.1:19192,127.0.0.1:19292"
    assert [s.name for s in stack.select(["kafka-2", "s3"])] == ["kafka-2", "s3"]


def test_each_node_votes_in_one_quorum_and_topics_need_two_in_sync(tmp_path):
    config = _cluster(tmp_path).services["kafka-2"]._write_config().read_text()
    assert "node.id=2" in config
    assert "controller.quorum.voters=1@127.0.0.1:19093,2@127.0.0.1:19193,3@127.0.0.1:19293" in config
    assert "listeners=PLAINTEXT://127.0.0.1:19192,CONTROLLER://127.0.0.1:19193" in config
    for setting in ("default.replication.factor=3", "min.insync.replicas=2", "offsets.topic.replication.factor=3",
                    "transaction.state.log.replication.factor=3", "transaction.state.log.min.isr=2"):
        assert setting in config


def test_one_node_keeps_its_single_node_config(tmp_path):
    stack = Stack(StackSettings(home=tmp_path, kafka_port=19092, kafka_controller_port=19093, kafka_metrics_port=17071))
    (broker,) = stack.select(["kafka"])
    config = broker._write_config().read_text()
    assert broker.name == "kafka" and broker.data_dir == tmp_path / "kafka" / "data"
    assert "controller.quorum.bootstrap.servers=127.0.0.1:19093" in config and "voters" not in config
    assert "offsets.topic.replication.factor=1" in config


def test_prometheus_scrapes_every_nodes_agent(tmp_path):
    stack = _cluster(tmp_path)
    written = stack.services["prometheus"].write_config(tmp_path / "prometheus.yml").read_text()
    assert 'targets: ["127.0.0.1:17071", "127.0.0.1:17171", "127.0.0.1:17271"]' in written


def test_only_one_node_or_three_are_offered():
    with pytest.raises(StackError, match="KAFKA_BROKERS=2: the stack runs 1 Kafka node or a cluster of 3"):
        StackSettings(kafka_brokers=2)


def test_an_authenticated_cluster_takes_scram_over_tls_from_clients_and_certificates_between_controllers(tmp_path):
    import ssl

    stack = Stack(StackSettings(home=tmp_path, kafka_port=19092, kafka_controller_port=19093,
                                kafka_metrics_port=17071, kafka_brokers=3, kafka_auth="scram"))
    auth = stack.settings.kafka_auth_files
    auth.ensure()
    config = stack.services["kafka-2"]._write_config().read_text()
    assert "listeners=SASL_SSL://127.0.0.1:19192,CONTROLLER://127.0.0.1:19193" in config
    assert "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL" in config
    assert "listener.name.controller.ssl.client.auth=required" in config
    assert "allow.everyone.if.no.acl.found=false" in config and "PLAINTEXT" not in config
    # Secrets are made once, readable by their owner only, and kept across starts.
    password = auth.password("pipeline")
    auth.ensure()
    assert auth.password("pipeline") == password and auth.password("admin") != password
    for secret in (auth.password_file("admin"), auth.password_file("pipeline"), auth.node_file):
        assert secret.stat().st_mode & 0o077 == 0
    # The node certificate is the CA's, for 127.0.0.1: a client trusting the CA accepts it.
    context = ssl.create_default_context(cafile=str(auth.ca_file))
    context.load_cert_chain(str(auth.node_file))
    assert auth.client_config("pipeline")["sasl.username"] == "pipeline"
    arguments = auth.format_arguments()
    assert arguments.count("--add-scram") == 2 and f"name=pipeline,password={password}" in arguments[3]


def test_an_unknown_auth_mode_is_one_sentence(tmp_path):
    with pytest.raises(StackError, match="KAFKA_AUTH='tls': choose one of none, scram"):
        StackSettings(home=tmp_path, kafka_auth="tls")

"""The stack's three-node KRaft cluster (KAFKA_BROKERS=3) with authentication (KAFKA_AUTH=scram)
on ports of its own, what the pipeline does when its brokers fail, and what its principal may not do.

One cluster for the module, with a Pushgateway and a Prometheus of its own scraping its three
JMX agents: started, probed and stopped as one service, replicated three ways with two in sync
required, taking SCRAM over TLS only. The code under test signs in as the pipeline principal,
with the ACLs provisioning derives from the catalog; set-up and the checks of whole topics sign in
as admin. The failure tests kill brokers with SIGKILL in the middle of an hour's ingestion and
check the topics whole with a read_committed consumer: every row once, none lost, none twice.
The registry is the local stack's (schemas do not live in Kafka). The Flink CTR job runs on it
too, through ctr_stream's operator on a Flink session cluster of the module's own (``flink_cluster``),
its sources signing in as the pipeline principal.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic

from devstack import Stack, StackSettings
from devstack.probes import free_ports, http_json, port_in_use
from devstack.stack import KAFKA_NODE_PORT_STEP
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.avazu.reader import read_all
from include.dead_letters import FROM, OUTCOME, coordinates
from include.dlq.config import load_dlq_config
from include.dlq.reprocessor import DlqReprocessor
from include.health.checks import HealthInputs, run_check
from include.health.config import load_health_config
from include.health.metrics import push_metrics
from include.ingest.config import IngestTopics, load_ingest_config
from include.ingest.ingestor import PHASE_MID_PRODUCE, HourlyIngestor
from include.ingest.staging import find_partition, stage_source
from include.ingest.topics import provision_ingest_topics
from include.kafka.errors import TooFewInSyncReplicas
from include.kafka.reader import read_topic
from include.kafka.transactions import PHASE_AFTER_BEGIN, PHASE_AFTER_COMMIT, TransactionalProducer
from include.errors import PipelineError
from include.kafka_admin.acls import Acl, apply_acls, declared_acls, drift_text, plan_acls
from include.kafka_admin.catalog import declared_catalog, topic_for
from include.kafka_admin.sandbox import provision_sandbox, sandbox_catalog
from tests.ctr_flink import HOURS, ctr_pipeline, logged_lines
from tests.exactly_once import assert_every_row_once
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HOUR = 14102100
CHUNK_ROWS = 2_000


def _ports_with_two_more_nodes_free() -> tuple[int, int, int]:
    """Three base ports whose +100 and +200 are free too (nodes 2 and 3 take those)."""
    for _ in range(20):
        ports = free_ports(3)
        taken = [p + KAFKA_NODE_PORT_STEP * n for p in ports for n in (1, 2)]
        if not any(port_in_use(p) for p in taken) and not set(taken) & set(ports):
            return ports[0], ports[1], ports[2]
    raise AssertionError("no free ports for a three-node cluster")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, local_stack):
    """A cluster of our own with its Prometheus; local_stack makes sure the jar cache is filled."""
    client, controller, metrics = _ports_with_two_more_nodes_free()
    pushgateway, prometheus = free_ports(2)
    settings = StackSettings(home=tmp_path_factory.mktemp("cluster") / "devstack", kafka_port=client,
                             kafka_controller_port=controller, kafka_metrics_port=metrics, kafka_brokers=3,
                             kafka_heap="512m", pushgateway_port=pushgateway, prometheus_port=prometheus,
                             kafka_auth="scram")
    stack = Stack(settings)
    yield stack
    stack.stop(["kafka", "pushgateway", "prometheus"], echo=lambda line: None)


def _config(cluster: Stack, principal: str = "pipeline") -> dict:
    """A client's settings signing in as ``principal`` (the pipeline's, unless set-up needs admin)."""
    return {"bootstrap.servers": cluster.environment()["KAFKA_BOOTSTRAP_SERVERS"],
            **cluster.settings.kafka_auth_files.client_config(principal)}


def _admin(cluster: Stack) -> AdminClient:
    return AdminClient(_config(cluster, "admin"))


def _all_up(cluster: Stack, topics: list[str] = ()) -> None:
    """Every node running and in the cluster, and every partition of ``topics`` fully in sync."""
    cluster.start(["kafka"], echo=lambda line: None)
    admin = _admin(cluster)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        metadata = admin.list_topics(timeout=10)
        synced = all(len(p.isrs) == len(p.replicas) for t in topics for p in metadata.topics[t].partitions.values())
        if len(metadata.brokers) == 3 and synced:
            return
        time.sleep(0.5)
    raise AssertionError(f"the cluster did not come back whole: {metadata.brokers}")


def _kill(cluster: Stack, *nodes: int) -> None:
    for node in nodes:
        os.kill(cluster.services[f"kafka-{node}"].pid(), signal.SIGKILL)


def _leader(cluster: Stack, topic: str, partition: int = 0) -> int:
    return _admin(cluster).list_topics(topic, timeout=10).topics[topic].partitions[partition].leader


def test_three_nodes_start_as_one_service_replicate_and_survive_a_killed_node(cluster):
    cluster.stop(["kafka"], echo=lambda line: None)
    lines: list[str] = []
    cluster.start(["kafka"], echo=lines.append)
    assert lines == ["  kafka-1: starting", "  kafka-2: starting", "  kafka-3: starting"]
    statuses = cluster.status(["kafka"])
    assert [(s.name, s.state) for s in statuses] == [(f"kafka-{n}", "running") for n in (1, 2, 3)]
    assert len({s.endpoint for s in statuses}) == 3 and len({s.log for s in statuses}) == 3
    bootstrap = cluster.environment()["KAFKA_BOOTSTRAP_SERVERS"]
    assert bootstrap.count(",") == 2
    config = _config(cluster, "admin")
    _all_up(cluster)

    admin = AdminClient(config)
    metadata = admin.list_topics(timeout=10)
    assert sorted(metadata.brokers) == [1, 2, 3] and metadata.controller_id in (1, 2, 3)
    topic = f"cluster_{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=3)])[topic].result(60)
    described = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(sorted(p.replicas) == [1, 2, 3] and len(p.isrs) == 3 for p in described.partitions.values())

    def write(tag: str, count: int) -> None:
        producer = TransactionalProducer(config, f"cluster-{tag}-{uuid.uuid4().hex[:6]}", label=f"cluster {tag}")
        try:
            producer.init()
            producer.begin()
            for i in range(count):
                producer.produce(topic, f"{tag}-{i}".encode(), str(i).encode())
            producer.commit()
        finally:
            producer.close()

    write("all-up", 100)
    # One node killed: two replicas of three stay in sync, as min.insync.replicas=2 asks.
    _kill(cluster, 3)
    deadline = time.monotonic() + 60
    while cluster.services["kafka-3"].pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    write("one-down", 100)
    _all_up(cluster)
    values = sorted(r.value.decode() for r in read_topic(config, topic))
    assert values == sorted([f"all-up-{i}" for i in range(100)] + [f"one-down-{i}" for i in range(100)])


# -- the ingestion while brokers fail -----------------------------------------------------------

@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cluster-hour")
    source = folder / "train.csv.gz"
    truth = generate(GeneratorSpec(30_000, hours=1, seed=33, fault_rates={kind: 0.001 for kind in FaultKind}), source)
    stage_source(str(source), str(folder / "staging"))
    good, _, _ = read_all(str(source))
    return {"staging": str(folder / "staging"), "truth": truth, "good_ids": Counter(r["id"] for r in good)}


@pytest.fixture
def hour(cluster, staged, registry_client):
    """Fresh ingestion topics on the whole cluster (replication 3, min.insync.replicas 2) and the hour to write."""
    _all_up(cluster)
    suffix = uuid.uuid4().hex[:8]
    topics = IngestTopics(f"cluster_raw_{suffix}", f"cluster_dlq_{suffix}", f"cluster_ckpt_{suffix}")
    provision_ingest_topics(_admin(cluster), registry_client, topics)
    config = load_ingest_config().with_topics(topics).replace("test", chunk_rows=CHUNK_ROWS)
    partition = find_partition(staged["staging"], HOUR)
    assert partition.rows == staged["truth"].rows
    return {"topics": topics, "config": config, "partition": partition,
            "truth": staged["truth"], "good_ids": staged["good_ids"]}


def _ingest(cluster: Stack, hour: dict, registry_client, hook=None):
    return HourlyIngestor(hour["partition"], config=hour["config"], kafka_config=_config(cluster),
                          registry=registry_client, phase_hook=hook).run()


def _assert_exactly_once(cluster: Stack, registry_client, topics: IngestTopics, good_ids: Counter, truth) -> None:
    """Every source row once in the committed topics: good ones in raw, bad ones in the DLQ."""
    assert_every_row_once(_config(cluster, "admin"), registry_client, topics.raw, topics.dlq, good_ids, truth)


def test_the_leader_killed_mid_hour_the_ingestion_goes_on_and_every_row_lands_once(cluster, hour, registry_client):
    raw = hour["topics"].raw
    killed: dict = {}

    def kill_the_leader(phase: str, chunk: int) -> None:
        if (phase, chunk) == (PHASE_MID_PRODUCE, 3) and not killed:
            killed["node"] = _leader(cluster, raw)
            _kill(cluster, killed["node"])
            killed["at"] = time.monotonic()
        elif phase == PHASE_AFTER_COMMIT and killed and "recovered_s" not in killed:
            killed["recovered_s"] = time.monotonic() - killed["at"]

    result = _ingest(cluster, hour, registry_client, kill_the_leader)
    assert killed["node"] in (1, 2, 3) and result.complete and result.rows_read == hour["partition"].rows
    print(f"\nleader {killed['node']} of {raw}[0] killed mid-chunk: the next chunk committed "
          f"{killed['recovered_s']:.1f} s later; {result.chunk_attempts_aborted} chunk attempt(s) aborted")
    assert _leader(cluster, raw) != killed["node"]
    _all_up(cluster, [raw])
    _assert_exactly_once(cluster, registry_client, hour["topics"], hour["good_ids"], hour["truth"])


def test_two_of_three_down_stop_the_ingestion_in_one_sentence_and_its_retry_resumes_exactly_once(
        cluster, hour, registry_client):
    raw = hour["topics"].raw
    down: dict = {}

    def kill_two(phase: str, chunk: int) -> None:
        if (phase, chunk) == (PHASE_MID_PRODUCE, 3) and not down:
            down["nodes"] = sorted(n for n in (1, 2, 3) if n != _leader(cluster, raw))
            _kill(cluster, *down["nodes"])
            down["at"] = time.monotonic()

    with pytest.raises(TooFewInSyncReplicas) as stopped:
        _ingest(cluster, hour, registry_client, kill_two)
    stopped_after = time.monotonic() - down["at"]
    message = str(stopped.value)
    print(f"\nbrokers {down['nodes']} killed mid-chunk: the ingestion stopped {stopped_after:.1f} s later: {message}")
    assert "too few in-sync replicas" in message and "min.insync.replicas is 2" in message
    nodes = cluster.services
    for node in down["nodes"]:
        assert f"{node} at {nodes[f'kafka-{node}'].endpoint()}" in message
    assert "a retry resumes from the last commit" in message and "\n" not in message
    # The flush looks for brokers down after 10 s without acknowledgements, not after its 120 s.
    assert stopped_after < 45

    _all_up(cluster, [raw])
    retried = _ingest(cluster, hour, registry_client)
    assert retried.action == "resume" and retried.resumed_from_chunk == 3 and retried.complete
    _assert_exactly_once(cluster, registry_client, hour["topics"], hour["good_ids"], hour["truth"])


# -- pipeline_health and Prometheus with a broker down ------------------------------------------

def _alerts(cluster: Stack) -> dict[str, str]:
    """alert name (with its check label) -> state, from Prometheus's HTTP API."""
    answer = http_json(f"{cluster.services['prometheus'].endpoint()}/api/v1/alerts", timeout=5) or {}
    return {a["labels"]["alertname"] + (f"/{a['labels']['check']}" if "check" in a["labels"] else ""): a["state"]
            for a in answer.get("data", {}).get("alerts", [])}


def test_one_broker_down_fails_the_brokers_check_naming_it_and_fires_its_alerts_until_it_returns(
        cluster, hour, registry_client, tmp_path):
    cluster.start(["pushgateway", "prometheus"], echo=lambda line: None)
    topics = hour["topics"]
    catalog = sandbox_catalog(topics.as_dict())
    inputs = HealthInputs(config=load_health_config().replace(report_uri=str(tmp_path / "reports"),
                                                              state_uri=str(tmp_path / "state.json")),
                          kafka_config=_config(cluster), registry=registry_client, ingest=hour["config"],
                          catalog=catalog)
    pushgateway = cluster.services["pushgateway"].endpoint()

    def check():
        inputs.cache.clear()
        outcome = run_check("brokers", inputs)
        push_metrics(pushgateway, [outcome])
        return outcome

    assert check().ok
    _kill(cluster, 2)
    # The controller fences a broker that stopped heartbeating (broker.session.timeout.ms, 9 s).
    def sees_it_gone():
        outcome = check()
        return outcome if not outcome.ok and "not in the cluster" in outcome.summary else None

    outcome = wait_for("the brokers check seeing broker 2 gone", sees_it_gone, 60)
    assert outcome.summary.startswith("broker(s) 2 (replicas of ")
    assert f"under-replicated partitions: {topics.raw} [0, 1, 2]" in outcome.summary
    assert {m.name: m.value for m in outcome.metrics}["brokers_missing"] == 1.0
    wait_for("AvazuKafkaBrokerMissing firing", lambda: _alerts(cluster).get("AvazuKafkaBrokerMissing") == "firing", 60)
    assert _alerts(cluster).get("AvazuCheckFailing/brokers") == "firing"
    print(f"\nbroker 2 killed: {outcome.summary}")
    # The broker's own scrape fails too: KafkaBrokerMetricsDown waits two minutes before it fires.
    assert _alerts(cluster).get("KafkaBrokerMetricsDown") in ("pending", "firing")

    _all_up(cluster, [topics.raw, topics.dlq, topics.checkpoints])
    assert check().ok
    wait_for("the alerts clearing", lambda: not {"AvazuKafkaBrokerMissing", "AvazuCheckFailing/brokers",
                                                 "KafkaBrokerMetricsDown"} & _alerts(cluster).keys(), 60)


# -- a running stream processor while brokers fail ----------------------------------------------

def test_two_of_three_down_stop_a_running_processor_in_one_sentence_and_its_restart_resumes_exactly_once(
        cluster, registry_client, tmp_path):
    _all_up(cluster)
    config = _config(cluster)
    name = f"cluster_stream_{uuid.uuid4().hex[:8]}"
    # Copies of the declared word topics (3 partitions, 3 replicas, 2 in sync), with their ACLs; a
    # group under the catalog's stream- prefix.
    source, target, group = f"{name}_in", f"{name}_out", f"stream-{name}"
    provision_sandbox(_admin(cluster), registry_client, {"words": source, "uppercased_words": target})
    # The processor's credentials in a file of its own, as a deployment passes them (not in argv).
    client_file = tmp_path / "client.properties"
    client_file.write_text("".join(f"{k}={v}\n" for k, v in config.items() if k != "bootstrap.servers"))
    client_file.chmod(0o600)
    words = [f"word-{i:05d}" for i in range(3000)]
    producer = TransactionalProducer(_config(cluster, "admin"), f"{name}-feed", label="feed")
    producer.init()
    producer.begin()
    for i, word in enumerate(words):
        producer.produce(source, word.encode(), partition=i % 3)
    producer.commit()
    producer.close()

    def start(log: Path, *options: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "include.streaming", "uppercase", "--input", source, "--output", target,
             "--group", group, "--bootstrap-servers", config["bootstrap.servers"],
             "--client-config", str(client_file), "--max-runtime", "240",
             *options], cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)

    first_log = tmp_path / "first.log"
    first = start(first_log, "--max-rate", "200")
    deadline = time.monotonic() + 60
    while ": assigned " not in first_log.read_text() and time.monotonic() < deadline:
        assert first.poll() is None, first_log.read_text()[-3000:]
        time.sleep(0.5)
    time.sleep(3)  # a few hundred records committed
    down = sorted(n for n in (1, 2, 3) if n != _leader(cluster, target))
    _kill(cluster, *down)
    killed_at = time.monotonic()
    first.communicate(timeout=180)
    stopped_after = time.monotonic() - killed_at
    errors = [line for line in first_log.read_text().splitlines() if "TooFewInSyncReplicas" in line]
    print(f"\nbrokers {down} killed under a running processor: it stopped {stopped_after:.1f} s later: "
          f"{errors[-1] if errors else first_log.read_text()[-2000:]}")
    assert first.returncode == 1 and len(errors) == 1
    assert "too few in-sync replicas" in errors[0] and "min.insync.replicas is 2" in errors[0]
    assert all(f"{n} at {cluster.services[f'kafka-{n}'].endpoint()}" in errors[0] for n in down)

    _all_up(cluster, [source, target])
    second_log = tmp_path / "second.log"
    second = start(second_log, "--idle-timeout", "3")
    out, _ = second.communicate(timeout=180)
    assert second.returncode == 0, second_log.read_text()[-3000:]
    output = sorted(r.value.decode() for r in read_topic(_config(cluster, "admin"), target))
    assert output == sorted(w.upper() for w in words)  # every record once: none lost, none twice


# -- a rolling restart during a backfill --------------------------------------------------------

BACKFILL_HOURS = (14102100, 14102101, 14102102)


def test_a_rolling_restart_of_all_three_brokers_during_a_backfill_loses_and_repeats_nothing(
        cluster, registry_client, tmp_path):
    _all_up(cluster)
    source = tmp_path / "train.csv.gz"
    truth = generate(GeneratorSpec(45_000, hours=len(BACKFILL_HOURS), seed=71,
                                   fault_rates={kind: 0.001 for kind in FaultKind}), source)
    stage_source(str(source), str(tmp_path / "staging"))
    good, _, _ = read_all(str(source))
    suffix = uuid.uuid4().hex[:8]
    topics = IngestTopics(f"rolling_raw_{suffix}", f"rolling_dlq_{suffix}", f"rolling_ckpt_{suffix}")
    provision_ingest_topics(_admin(cluster), registry_client, topics)
    config = load_ingest_config().with_topics(topics).replace("test", chunk_rows=1_000)

    restarting = threading.Event()
    restarting.set()
    commits: list[tuple[float, int]] = []  # (when, chunk) of every committed chunk
    stopped: dict[int, tuple[float, float]] = {}  # node -> (stopped at, back at)

    def roll() -> None:
        try:
            for node in (1, 2, 3):
                began = time.monotonic()
                cluster.stop([f"kafka-{node}"], echo=lambda line: None)  # SIGTERM: a controlled shutdown
                time.sleep(3)
                _all_up(cluster, [topics.raw, topics.dlq, topics.checkpoints])
                stopped[node] = (began, time.monotonic())
        finally:
            restarting.clear()

    def slow_while_rolling(phase: str, chunk: int) -> None:
        if phase == PHASE_AFTER_COMMIT:
            commits.append((time.monotonic(), chunk))
            if restarting.is_set():
                time.sleep(1.5)

    roller = threading.Thread(target=roll, name="rolling-restart")
    roller.start()
    try:
        results = [HourlyIngestor(find_partition(str(tmp_path / "staging"), hour), config=config,
                                  kafka_config=_config(cluster), registry=registry_client,
                                  phase_hook=slow_while_rolling).run() for hour in BACKFILL_HOURS]
    finally:
        roller.join(300)
    assert all(r.complete for r in results) and sorted(stopped) == [1, 2, 3]
    # The backfill really ran through each restart: chunks committed while each node was away.
    for node, (began, back) in stopped.items():
        assert any(began <= at <= back for at, _ in commits), (
            f"no chunk committed while kafka-{node} restarted: {stopped}, commits {commits[0][0]:.0f}..{commits[-1][0]:.0f}")
    print(f"\nrolling restart: {len(commits)} chunks committed over {len(BACKFILL_HOURS)} hours, "
          f"{sum(r.chunk_attempts_aborted for r in results)} chunk attempt(s) aborted; nodes away "
          + ", ".join(f"kafka-{n} {b - a:.1f} s" for n, (a, b) in sorted(stopped.items())))

    _assert_exactly_once(cluster, registry_client, topics, Counter(r["id"] for r in good), truth)


# -- the DLQ reprocessor while brokers fail -----------------------------------------------------

def test_two_of_three_down_stop_the_dlq_reprocessing_in_one_sentence_and_its_retry_leaves_one_outcome_each(
        cluster, hour, registry_client, tmp_path):
    config, topics = _config(cluster), hour["topics"]
    assert _ingest(cluster, hour, registry_client).complete
    suffix = uuid.uuid4().hex[:8]
    copies = {role: f"cluster_{role}_{suffix}" for role in ("dlq_retry_1", "dlq_retry_2", "dlq_retry_3", "dlq_parked")}
    provision_sandbox(_admin(cluster), registry_client, copies)
    dlq_config = dataclasses.replace(load_dlq_config(), archive_uri=str(tmp_path / "archive"), batch_records=10)
    spec = dlq_config.dlq(topic_for("dlq")).sandboxed(
        {"dlq": topics.dlq, "repaired": topics.raw, "parked": copies["dlq_parked"],
         "retry1": copies["dlq_retry_1"], "retry2": copies["dlq_retry_2"],
         "retry3": copies["dlq_retry_3"]}, group_id=f"dlq-reprocessing.cluster-{suffix}")
    down: dict = {}

    def kill_two(phase: str, batch: int) -> None:
        if (phase, batch) == (PHASE_AFTER_BEGIN, 3) and not down:
            down["nodes"] = sorted(n for n in (1, 2, 3) if n != _leader(cluster, spec.parked_topic))
            _kill(cluster, *down["nodes"])
            down["at"] = time.monotonic()

    with pytest.raises(TooFewInSyncReplicas) as stopped:
        DlqReprocessor(spec, dlq_config, kafka_config=config, registry=registry_client, phase_hook=kill_two).run()
    message = str(stopped.value)
    print(f"\nbrokers {down['nodes']} killed under the DLQ reprocessing: it stopped "
          f"{time.monotonic() - down['at']:.1f} s later: {message}")
    assert "too few in-sync replicas" in message and "min.insync.replicas is 2" in message

    _all_up(cluster, [topics.raw, topics.dlq, *copies.values()])
    result = DlqReprocessor(spec, dlq_config, kafka_config=config, registry=registry_client).run()
    config = _config(cluster, "admin")
    dlq_records = read_topic(config, spec.topic)
    assert len(dlq_records) == len(hour["truth"].bad_lines()) and result.consumed > 0
    outcomes = Counter(dict(r.headers or [])[FROM].decode()
                       for t in (spec.repaired_topic, spec.parked_topic, *spec.retry_topics)
                       for r in read_topic(config, t) if OUTCOME in dict(r.headers or []))
    assert outcomes == Counter({coordinates(spec.topic, r.partition, r.offset): 1 for r in dlq_records})


# -- authentication and ACLs --------------------------------------------------------------------

def _refused(config: dict, what: str) -> list:
    """The errors a client with ``config`` reports trying to list the cluster (it must be refused)."""
    errors: list = []
    client = AdminClient({**config, "socket.timeout.ms": 5000, "error_cb": errors.append})
    try:
        client.list_topics(timeout=8)
    except KafkaException:
        client.poll(1)  # serves the error callbacks
        return errors
    raise AssertionError(f"{what} was let in")


def test_a_client_without_credentials_or_with_a_wrong_password_is_refused(cluster):
    _all_up(cluster)
    bootstrap = cluster.environment()["KAFKA_BOOTSTRAP_SERVERS"]
    _refused({"bootstrap.servers": bootstrap}, "a client without TLS and credentials")
    wrong = {**_config(cluster), "sasl.password": "not-the-password"}
    # The broker says why: SCRAM authentication failed (librdkafka reports it through error_cb).
    errors = _refused(wrong, "a client with a wrong password")
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    # Without the stack's CA the client does not trust the brokers' certificate.
    untrusting = {k: v for k, v in _config(cluster).items() if k != "ssl.ca.location"}
    _refused({**untrusting, "ssl.ca.location": str(certifi_bundle())}, "a client not trusting the stack's CA")


def certifi_bundle() -> Path:
    import certifi

    return Path(certifi.where())


def test_the_pipeline_principal_may_use_its_topics_and_nothing_else(cluster, registry_client):
    _all_up(cluster)
    suffix = uuid.uuid4().hex[:8]
    mine, other = f"acl_raw_{suffix}", f"acl_other_{suffix}"
    provision_sandbox(_admin(cluster), registry_client, {"raw": mine})
    admin = _admin(cluster)
    admin.create_topics([NewTopic(other, num_partitions=1, replication_factor=3)])[other].result(60)
    config = _config(cluster)

    # Its own topic: a transaction under a declared prefix commits, and a reader reads it back.
    producer = TransactionalProducer(config, f"avazu-ingest/acl-{suffix}", label="acl test")
    producer.init()
    producer.begin()
    producer.produce(mine, b"allowed", b"k")
    producer.commit()
    producer.close()
    assert [r.value for r in read_topic(config, mine)] == [b"allowed"]

    # Any other topic: no write, no read, not even its existence.
    failures: list = []
    plain = Producer({**config, "message.timeout.ms": 10000})
    plain.produce(other, b"refused", on_delivery=lambda error, _message: failures.append(error))
    plain.flush(15)
    assert failures and failures[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    pipeline_admin = AdminClient(config)
    assert other not in pipeline_admin.list_topics(timeout=10).topics
    consumer = Consumer({**config, "group.id": f"read-topic-acl-{suffix}", "auto.offset.reset": "earliest"})
    consumer.subscribe([other])
    message = consumer.poll(10)
    consumer.close()
    assert message is not None and message.error().code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

    # Nor change its own topic's configs, nor create one, nor use an undeclared transactional id.
    change = ConfigResource("topic", mine, incremental_configs=[
        ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)])
    with pytest.raises(KafkaException) as altered:
        pipeline_admin.incremental_alter_configs([change])[change].result(30)
    assert altered.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    created = pipeline_admin.create_topics([NewTopic(f"acl_new_{suffix}", 1, 3)])
    with pytest.raises(KafkaException) as refused:
        created[f"acl_new_{suffix}"].result(30)
    assert refused.value.args[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    stranger = TransactionalProducer(config, f"not-declared-{suffix}", label="acl test")
    with pytest.raises(PipelineError, match="(?i)transactional id authorization failed"):
        stranger.init()
    stranger.close()


def test_provisioning_grants_the_catalogs_acls_and_reports_then_removes_drift(cluster, registry_client):
    _all_up(cluster)
    suffix = uuid.uuid4().hex[:8]
    # A principal of this test's own, so fixing its drift leaves the other tests' grants alone.
    principal = f"drift-{suffix}"
    catalog = sandbox_catalog({"raw": f"drift_raw_{suffix}", "dlq": f"drift_dlq_{suffix}"})
    catalog = dataclasses.replace(catalog, access=dataclasses.replace(catalog.access, principal=principal))
    admin = _admin(cluster)
    plan = plan_acls(admin, catalog)
    assert plan.authorizer and plan.missing == declared_acls(catalog) and not plan.present
    assert {(r.acl, r.action) for r in apply_acls(admin, plan, fix_drift=True, dry_run=False)} == {
        (str(acl), "created") for acl in declared_acls(catalog)}
    # A hand-made grant the catalog does not derive: altering the raw copy's configs.
    stray = Acl("topic", f"drift_raw_{suffix}", "literal", "ALTER_CONFIGS")
    admin.create_acls([stray.binding(principal)])[stray.binding(principal)].result(30)

    plan = plan_acls(admin, catalog)
    assert declared_acls(catalog) <= plan.present and stray in plan.extra
    assert not plan.missing
    assert drift_text(plan) == (f"the ACLs of User:{principal} differ from the catalog's: "
                                f"not declared ALTER_CONFIGS on topic drift_raw_{suffix}")
    report = apply_acls(admin, plan, fix_drift=False, dry_run=True)
    assert (str(stray), "would-remove") not in [(r.acl, r.action) for r in report]
    assert (str(stray), "extra") in [(r.acl, r.action) for r in report]
    applied = apply_acls(admin, plan, fix_drift=True, dry_run=False)
    assert (str(stray), "removed") in [(r.acl, r.action) for r in applied]
    assert stray not in plan_acls(admin, catalog).extra


def test_the_passwords_never_reach_a_task_log_an_xcom_or_a_rendered_template(
        cluster, registry_client, airflow_db, monkeypatch, capfd, tmp_path):
    """kafka_provisioning (as admin) and kafka_smoke (as the pipeline) through Airflow, on the cluster."""
    import json

    import yaml
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    _all_up(cluster)
    for connection, principal in (("KAFKA_DEFAULT", "pipeline"), ("KAFKA_ADMIN", "admin")):
        monkeypatch.setenv(f"AIRFLOW_CONN_{connection}",
                           json.dumps({"conn_type": "kafka", "extra": _config(cluster, principal)}))
    smoke = f"secure_smoke_{uuid.uuid4().hex[:8]}"
    declarations = tmp_path / "topics.yaml"
    declarations.write_text(yaml.safe_dump({
        "access": {"principal": "pipeline", "group_prefixes": ["kafka_smoke-", "read-topic-"]},
        "topics": [{"name": smoke, "role": "smoke", "partitions": 3,
                    "value_schema": str(ROOT / "schemas" / "smoke_event.avsc")}]}))
    dags = DagBag(dag_folder=str(ROOT / "dags"))
    provisioned = dags.get_dag("kafka_provisioning").test(run_conf={"declarations": str(declarations)})
    smoked = dags.get_dag("kafka_smoke").test(run_conf={"topic": smoke, "records": 200})
    assert provisioned.state == "success" and smoked.state == "success"

    passwords = {p: cluster.settings.kafka_auth_files.password(p) for p in ("admin", "pipeline")}
    with create_session() as session:
        xcoms = [XComModel.deserialize_value(row) for run in (provisioned, smoked)
                 for row in session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=run.dag_id))]
        rendered = [row.rendered_fields for row in session.query(RenderedTaskInstanceFields).filter(
            RenderedTaskInstanceFields.run_id.in_([provisioned.run_id, smoked.run_id]))]
    captured = capfd.readouterr()
    logs = captured.out + captured.err + "".join(
        p.read_text(errors="replace") for p in (Path(airflow_db) / "logs").rglob("*") if p.is_file())
    assert any(r.get("action") == "created" for r in next(x for x in xcoms if isinstance(x, list) and x
                                                         and "acl" in x[0]))
    assert {"produced": 200}.items() <= next(x for x in xcoms if isinstance(x, dict) and "produced" in x).items()
    assert xcoms and rendered
    for principal, password in passwords.items():
        assert password not in logs, f"{principal}'s password is in a task log"
        assert password not in json.dumps(xcoms, default=str), f"{principal}'s password is in an XCom"
        assert password not in json.dumps(rendered, default=str), f"{principal}'s password is in a rendered template"


# -- the Flink CTR job on the cluster -----------------------------------------------------------

def _flink_texts(rest_url: str, job_id: str) -> dict[str, str]:
    """What Flink's REST API shows of the job and its job manager, as the API's own text."""
    paths = [f"/jobs/{job_id}", f"/jobs/{job_id}/config", f"/jobs/{job_id}/plan", f"/jobs/{job_id}/exceptions",
             f"/jobs/{job_id}/checkpoints/config", f"/jobs/{job_id}/jobmanager/config",
             f"/jobs/{job_id}/jobmanager/environment", "/jobmanager/config", "/jobmanager/environment",
             "/taskmanagers"]
    texts = {}
    for path in paths:
        with urllib.request.urlopen(f"{rest_url}{path}", timeout=10) as response:
            texts[path] = response.read().decode()
    return texts


@pytest.fixture
def cluster_up(cluster):
    """The cluster with its nodes listening: before ``flink_cluster`` picks free ports, not after."""
    _all_up(cluster)
    return cluster


def test_the_ctr_job_reads_as_the_pipeline_through_its_operator_and_no_password_reaches_flink(
        cluster_up, flink_cluster, postgres_url, schema_registry_url, tmp_path, monkeypatch, capfd):
    """ctr_stream's operator, its kafka_default the pipeline principal's: the job's sources sign in
    with SCRAM over TLS, under the catalog's group prefix, and its windows equal the independent count."""
    from kafka_pipeline.operators.flink import CtrStreamOperator

    cluster = cluster_up
    pipeline = _config(cluster)
    settings = flink_cluster.settings
    with ctr_pipeline("cluster_ctr", flink_cluster, postgres_url, pipeline, schema_registry_url, tmp_path,
                      admin_config=_config(cluster, "admin"), group_prefix="ctr-flink") as ctr:
        group = ctr.job_args[ctr.job_args.index("--group-id") + 1]
        assert declared_catalog().access.covers_group(group)
        for hour in HOURS[:3]:
            ctr.ingest(hour)  # as the pipeline, as ingest_hour does
        # What a task of ctr_stream finds: the connections, and the cluster where devstack.flink looks.
        monkeypatch.setenv("AIRFLOW_CONN_KAFKA_DEFAULT", json.dumps({"conn_type": "kafka", "extra": pipeline}))
        monkeypatch.setenv("AIRFLOW_CONN_POSTGRES_DEFAULT", postgres_url)
        monkeypatch.setenv("DEVSTACK_HOME", str(settings.stack.home))
        monkeypatch.setenv("FLINK_REST_PORT", str(settings.rest_port))
        monkeypatch.setenv("FLINK_RPC_PORT", str(settings.rpc_port))
        monkeypatch.setenv("PUSHGATEWAY_URL", "")  # the watcher's metrics stay out of the shared Pushgateway
        operator = CtrStreamOperator(
            task_id="ctr_job", job_name=ctr.job_name, topic=ctr.topics.raw, schema=ctr.schema, group_id=group,
            job_args=["--checkpoint-interval", "2 s", "--parallelism", "2", "--idle-timeout", "10 min"],
            max_runtime=10, progress_interval=5, poll_interval=0.5)
        with logged_lines("airflow.task", "include", "kafka_pipeline") as task_lines:
            run = operator.execute(context={})  # submits, watches 10 s, hands the job on running
        ctr.job_id = run["job_id"]
        assert not run["adopted"] and run["savepoint"] is None and run["stop_reason"] == "max_runtime", run
        assert ctr.rest.job(ctr.job_id).state == "RUNNING"

        # Hour 0 closes with hours 0-2 read; hour 3, in a later minute, closes hour 1 and the minutes.
        ctr.caught_up()
        ctr.wait_for_exact_hours(HOURS[:1])
        ctr.wait_for_a_later_minute()
        ctr.ingest(HOURS[3])
        ctr.caught_up()
        ctr.wait_for_exact_hours(HOURS[:2])
        assert ctr.assert_closed_minutes_exact() > 0
        assert ctr.frame("SELECT * FROM ctr_late").empty
        # The sources committed their offsets as groups under the catalog's prefix (ACLs allow no
        # others): past every record (a committed offset also counts the transactions' markers).
        admin = _admin(cluster)
        for source in ("hourly", "minute"):
            wanted = ConsumerGroupTopicPartitions(f"{group}.{source}")
            committed = admin.list_consumer_group_offsets([wanted])[wanted.group_id].result(30)
            assert sum(max(p.offset, 0) for p in committed.topic_partitions) >= ctr.ingested, (source, committed)

        texts = _flink_texts(settings.rest_url, ctr.job_id)
        logs = {str(p): p.read_text(errors="replace") for p in (settings.home / "log").rglob("*") if p.is_file()}
        task_log = "\n".join(task_lines) + "".join(capfd.readouterr())
        xcom_and_templates = json.dumps([run, {f: getattr(operator, f) for f in operator.template_fields}], default=str)

    # The sign-in reached the job, and Flink hid it: the client's logged environment masks the
    # variable, the consumers' logged config hides the JAAS config.
    client_log = "".join(text for path, text in logs.items() if "-client-" in path)
    assert "CTR_KAFKA_SECRET_PROPERTIES=******" in client_log and "CTR_JDBC_PASSWORD=******" in client_log
    assert "security.protocol = SASL_SSL" in "".join(logs.values())
    assert "sasl.jaas.config = [hidden]" in "".join(logs.values())
    assert f"CTR job {ctr.job_id} RUNNING" in task_log
    passwords = {f"Kafka {p}": cluster.settings.kafka_auth_files.password(p) for p in ("admin", "pipeline")}
    passwords["the CTR store's"] = urlsplit(postgres_url).password
    for name, password in passwords.items():
        for path, text in {**texts, **logs}.items():
            assert password not in text, f"{name} password is in {path}"
        assert password not in task_log, f"{name} password is in the task log"
        assert password not in xcom_and_templates, f"{name} password is in the XCom or the templated fields"
    print(f"\nCTR job on the authenticated cluster: {ctr.ingested} records, timings {ctr.timings}")

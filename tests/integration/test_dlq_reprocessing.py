"""DLQ reprocessing on the real broker and registry: repair, retry with backoff, park and archive, exactly once."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.schema_registry import SchemaRegistryClient

from include import storage
from include.avazu.contract import parse_fields
from include.avazu.generator import FaultKind, GeneratorSpec, generate
from include.dead_letters import FROM, OUTCOME, PARKED_WHY, REPAIR_RULE, RETRY_ATTEMPT, coordinates, load_dlq_schema
from include.dlq.config import load_dlq_config
from include.dlq.reprocessor import DlqReprocessor, read_archive
from include.ingest.config import IngestTopics, load_ingest_config
from include.ingest.ingestor import HourlyIngestor
from include.ingest.staging import find_partition, stage_source
from include.ingest.topics import provision_ingest_topics
from include.kafka.headers import DLQ_HEADER_PREFIX
from include.kafka.reader import read_topic
from include.kafka.wire import AvroDecoder
from include.kafka_admin.catalog import topic_for
from include.kafka_admin.sandbox import provision_sandbox
from include.kafka.registry import registry_client, schema_fetcher

ROOT = Path(__file__).resolve().parents[2]
HOUR = 14102100


class RegistryProxy:
    """A TCP proxy in front of the real registry that can stop answering: the registry going away for real."""

    def __init__(self, target_port: int):
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.close()
                except OSError:
                    pass

    def down(self) -> None:
        self.up.clear()
        for connection in self._connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._connections.clear()

    def close(self) -> None:
        self.down()
        self.server.close()


@pytest.fixture
def dead_letters(tmp_path, kafka_config, schema_registry_url, unique_name):
    """An hour with every kind of fault, ingested into sandbox topics: its DLQ holds one envelope per bad line."""
    return _ingest_dead_letters(tmp_path, kafka_config, schema_registry_url, unique_name)


def _ingest_dead_letters(tmp_path, kafka_config, schema_registry_url, unique_name, before_ingest=None):
    """The dead_letters fixture; ``before_ingest(topics)`` writes to the sandbox topics before the hour is ingested."""
    source = tmp_path / "train.csv"
    truth = generate(GeneratorSpec(5_000, hours=1, seed=1212, fault_rates={kind: 0.004 for kind in FaultKind}), source)
    stage_source(str(source), str(tmp_path / "staging"))
    registry = registry_client(schema_registry_url)
    admin = AdminClient(kafka_config)
    ingest_topics = IngestTopics(unique_name("raw"), unique_name("dlq"), unique_name("ckpt"))
    provision_ingest_topics(admin, registry, ingest_topics)
    copies = {"dlq_retry_1": unique_name("retry1"), "dlq_retry_2": unique_name("retry2"),
              "dlq_retry_3": unique_name("retry3"), "dlq_parked": unique_name("parked")}
    provision_sandbox(admin, registry, copies)
    config = load_ingest_config().with_topics(ingest_topics).replace("test", chunk_rows=2_000)
    partition = find_partition(str(tmp_path / "staging"), HOUR)
    if before_ingest is not None:
        before_ingest({**copies, "dlq": ingest_topics.dlq})
    ingested = HourlyIngestor(partition, config=config, kafka_config=kafka_config, registry=registry).run()
    dlq_config = dataclasses.replace(load_dlq_config(), archive_uri=str(tmp_path / "archive"), linger_s=30.0)
    spec = dlq_config.dlq(topic_for("dlq")).sandboxed(
        {"dlq": ingest_topics.dlq, "repaired": ingest_topics.raw, "parked": copies["dlq_parked"],
         "retry1": copies["dlq_retry_1"], "retry2": copies["dlq_retry_2"],
         "retry3": copies["dlq_retry_3"]}, group_id=unique_name("reprocess"))
    lines = source.read_bytes().split(b"\n")
    return {"truth": truth, "lines": lines, "ingested": ingested, "config": dlq_config, "spec": spec,
            "registry": registry, "source_id": partition.source_id, "tmp": tmp_path}


def _decoder(registry):
    return AvroDecoder(schema_fetcher(registry))


def _line_of(headers: dict, source_id: str) -> int:
    return int(headers[DLQ_HEADER_PREFIX + "envelope_id"].decode().rsplit(":", 1)[1])


def _outputs(kafka_config, topic):
    return [(r, dict(r.headers)) for r in read_topic(kafka_config, topic)]


def test_repairable_lines_come_back_as_their_rows_and_the_rest_is_parked_and_archived(dead_letters, kafka_config):
    d = dead_letters
    truth, spec, registry = d["truth"], d["spec"], d["registry"]
    bad = truth.bad_lines()
    assert d["ingested"].rows_dead_lettered == len(bad) and len(truth.repairs) > 50

    result = DlqReprocessor(spec, d["config"], kafka_config=kafka_config, registry=registry).run()
    assert (result.consumed, result.repaired, result.retried, result.parked) == (
        len(bad), len(truth.repairs), 0, len(bad) - len(truth.repairs))
    assert set(result.repairs_by_rule) == {"decode_cp1252", "unquote_fields", "strip_whitespace", "lowercase_hex",
                                           "drop_trailing_empty", "hour_from_timestamp"}

    # Every repairable line is back in the raw topic, field for field the row its ground truth says.
    decoder = _decoder(registry)
    repaired = {_line_of(h, d["source_id"]): decoder.decode(r.value)
                for r, h in _outputs(kafka_config, spec.repaired_topic) if h.get(OUTCOME) == b"repaired"}
    assert repaired == {line: parse_fields(fields) for line, fields in truth.repairs.items()}
    assert all(h[REPAIR_RULE] and h[FROM].startswith(f"{spec.topic}/".encode())
               for r, h in _outputs(kafka_config, spec.repaired_topic) if h.get(OUTCOME) == b"repaired")

    # The rest is parked, once each, with why, and archived byte for byte.
    parked = _outputs(kafka_config, spec.parked_topic)
    assert sorted(_line_of(h, d["source_id"]) for _, h in parked) == sorted(set(bad) - set(truth.repairs))
    assert all(h[PARKED_WHY] for _, h in parked)
    archived = [e for uri in result.archived for e in read_archive(uri)]
    assert sorted(e["source"]["line"] for e in archived) == sorted(set(bad) - set(truth.repairs))
    assert all(e["raw"] == d["lines"][e["source"]["line"] - 1] for e in archived)

    # Nothing new: a second run consumes nothing and writes nothing.
    again = DlqReprocessor(spec, d["config"], kafka_config=kafka_config, registry=registry).run()
    assert (again.consumed, again.transactions) == (0, 0)
    assert len(_outputs(kafka_config, spec.parked_topic)) == len(parked)


def _fast_retries(config, **changes):
    return dataclasses.replace(config, retry=dataclasses.replace(config.retry, base_s=0.3, multiplier=2, cap_s=1,
                                                                 jitter=0.1), **changes)


@pytest.fixture
def registry_proxy(schema_registry_url):
    """The real registry behind a proxy that can stop answering, and a client that goes through it."""
    proxy = RegistryProxy(int(schema_registry_url.split(":")[2].split("/")[0]))
    path = schema_registry_url.split("/", 3)[3]
    yield proxy, SchemaRegistryClient({"url": f"http://127.0.0.1:{proxy.port}/{path}", "max.retries": 0})
    proxy.close()


def test_a_registry_that_stops_answering_sends_repaired_rows_through_the_retries_until_it_answers(
        dead_letters, kafka_config, registry_proxy):
    d = dead_letters
    truth, spec = d["truth"], d["spec"]
    proxy, registry = registry_proxy

    def registry_away_for_the_first_transaction(phase: str, number: int) -> None:
        if (phase, number) == ("after_begin", 1):
            proxy.down()
        if (phase, number) == ("after_commit", 1):
            proxy.up.set()

    result = DlqReprocessor(spec, _fast_retries(d["config"]), kafka_config=kafka_config, registry=registry,
                            phase_hook=registry_away_for_the_first_transaction).run()
    repairable, bad = len(truth.repairs), len(truth.bad_lines())
    # First pass: every repairable row fails to be written and goes to retry 1; once it is due (and the
    # registry is back) the retry is repaired. Consumed: the DLQ records plus the retry records.
    assert result.passes >= 2
    assert (result.retried, result.repaired, result.parked) == (repairable, repairable, bad - repairable)
    assert result.consumed == bad + repairable
    retries = _outputs(kafka_config, spec.retry_topics[0])
    assert len(retries) == repairable and all(h[RETRY_ATTEMPT] == b"1" for _, h in retries)
    envelope = _decoder(d["registry"]).decode(retries[0][0].value)
    assert envelope["attempts"] == 1 and "Schema Registry did not answer" in envelope["last_error"]
    repaired = [h for _, h in _outputs(kafka_config, spec.repaired_topic) if h.get(OUTCOME) == b"repaired"]
    assert len(repaired) == repairable and all(h[FROM].startswith(spec.retry_topics[0].encode()) for h in repaired)


def test_retries_that_keep_failing_back_off_and_end_parked_after_max_attempts(dead_letters, kafka_config,
                                                                              registry_proxy):
    d = dead_letters
    truth, spec = d["truth"], d["spec"]
    proxy, registry = registry_proxy

    def registry_gone(phase: str, number: int) -> None:
        if (phase, number) == ("after_begin", 1):
            proxy.down()

    config = _fast_retries(d["config"])
    result = DlqReprocessor(spec, config, kafka_config=kafka_config, registry=registry, phase_hook=registry_gone).run()
    repairable, bad = len(truth.repairs), len(truth.bad_lines())
    attempts = config.retry.max_attempts
    assert result.retried == attempts * repairable and result.repaired == 0
    assert result.parked == bad  # the permanent ones at once, the repairable ones after their last attempt
    assert result.consumed == bad + attempts * repairable
    for level, topic in enumerate(spec.retry_topics, start=1):  # one topic per attempt
        assert {h[RETRY_ATTEMPT] for _, h in _outputs(kafka_config, topic)} == {str(level).encode()}
    parked = {h[PARKED_WHY].decode() for _, h in _outputs(kafka_config, spec.parked_topic)}
    assert any(why.startswith(f"still failing after {attempts} attempt(s)") for why in parked)


# Records no dead letter is made of, as a hand or a stray producer writes them: a wire-format header
# naming a schema id the registry does not hold, plain text without the magic byte, a null value.
POISON = [(b"\x00\x00\x00\x00\x63" + b"\x02ab", "schema id 99 is not in the Schema Registry"),
          (b"plain text, no magic byte", "not the wire-format magic byte 0"),
          (None, "the value is null")]


def _write_poison(kafka_config, topic, tag):
    producer = Producer(kafka_config)
    for i, (value, _) in enumerate(POISON):
        producer.produce(topic, value=value, key=f"{tag}-{i}".encode(), headers=[("written-by", tag.encode()),
                                                                                 ("empty", None)])
    assert producer.flush(30) == 0


def test_records_that_are_no_dead_letter_are_parked_as_they_were_and_every_good_one_is_still_repaired_once(
        tmp_path, kafka_config, schema_registry_url, unique_name):
    # Poison before the hour's dead letters (in the DLQ and the first retry topic) and after them.
    d = _ingest_dead_letters(tmp_path, kafka_config, schema_registry_url, unique_name, before_ingest=lambda t: (
        _write_poison(kafka_config, t["dlq"], "before"),
        _write_poison(kafka_config, t["dlq_retry_1"], "retry")))
    spec, truth, registry = d["spec"], d["truth"], d["registry"]
    _write_poison(kafka_config, spec.topic, "after")
    bad = truth.bad_lines()

    result = DlqReprocessor(spec, d["config"], kafka_config=kafka_config, registry=registry).run()
    poison = 3 * len(POISON)
    assert (result.consumed, result.repaired, result.retried, result.parked) == (
        len(bad) + poison, len(truth.repairs), 0, len(bad) - len(truth.repairs) + poison)
    assert result.by_reason["UNDECODABLE"] == {"parked": poison}

    # Every good dead letter is repaired or parked as before, each DLQ record has exactly one outcome.
    decoder = _decoder(registry)
    repaired = {_line_of(h, d["source_id"]): decoder.decode(r.value)
                for r, h in _outputs(kafka_config, spec.repaired_topic) if h.get(OUTCOME) == b"repaired"}
    assert repaired == {line: parse_fields(fields) for line, fields in truth.repairs.items()}
    outcomes = Counter(h[FROM].decode() for topic in (spec.repaired_topic, spec.parked_topic, *spec.retry_topics)
                       for _, h in _outputs(kafka_config, topic) if OUTCOME in h)
    consumed = [coordinates(topic, r.partition, r.offset)
                for topic in (spec.topic, spec.retry_topics[0]) for r in read_topic(kafka_config, topic)]
    assert len(consumed) == result.consumed and outcomes == Counter({where: 1 for where in consumed})

    # The poison is parked as it was: value, key and its own headers, the cause in dlq.parked.why.
    parked = [(decoder.decode(r.value), r, h) for r, h in _outputs(kafka_config, spec.parked_topic)]
    undecodable = {r.key.decode(): (envelope, r, h) for envelope, r, h in parked if envelope["reason"] == "UNDECODABLE"}
    assert sorted(undecodable) == sorted(f"{tag}-{i}" for tag in ("before", "after", "retry") for i in range(3))
    for key, (envelope, record, headers) in undecodable.items():
        value, cause = POISON[int(key[-1])]
        assert envelope["raw"] == (value or b"") and envelope["raw_length"] == len(value or b"")
        assert cause in headers[PARKED_WHY].decode() and cause in envelope["message"]
        assert headers["written-by"] == key.rsplit("-", 1)[0].encode() and headers["empty"] is None
        assert envelope["headers"] == [{"key": "written-by", "value": key.rsplit("-", 1)[0].encode()},
                                       {"key": "empty", "value": None}]
    # ... and archived with its headers.
    archived = [e for uri in result.archived for e in read_archive(uri) if e["reason"] == "UNDECODABLE"]
    assert len(archived) == poison and all(e["headers"][0]["key"] == "written-by" for e in archived)

    again = DlqReprocessor(spec, d["config"], kafka_config=kafka_config, registry=registry).run()
    assert (again.consumed, again.transactions) == (0, 0)


def test_a_killed_run_and_its_retry_leave_exactly_one_outcome_per_dead_letter(dead_letters, kafka_config, tmp_path):
    d = dead_letters
    spec, truth = d["spec"], d["truth"]
    settings = tmp_path / "dlq.yaml"
    raw = (ROOT / "include" / "config" / "dlq.yaml").read_text().replace("batch_records: 2000", "batch_records: 10")
    settings.write_text(raw)
    command = [sys.executable, "-m", "include.dlq", "--config", str(settings), "reprocess", "--dlq", spec.name,
               "--archive", str(tmp_path / "archive"), "--group", spec.group_id,
               "--topic", f"dlq={spec.topic}", "--topic", f"repaired={spec.repaired_topic}",
               "--topic", f"parked={spec.parked_topic}",
               *[arg for i, t in enumerate(spec.retry_topics, start=1) for arg in ("--topic", f"retry{i}={t}")]]
    env = {key: value for key, value in os.environ.items() if key != "AVAZU_DLQ_KILL_AT"}
    for kill in ("2:before_commit", "2:after_begin", "3:after_commit"):
        killed = subprocess.run(command, cwd=ROOT, env={**env, "AVAZU_DLQ_KILL_AT": kill}, capture_output=True,
                                text=True, timeout=180)
        assert killed.returncode == -9, killed.stderr[-2000:]
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert finished.returncode == 0, finished.stderr[-3000:]

    # read_committed, whole topics: each DLQ record has exactly one outcome.
    outcomes = Counter()
    for topic in (spec.repaired_topic, spec.parked_topic, *spec.retry_topics):
        for _, headers in _outputs(kafka_config, topic):
            if OUTCOME in headers:
                outcomes[headers[FROM].decode()] += 1
    dlq_records = read_topic(kafka_config, spec.topic)
    assert len(dlq_records) == len(truth.bad_lines())
    assert outcomes == Counter({coordinates(spec.topic, r.partition, r.offset): 1 for r in dlq_records})
    # The archive holds each parked record once, though aborted attempts wrote objects too.
    archived = [e["source"]["line"] for uri in storage.list_uris(str(tmp_path / "archive"))
                for e in read_archive(uri)]
    assert sorted(archived) == sorted(set(truth.bad_lines()) - set(truth.repairs))
    assert json.loads(finished.stdout.strip().splitlines()[-1])["dlq"] == spec.name


def test_stream_dead_letters_are_parked_and_archived_as_they_were_sent(kafka_config, schema_registry_url,
                                                                      unique_name, tmp_path):
    registry = registry_client(schema_registry_url)
    admin = AdminClient(kafka_config)
    dlq, parked = unique_name("analytics-dlq"), unique_name("analytics-parked")
    provision_sandbox(admin, registry, {"analytics_dlq": dlq, "analytics_parked": parked})
    producer = Producer(kafka_config)
    values = [b'{"user_id": "u1"}', b"not json at all", b"\xff\xfe binary"]
    for i, value in enumerate(values):
        producer.produce(dlq, value=value, key=f"k{i}".encode(), headers=[
            ("trace", b"t"), ("dlq.error.class", b"MissingField"), ("dlq.error.message", b"web event has no 'page'"),
            ("dlq.source.topic", b"web-events"), ("dlq.source.partition", b"1"), ("dlq.source.offset", str(i).encode()),
            ("dlq.processor", b"analytics_processor"), ("dlq.failed.at", b"2026-11-30T10:00:00.000+00:00")])
    assert producer.flush(30) == 0
    config = dataclasses.replace(load_dlq_config(), archive_uri=str(tmp_path / "archive"))
    spec = config.dlq(topic_for("analytics_dlq")).sandboxed({"dlq": dlq, "parked": parked}, group_id=unique_name("g"))
    result = DlqReprocessor(spec, config, kafka_config=kafka_config, registry=registry).run()
    assert (result.consumed, result.parked, result.by_reason) == (3, 3, {"MissingField": {"parked": 3}})
    archived = [e for uri in result.archived for e in read_archive(uri)]
    assert [e["raw"] for e in archived] == values
    assert {e["stage"] for e in archived} == {"stream:analytics_processor"}
    envelope = _decoder(registry).decode(read_topic(kafka_config, parked)[0].value)
    assert envelope["source"] == {"uri": "kafka://web-events/1", "line": 0, "hour": None, "chunk": None}
    assert load_dlq_schema()["name"] == "DlqEnvelope"


def test_stream_records_without_dlq_headers_are_parked_undecodable_among_good_ones(kafka_config, schema_registry_url,
                                                                                 unique_name, tmp_path):
    registry = registry_client(schema_registry_url)
    dlq, parked = unique_name("analytics-dlq"), unique_name("analytics-parked")
    provision_sandbox(AdminClient(kafka_config), registry, {"analytics_dlq": dlq, "analytics_parked": parked})
    producer = Producer(kafka_config)
    good = [("dlq.error.class", b"WrongType"), ("dlq.error.message", b"amount is not a number")]
    sent = [(b'{"amount": "x"}', good), (None, [("written-by", b"hand")]), (b"\x00\x00\x00\x00\x63", []),
            (b'{"amount": "y"}', good)]
    for i, (value, headers) in enumerate(sent):
        producer.produce(dlq, value=value, key=f"k{i}".encode(), headers=headers)
    assert producer.flush(30) == 0
    config = dataclasses.replace(load_dlq_config(), archive_uri=str(tmp_path / "archive"))
    spec = config.dlq(topic_for("analytics_dlq")).sandboxed({"dlq": dlq, "parked": parked}, group_id=unique_name("g"))
    result = DlqReprocessor(spec, config, kafka_config=kafka_config, registry=registry).run()
    assert (result.consumed, result.parked) == (4, 4)
    assert result.by_reason == {"WrongType": {"parked": 2}, "UNDECODABLE": {"parked": 2}}
    by_key = {r.key: (_decoder(registry).decode(r.value), dict(r.headers)) for r in read_topic(kafka_config, parked)}
    assert by_key[b"k1"][0]["reason"] == "UNDECODABLE" and by_key[b"k1"][0]["raw"] == b""
    assert by_key[b"k1"][1]["written-by"] == b"hand" and b"no dlq.* headers" in by_key[b"k1"][1][PARKED_WHY]
    assert by_key[b"k2"][0]["raw"] == b"\x00\x00\x00\x00\x63"


def test_a_10_mb_line_no_longer_blocks_its_hour(tmp_path, kafka_config, schema_registry_url, unique_name):
    """The line is read past, dead-lettered with its first 64 KiB, and the hour's good rows all arrive."""
    from include.avazu.lines import KEPT_LINE_BYTES

    source = tmp_path / "train.csv"
    truth = generate(GeneratorSpec(3_000, hours=1, seed=31), source)
    lines = source.read_bytes().split(b"\n")
    giant = b"1" * (10 * 1024 * 1024)
    source.write_bytes(b"\n".join([*lines[:1500], giant, *lines[1500:]]))
    stage_source(str(source), str(tmp_path / "staging"))
    registry = registry_client(schema_registry_url)
    topics = IngestTopics(unique_name("raw"), unique_name("dlq"), unique_name("ckpt"))
    provision_ingest_topics(AdminClient(kafka_config), registry, topics)
    config = load_ingest_config().with_topics(topics).replace("test", chunk_rows=1_000)
    partition = find_partition(str(tmp_path / "staging"), HOUR)
    result = HourlyIngestor(partition, config=config, kafka_config=kafka_config, registry=registry).run()
    assert result.complete and (result.rows_read, result.rows_produced, result.rows_dead_lettered) == (
        truth.rows + 1, truth.rows, 1)
    [dead] = read_topic(kafka_config, topics.dlq)
    envelope = _decoder(registry).decode(dead.value)
    assert envelope["source"]["line"] == 1501 and envelope["raw"] == giant[:KEPT_LINE_BYTES]
    assert len(dead.value) < 1_000_000  # fits the DLQ topic's max.message.bytes

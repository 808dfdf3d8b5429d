"""Which partitions brokers that do not answer leave short of in-sync replicas, and the sentence that says so."""

from __future__ import annotations

import socket
from types import SimpleNamespace

from include.kafka.replicas import broker_answers, short_partitions


def _partition(pid: int, leader: int, isrs: list[int]) -> SimpleNamespace:
    return SimpleNamespace(id=pid, leader=leader, isrs=isrs)


# Metadata from the one survivor of a three-node cluster whose quorum is lost: it still lists the
# other two as leaders and in sync.
RAW = [_partition(0, 2, [2, 3, 1]), _partition(1, 3, [3, 1, 2]), _partition(2, 1, [1, 2, 3])]


def test_two_of_three_down_leave_every_partition_short_and_the_sentence_names_brokers_and_partitions():
    down = {1: "127.0.0.1:19092", 3: "127.0.0.1:19292"}
    shortage = short_partitions({"ad_events_raw": RAW, "ingest_checkpoints": [_partition(0, 2, [2, 1])]}, down,
                                {"ad_events_raw": 2, "ingest_checkpoints": 2})
    assert shortage.partitions == {"ad_events_raw": [0, 1, 2], "ingest_checkpoints": [0]}
    assert shortage.in_sync == {"ad_events_raw": 1, "ingest_checkpoints": 1}
    assert shortage.sentence() == (
        "too few in-sync replicas: ad_events_raw partition(s) 0, 1, 2 have 1 answering in-sync replica(s) where "
        "min.insync.replicas is 2; ingest_checkpoints partition(s) 0 have 1 answering in-sync replica(s) where "
        "min.insync.replicas is 2; broker(s) 1 at 127.0.0.1:19092, 3 at 127.0.0.1:19292 do not answer, "
        "so acks=all writes wait until they return")


def test_one_of_three_down_is_no_shortage_once_its_partitions_have_new_leaders():
    assert short_partitions({"ad_events_raw": [_partition(0, 2, [2, 3]), _partition(1, 3, [3, 2])]},
                            {1: "127.0.0.1:19092"}, {"ad_events_raw": 2}) is None


def test_a_killed_leader_with_enough_replicas_still_in_sync_is_an_election_not_a_shortage():
    # The metadata a moment after the leader of partition 0 died: it is still named leader and in sync.
    assert short_partitions({"t": [_partition(0, 1, [1, 2, 3]), _partition(1, 2, [2, 3])]},
                            {1: "127.0.0.1:19092"}, {"t": 2}) is None
    shortage = short_partitions({"t": [_partition(0, 1, [1, 2]), _partition(1, 2, [2, 3])]},
                                {1: "127.0.0.1:19092"}, {"t": 2})
    assert shortage.partitions == {"t": [0]} and shortage.in_sync == {"t": 1}


def test_a_topic_whose_config_did_not_come_back_needs_one_replica():
    assert short_partitions({"t": [_partition(0, 2, [2])]}, {1: "127.0.0.1:1"}, {}) is None


def test_broker_answers_is_a_tcp_connect():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"127.0.0.1:{server.getsockname()[1]}"
        assert broker_answers(address)
    assert not broker_answers(address)
    assert not broker_answers("not-an-address")

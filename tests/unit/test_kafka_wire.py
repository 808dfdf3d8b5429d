"""The Confluent wire format codec, without a broker or registry."""

from __future__ import annotations

import json
import struct
from collections import Counter

import pytest

from include.kafka.wire import AvroDecoder, AvroEncoder, WireFormatError, load_schema, split_header

SCHEMA = {
    "type": "record", "name": "R", "namespace": "t",
    "fields": [{"name": "a", "type": "long"}, {"name": "b", "type": ["null", "string"], "default": None}],
}


def test_encoded_payload_has_magic_byte_and_schema_id():
    payload = AvroEncoder(SCHEMA, 4242).encode({"a": 1, "b": "x"})
    assert payload[0] == 0
    assert struct.unpack(">I", payload[1:5])[0] == 4242
    assert split_header(payload)[0] == 4242


def test_round_trip_and_one_schema_lookup_per_id():
    lookups = []

    def fetch(schema_id):
        lookups.append(schema_id)
        return json.dumps(SCHEMA)

    encoder, decoder = AvroEncoder(SCHEMA, 7), AvroDecoder(fetch)
    records = [{"a": i, "b": None if i % 2 else str(i)} for i in range(50)]
    assert [decoder.decode(encoder.encode(r)) for r in records] == records
    assert lookups == [7]


@pytest.mark.parametrize("payload, message", [
    (b"", "shorter"), (b"\x00\x00", "shorter"), (b"\x01\x00\x00\x00\x01\x02", "magic byte"),
])
def test_bad_payloads_are_rejected_with_a_reason(payload, message):
    with pytest.raises(WireFormatError, match=message):
        split_header(payload)


def test_load_schema_names_the_file(tmp_path):
    bad = tmp_path / "bad.avsc"
    bad.write_text('{"type": "record", "name": "X", "fields": [{"name": "a", "type": "nope"}]}')
    with pytest.raises(WireFormatError, match="bad.avsc is not valid Avro"):
        load_schema(bad)
    with pytest.raises(WireFormatError, match="does not exist"):
        load_schema(tmp_path / "missing.avsc")


def test_an_int_field_is_read_by_stepping_over_the_primitives_before_it_exactly_as_fastavro_decodes_it():
    from include.kafka.wire import AvroDecoder, AvroEncoder, int_field_reader

    schema = {"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "string"}, {"name": "blob", "type": "bytes"}, {"name": "ok", "type": "boolean"},
        {"name": "ratio", "type": "float"}, {"name": "weight", "type": "double"}, {"name": "n", "type": "long"},
        {"name": "hour", "type": "int"}, {"name": "tail", "type": ["null", "string"], "default": None}]}
    encoder, decoder = AvroEncoder(schema, 7), AvroDecoder(lambda i: schema)
    read = int_field_reader(schema, "hour")
    for record in ({"id": "", "blob": b"", "ok": False, "ratio": 0.0, "weight": 0.0, "n": 0, "hour": 0, "tail": None},
                   {"id": "é" * 300, "blob": b"\x00" * 200, "ok": True, "ratio": 1.5, "weight": -2.25,
                    "n": -(2**62), "hour": 14103023, "tail": "x"},
                   {"id": "x", "blob": b"y", "ok": True, "ratio": 3.0, "weight": 1e300, "n": 2**62, "hour": -5,
                    "tail": None}):
        payload = encoder.encode(record)
        assert read(payload) == decoder.decode(payload)["hour"] == record["hour"]
    # A union (or any non-primitive) before the field: no stepping over, the caller decodes instead.
    unioned = {**schema, "fields": [schema["fields"][-1], *schema["fields"][:-1]]}
    assert int_field_reader(unioned, "hour") is None
    assert int_field_reader(schema, "id") is None and int_field_reader(schema, "missing") is None


def test_the_c_codec_counts_an_int_field_as_the_python_reader_reads_it_and_leaves_the_rest_to_it():
    import avazu_rowcodec

    from include.kafka.wire import AvroEncoder, int_field_reader, int_field_steps, wire_header

    schema = {"type": "record", "name": "R", "fields": [
        {"name": "id", "type": "string"}, {"name": "blob", "type": "bytes"}, {"name": "ok", "type": "boolean"},
        {"name": "ratio", "type": "float"}, {"name": "weight", "type": "double"}, {"name": "n", "type": "long"},
        {"name": "hour", "type": "int"}]}
    steps = int_field_steps(schema, "hour")
    assert steps == "ss148v"
    encoder, read = AvroEncoder(schema, 7), int_field_reader(schema, "hour")
    payloads = [encoder.encode({"id": "é" * (i % 90), "blob": b"\x01" * (i % 200), "ok": i % 2 == 0, "ratio": i / 3,
                                "weight": -i * 1e10, "n": (-1) ** i * 7 ** (i % 22), "hour": 14102100 + i % 5 - 2 * (i % 2)})
                for i in range(1000)]
    other_schema = AvroEncoder(schema, 8).encode({"id": "x", "blob": b"", "ok": True, "ratio": 0.0, "weight": 0.0,
                                                  "n": 0, "hour": 1})
    odd = [other_schema, payloads[0][:9], None, b""]
    counts, declined = avazu_rowcodec.int_field_counts(payloads + odd, wire_header(7), steps)
    assert counts == dict(Counter(map(read, payloads)))
    assert declined == [1000, 1001, 1002, 1003]
    assert avazu_rowcodec.int_field_counts([], b"\x00\x00\x00\x00\x07", "") == ({}, [])
    with pytest.raises(ValueError, match="step 'x' is not one of v, s, 1, 4, 8"):
        avazu_rowcodec.int_field_counts(payloads, b"", "vx")


def test_the_hour_reader_counts_a_batch_the_same_with_and_without_the_c_codec(monkeypatch):
    from include.health.hours import HourReader
    from include.kafka.wire import AvroEncoder, load_schema
    from include.paths import SCHEMAS_DIR

    schema = load_schema(SCHEMAS_DIR / "ad_event.avsc")
    # A later version with a union first: the hour is decoded, not stepped to.
    unioned = {**schema, "fields": [{"name": "extra", "type": ["null", "int"], "default": None}, *schema["fields"]]}
    schemas = {1: schema, 2: unioned}
    row = {field["name"]: field.get("default") for field in schema["fields"]}
    row.update(id="10000174058809263569", click=1, C1=1005, banner_pos=0, device_type=1, device_conn_type=0)
    for name in ("site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
                 "device_id", "device_ip", "device_model"):
        row[name] = "1fbe01fe"
    for name in ("C14", "C15", "C16", "C17", "C18", "C19", "C20", "C21"):
        row[name] = 100
    payloads = [AvroEncoder(schemas[1 + (i % 7 == 0)], 1 + (i % 7 == 0)).encode({**row, "hour": 14102100 + i % 24})
                for i in range(500)]
    fetch = lambda schema_id: json.dumps(schemas[schema_id])  # noqa: E731
    expected = Counter(14102100 + i % 24 for i in range(500))

    assert HourReader(fetch).count(payloads) == expected
    assert HourReader(fetch).count(payloads[1:]) == expected - Counter([14102100])  # a batch led by version 2
    without = HourReader(fetch)
    monkeypatch.setattr(without, "_counts", None)
    assert without.count(payloads) == expected
    assert HourReader(fetch).count([]) == Counter()

"""The Confluent wire format codec, without a broker or registry."""

from __future__ import annotations

import json
import struct

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

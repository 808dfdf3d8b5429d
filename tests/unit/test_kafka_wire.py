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

"""The partition key of a good row and the generated Avro encoder (checked byte for byte against fastavro)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import fastavro
import pytest

from include.avazu.contract import EXAMPLE_LINE, PLACEHOLDER_DEVICE_ID, avro_schema, parse_line
from include.avazu.generator import GeneratorSpec, generate
from include.avazu.reader import read_all
from include.encoding.rows import (
    AdEventEncoder,
    SchemaMismatchError,
    load_ad_event_schema,
    partition_key,
)
from include.kafka.wire import split_header

SCHEMA = avro_schema()
PARSED = fastavro.parse_schema(SCHEMA)


def _fastavro_body(record: dict) -> bytes:
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, PARSED, record)
    return buffer.getvalue()


def _example(**changes) -> dict:
    record = parse_line(EXAMPLE_LINE)
    assert isinstance(record, dict)
    record.update(changes)
    return record


@pytest.fixture(scope="module")
def generated_records(tmp_path_factory) -> list[dict]:
    path = tmp_path_factory.mktemp("rows") / "rows.csv.gz"
    generate(GeneratorSpec(20_000, hours=3, seed=5), path)
    records, bad, _ = read_all(str(path))
    assert not bad
    return records


def test_key_is_the_device_id_when_it_names_a_device():
    assert partition_key(_example(device_id="1f0bc64f", device_ip="ddd2926e")) == "1f0bc64f"


def test_key_falls_back_to_the_ip_for_the_unknown_device_placeholder():
    # The placeholder is on ~80% of the rows: keying by it would put them all in one partition.
    assert partition_key(_example(device_id=PLACEHOLDER_DEVICE_ID, device_ip="ddd2926e")) == "ip:ddd2926e"
    assert partition_key(_example(device_id=None, device_ip="ddd2926e")) == "ip:ddd2926e"


def test_key_falls_back_to_the_row_id_when_there_is_no_device_and_no_ip():
    record = _example(device_id=None, device_ip=None)
    assert partition_key(record) == "id:" + record["id"]


def test_placeholder_rows_spread_over_many_keys(generated_records):
    keys = [partition_key(r) for r in generated_records]
    placeholder_share = sum(r["device_id"] == PLACEHOLDER_DEVICE_ID for r in generated_records) / len(generated_records)
    assert placeholder_share > 0.7
    # No single key carries more than a sliver of the rows.
    top = max(keys.count(k) for k in set(keys[:500]))
    assert top < 0.02 * len(keys)


def test_encoder_matches_fastavro_byte_for_byte_on_generated_rows(generated_records):
    encoder = AdEventEncoder(schema_id=123)
    for record in generated_records:
        payload = encoder.encode(record)
        schema_id, body = split_header(payload)
        assert schema_id == 123
        assert bytes(body) == _fastavro_body(record)
    assert encoder.slow_path_rows == 0


@pytest.mark.parametrize("changes", [
    {"C1": None, "banner_pos": None, "C20": -1, "C21": 2**31 - 1},
    {"site_id": None, "app_id": None, "device_id": None, "device_ip": None, "device_model": None},
    {"id": "0"},
    {"id": "18446744073709551615"},
    {"device_model": "x" * 70},  # a two-byte length prefix
    {"device_model": "y" * 5000},
    {"C14": -1, "C15": 0, "C16": 63, "C17": 64, "C18": 8191, "C19": 8192},
])
def test_encoder_matches_fastavro_on_edge_values(changes):
    record = _example(**changes)
    body = split_header(AdEventEncoder(7).encode(record))[1]
    assert bytes(body) == _fastavro_body(record)


@pytest.mark.parametrize("model", ["caf\u00e9", "\u65e5\u672c", "Ä" * 80])
def test_non_ascii_text_goes_through_fastavro(model):
    # Lengths count UTF-8 bytes, not characters: the generated path must not take these rows.
    encoder = AdEventEncoder(7)
    record = _example(device_model=model)
    body = split_header(encoder.encode(record))[1]
    assert bytes(body) == _fastavro_body(record)
    assert fastavro.schemaless_reader(io.BytesIO(bytes(body)), PARSED) == record
    assert encoder.slow_path_rows == 1


def test_schema_file_matches_the_contract():
    assert load_ad_event_schema()["name"] == "AdEvent"


def test_a_schema_that_drifted_from_the_contract_is_refused(tmp_path: Path):
    drifted = json.loads(json.dumps(SCHEMA))
    drifted["fields"][3]["type"] = ["null", "long"]  # still valid Avro, no longer the contract
    with pytest.raises(SchemaMismatchError, match="C1"):
        AdEventEncoder(1, drifted)
    path = tmp_path / "ad_event.avsc"
    path.write_text(json.dumps(drifted))
    with pytest.raises(SchemaMismatchError, match=str(path)):
        load_ad_event_schema(path)

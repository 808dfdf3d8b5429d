"""Avro in the Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the Avro body.

confluent-kafka's AvroSerializer does the same per record through several layers of calls; bulk
ingestion encodes millions of rows, so this module keeps the hot path to one fastavro call and a
prefix. Records written here are read by any Confluent-compatible deserializer and vice versa
(the integration tests check both directions).
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import fastavro

from include.errors import PermanentError

MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")


class WireFormatError(PermanentError, ValueError):
    """A payload that is not Avro in the Confluent wire format."""


def load_schema(path: str | Path) -> dict[str, Any]:
    """Read an .avsc file and check it is valid Avro; the error names the file."""
    path = Path(path)
    try:
        schema = json.loads(path.read_text())
        fastavro.parse_schema(schema)
    except FileNotFoundError:
        raise WireFormatError(f"schema file {path} does not exist") from None
    except (ValueError, fastavro.schema.SchemaParseException) as error:
        raise WireFormatError(f"schema file {path} is not valid Avro: {error}") from None
    return schema


def wire_header(schema_id: int) -> bytes:
    """The 5 bytes every wire-format payload of ``schema_id`` starts with."""
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def split_header(payload: bytes) -> tuple[int, memoryview]:
    """Return (schema id, Avro body) of a wire-format payload."""
    if payload is None or len(payload) < _HEADER.size:
        raise WireFormatError("payload is shorter than the 5-byte wire-format header")
    magic, schema_id = _HEADER.unpack_from(payload)
    if magic != MAGIC_BYTE:
        raise WireFormatError(f"payload starts with byte {magic}, not the wire-format magic byte 0")
    return schema_id, memoryview(payload)[_HEADER.size:]


@dataclass
class AvroEncoder:
    """Encodes records of one registered schema into wire-format payloads."""

    schema: dict[str, Any]
    schema_id: int
    _parsed: Any = field(init=False, repr=False)
    _header: bytes = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._parsed = fastavro.parse_schema(self.schema)
        self._header = wire_header(self.schema_id)

    def encode(self, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self._header)
        fastavro.schemaless_writer(buffer, self._parsed, record)
        return buffer.getvalue()


class AvroDecoder:
    """Decodes wire-format payloads of any schema id, looking schemas up once each.

    ``fetch_schema`` maps a schema id to the Avro schema as a JSON string or dict; with the
    registry it is ``include.kafka.registry.schema_fetcher(client)``.
    """

    def __init__(self, fetch_schema: Callable[[int], str | dict], reader_schema: dict | None = None):
        self._fetch = fetch_schema
        self._reader = fastavro.parse_schema(reader_schema) if reader_schema else None
        self._writers: dict[int, Any] = {}

    def schema_for(self, schema_id: int) -> Any:
        parsed = self._writers.get(schema_id)
        if parsed is None:
            raw = self._fetch(schema_id)
            parsed = fastavro.parse_schema(json.loads(raw) if isinstance(raw, str) else raw)
            self._writers[schema_id] = parsed
        return parsed

    def know(self, schema_id: int, schema: dict[str, Any]) -> None:
        """Read ``schema_id`` with ``schema`` without asking the registry (a schema this code registered)."""
        self._writers[schema_id] = fastavro.parse_schema(schema)

    def decode(self, payload: bytes) -> dict[str, Any]:
        schema_id, body = split_header(payload)
        writer = self.schema_for(schema_id)
        return fastavro.schemaless_reader(io.BytesIO(body), writer, self._reader)


# Avro primitives whose encoding can be stepped over without a schema library: how many bytes
# they take is in the first bytes (a zig-zag varint length) or fixed. Their step codes (see
# int_field_steps): 'v' a varint, 's' a varint length and that many bytes, a digit that many bytes.
_VARINTS = {"int", "long"}


def _primitive(field_type: Any) -> str | None:
    if isinstance(field_type, dict) and "logicalType" not in field_type:
        field_type = field_type.get("type")
    return field_type if isinstance(field_type, str) else None


_STEP_CODES = {"int": "v", "long": "v", "string": "s", "bytes": "s", "boolean": "1", "float": "4", "double": "8"}


def int_field_steps(writer_schema: dict[str, Any], name: str) -> str | None:
    """How to step to the int/long field ``name`` of a record: one code per field before it ('v' a
    varint, 's' length-prefixed, '1'/'4'/'8' that many bytes), or None when a field before it is
    not a primitive (a union, a record, ...) or ``name`` is not an int/long field."""
    steps = ""
    for column in writer_schema.get("fields", []):
        kind = _primitive(column["type"])
        if column["name"] == name:
            return steps if kind in _VARINTS else None
        if kind not in _STEP_CODES:
            return None
        steps += _STEP_CODES[kind]
    return None


def int_field_reader(writer_schema: dict[str, Any], name: str) -> Callable[[bytes], int] | None:
    """A reader of one int/long field of a wire-format payload that decodes nothing else, or None.

    Only for a record whose fields before ``name`` are all primitives (strings, numbers, booleans):
    those are stepped over by their lengths (:func:`int_field_steps`), which is about ten times
    faster than decoding the record. Any other layout gives None: decode it with
    :class:`AvroDecoder` instead.
    """
    steps = int_field_steps(writer_schema, name)
    if steps is None:
        return None

    def varint(data: bytes, at: int) -> tuple[int, int]:
        shift = result = 0
        while True:
            byte = data[at]
            at += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return (result >> 1) ^ -(result & 1), at
            shift += 7

    def read(payload: bytes) -> int:
        at = 5  # the wire header: magic byte and schema id
        for code in steps:
            if code == "v":
                at = varint(payload, at)[1]
            elif code == "s":
                length, at = varint(payload, at)
                at += length
            else:
                at += int(code)
        return varint(payload, at)[0]

    return read

"""Good rows on their way to ``ad_events_raw``: the partition key and the Avro wire-format value.

The key
    ``device_id`` - Avazu has millions of devices, so hashing the key spreads the load evenly over
    the partitions, and every event of one device lands in one partition, in file order, which is
    what per-device consumers (frequency capping, sessions, per-user CTR) need. But
    ``a99f214a`` is not a device: it is the value Avazu writes when the device id is unknown, and
    it is on about 80% of the rows. Keying those rows by it would send four fifths of the data to
    one partition and leave the others idle. For them the key is ``ip:<device_ip>`` instead - the
    best proxy for "the same device" the row has, and it has millions of values too. A row with
    neither (both are nullable) is keyed ``id:<id>``: it cannot be grouped with anything, so it
    only needs to spread. The prefixes keep the three kinds of key apart for anyone grouping by key.

The value
    Avro in the Confluent wire format (magic byte, schema id, body) with the schema registered
    for the topic. :class:`AdEventEncoder` writes the Avro body with code generated once from the
    contract's columns: the schema is fixed and flat, so each field is a cached varint, a length
    prefix plus the text, or a null marker, joined in one call. That is about five times faster
    than a generic encoder per row, which matters at 40 million rows; the unit tests check it
    byte for byte against fastavro, and any row it cannot take the fast way (non-ASCII text) goes
    through fastavro instead.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from operator import itemgetter
from typing import Any, Callable

import fastavro

from include.avazu.contract import COLUMNS, PLACEHOLDER_DEVICE_ID, Column, Kind, avro_schema
from include.errors import PermanentError
from include.kafka.wire import load_schema, wire_header
from include.paths import SCHEMAS_DIR

AD_EVENT_SCHEMA_PATH = SCHEMAS_DIR / "ad_event.avsc"


def partition_key(record: dict[str, Any]) -> str:
    """The Kafka key of a good row: its device, or its IP when the device is unknown (see module doc)."""
    device = record["device_id"]
    if device is not None and device != PLACEHOLDER_DEVICE_ID:
        return device
    ip = record["device_ip"]
    if ip is not None:
        return "ip:" + ip
    return "id:" + record["id"]


class SchemaMismatchError(PermanentError, ValueError):
    """The schema file the registry holds no longer matches the contract the encoder is built from."""


def zigzag_varint(value: int) -> bytes:
    """Avro's zigzag varint of an int or long."""
    n = (value << 1) ^ (value >> 63)
    out = []
    while n & ~0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _zigzag_varint(value: int) -> str:
    # As a latin-1 string (one char per byte), the form the generated encoder joins.
    return zigzag_varint(value).decode("latin-1")


class _VarintCache(dict):
    """int -> encoded field; Avazu's integer columns hold a few thousand values, so this stays small.

    ``prefix`` is the union branch marker of nullable columns. The size cap keeps memory bounded
    whatever the input.
    """

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def __missing__(self, value: int) -> str:
        encoded = self.prefix + _zigzag_varint(value)
        if len(self) < 100_000:
            self[value] = encoded
        return encoded


class NotAsciiText(Exception):
    """A text field the generated encoder cannot length-prefix by character count (use ``encode``)."""


# Avro length prefixes of texts shorter than this many bytes come from a table (the batch
# encoders use the same one); longer texts are rare and computed.
TABLED_LENGTHS = 1024
LENGTH_PREFIXES = [zigzag_varint(n) for n in range(TABLED_LENGTHS)]
_LENGTH_PREFIX = [prefix.decode("latin-1") for prefix in LENGTH_PREFIXES]


def _text_prefix(value: str) -> str:
    # Length prefixes count bytes; for ASCII text a character is a byte.
    if not value.isascii():
        raise NotAsciiText
    n = len(value)
    return _LENGTH_PREFIX[n] if n < TABLED_LENGTHS else _zigzag_varint(n)


def _field_expression(column: Column, value: str) -> str:
    """Python source for one column's encoded field, given the name of the local holding its value."""
    null, branch = "'\\x00'", "'\\x02'"  # union index 0 (null) and 1 (the value), zigzag-encoded
    if column.kind in (Kind.INT, Kind.HOUR):
        return f"OPT_INT[{value}]" if column.nullable else f"REQ_INT[{value}]"
    if column.kind is Kind.HEX8:
        # The contract guarantees exactly 8 lower-case hex digits: length prefix 8 -> '\x10'.
        return f"({branch} '\\x10' + {value} if {value} is not None else {null})" if column.nullable else f"('\\x10' + {value})"
    if column.kind is Kind.UINT64:
        # Decimal digits only, at most 20 of them, so always ASCII and a one-byte length prefix.
        encoded = f"PREFIX[len({value})] + {value}"
    else:
        # Inline for the usual short ASCII text; anything else goes through TEXT_PREFIX, which
        # raises NotAsciiText for non-ASCII (a length prefix counts bytes, not characters).
        encoded = f"(PREFIX[len({value})] if {value}.isascii() and len({value}) < {TABLED_LENGTHS} else TEXT_PREFIX({value})) + {value}"
    return f"({branch} + {encoded} if {value} is not None else {null})" if column.nullable else f"({encoded})"


def _compile_fast_encoder(header: str) -> Callable[[dict[str, Any]], bytes]:
    """Build ``encode(record) -> bytes`` for the contract's columns (raises NotAsciiText when it cannot).

    The values are fetched with one ``itemgetter`` call (a C loop) into locals, so the generated
    code does not depend on the order of the record's keys.
    """
    names = [f"v{i}" for i in range(len(COLUMNS))]
    fields = ",\n        ".join(_field_expression(c, v) for c, v in zip(COLUMNS, names))
    source = (
        "def encode(r):\n"
        f"    {', '.join(names)} = VALUES(r)\n"
        f"    return ''.join((HEADER,\n        {fields},\n    )).encode('latin-1')\n"
    )
    namespace = {
        "VALUES": itemgetter(*(c.name for c in COLUMNS)),
        "HEADER": header,
        "OPT_INT": _VarintCache("\x02"),
        "REQ_INT": _VarintCache(""),
        "PREFIX": _LENGTH_PREFIX,
        "TEXT_PREFIX": _text_prefix,
    }
    namespace["OPT_INT"][None] = "\x00"
    exec(compile(source, "<AdEventEncoder>", "exec"), namespace)  # noqa: S102 - source built from COLUMNS only
    return namespace["encode"]


def _shape(schema: dict[str, Any]) -> list[tuple]:
    return [(f["name"], json.dumps(f["type"], sort_keys=True), json.dumps(f.get("default", "<none>"))) for f in schema["fields"]]


def check_schema_matches_contract(schema: dict[str, Any], where: str = "the AdEvent schema") -> None:
    """Raise :class:`SchemaMismatchError` unless ``schema`` has the contract's fields, types and defaults."""
    expected, found = _shape(avro_schema()), _shape(schema)
    if expected != found:
        differing = [e[0] for e, f in zip(expected, found) if e != f] or ["the number of fields"]
        raise SchemaMismatchError(
            f"{where} differs from the Avazu row contract at {', '.join(differing[:5])}; "
            "regenerate schemas/ad_event.avsc from include.avazu.contract.avro_schema() and provision it")


class AdEventEncoder:
    """Typed Avazu records -> Confluent wire-format payloads of one registered schema id."""

    def __init__(self, schema_id: int, schema: dict[str, Any] | None = None):
        schema = schema if schema is not None else avro_schema()
        check_schema_matches_contract(schema)
        self.schema_id = schema_id
        self._header = wire_header(schema_id)
        self._parsed = fastavro.parse_schema(schema)
        self._fast = _compile_fast_encoder(self._header.decode("latin-1"))
        self.slow_path_rows = 0

    @property
    def header(self) -> bytes:
        """The wire-format header every payload starts with: magic byte and schema id."""
        return self._header

    def encode(self, record: dict[str, Any]) -> bytes:
        """The wire-format payload of one typed record (as :func:`parse_line` returns it)."""
        try:
            return self._fast(record)
        except NotAsciiText:
            return self._encode_with_fastavro(record)

    def _encode_with_fastavro(self, record: dict[str, Any]) -> bytes:
        self.slow_path_rows += 1
        buffer = io.BytesIO()
        buffer.write(self._header)
        fastavro.schemaless_writer(buffer, self._parsed, record)
        return buffer.getvalue()


def load_ad_event_schema(path: str | Path = AD_EVENT_SCHEMA_PATH) -> dict[str, Any]:
    """The AdEvent schema file, checked against the contract."""
    schema = load_schema(path)
    check_schema_matches_contract(schema, where=str(path))
    return schema

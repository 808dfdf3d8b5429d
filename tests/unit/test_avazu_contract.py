"""The Avazu row contract: columns, typed parsing, bad-row reasons, hours, Avro schema."""

from __future__ import annotations

import io
import random
from datetime import datetime, timedelta, timezone

import fastavro
import pytest

from include.avazu.contract import (
    AVAZU_HOURS,
    COLUMN_NAMES,
    EXAMPLE_LINE,
    HEADER_LINE,
    UINT64_MAX,
    Reason,
    RowError,
    _parse_fields_slow,
    avro_schema,
    datetime_to_hour,
    hour_to_datetime,
    hour_to_epoch_ms,
    parse_fields,
    parse_line,
)
from tests.mutations import mutated_lines

EXPECTED_COLUMNS = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
    "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
).split(",")


def _with(column: str, value: str) -> str:
    fields = EXAMPLE_LINE.split(",")
    fields[COLUMN_NAMES.index(column)] = value
    return ",".join(fields)


def test_columns_are_the_avazu_header_in_order():
    assert list(COLUMN_NAMES) == EXPECTED_COLUMNS
    assert HEADER_LINE == ",".join(EXPECTED_COLUMNS)


def test_a_real_row_parses_to_typed_values():
    record = parse_line(EXAMPLE_LINE)
    assert list(record) == EXPECTED_COLUMNS
    assert record["id"] == "10000169349117863715"  # above 2^63: kept exactly, as text
    assert int(record["id"]) > 2**63
    assert (record["click"], record["hour"], record["C1"], record["banner_pos"]) == (
        0,
        14102100,
        1005,
        0,
    )
    assert record["site_id"] == "1fbe01fe" and record["device_model"] == "44956a24"
    assert (record["device_type"], record["C20"], record["C21"]) == (1, -1, 79)


@pytest.mark.parametrize(
    "line, reason, field",
    [
        (EXAMPLE_LINE + ",1", Reason.FIELD_COUNT, None),
        (EXAMPLE_LINE.rsplit(",", 1)[0], Reason.FIELD_COUNT, None),
        ("", Reason.FIELD_COUNT, None),
        (_with("id", ""), Reason.EMPTY_REQUIRED, "id"),
        (_with("click", ""), Reason.EMPTY_REQUIRED, "click"),
        (_with("hour", ""), Reason.EMPTY_REQUIRED, "hour"),
        (_with("id", "abc"), Reason.NOT_INTEGER, "id"),
        (_with("id", "-5"), Reason.NOT_INTEGER, "id"),
        (_with("id", "0123"), Reason.NOT_INTEGER, "id"),
        (_with("id", str(UINT64_MAX + 1)), Reason.OUT_OF_RANGE, "id"),
        (_with("id", "1" * 25), Reason.OUT_OF_RANGE, "id"),
        (_with("click", "2"), Reason.OUT_OF_RANGE, "click"),
        (_with("click", "yes"), Reason.NOT_INTEGER, "click"),
        (_with("C14", "1.5"), Reason.NOT_INTEGER, "C14"),
        (_with("C15", "1_000"), Reason.NOT_INTEGER, "C15"),
        (_with("C16", " 50"), Reason.NOT_INTEGER, "C16"),
        (_with("C17", "+3"), Reason.NOT_INTEGER, "C17"),
        (
            _with("C18", "\u0661"),
            Reason.NOT_INTEGER,
            "C18",
        ),  # an Arabic-Indic digit: int() would take it
        (_with("C20", "-2"), Reason.OUT_OF_RANGE, "C20"),
        (_with("C21", str(2**31)), Reason.OUT_OF_RANGE, "C21"),
        (_with("banner_pos", "256"), Reason.OUT_OF_RANGE, "banner_pos"),
        (_with("device_type", "-1"), Reason.OUT_OF_RANGE, "device_type"),
        (_with("hour", "14103100"), Reason.BAD_HOUR, "hour"),
        (_with("hour", "14102124"), Reason.BAD_HOUR, "hour"),
        (_with("hour", "14109900"), Reason.BAD_HOUR, "hour"),
        (_with("hour", "1410210"), Reason.BAD_HOUR, "hour"),
        (_with("hour", "014102100"), Reason.BAD_HOUR, "hour"),
        (_with("hour", "abcdefgh"), Reason.BAD_HOUR, "hour"),
        (_with("site_id", "1FBE01FE"), Reason.BAD_HEX, "site_id"),
        (_with("device_ip", "ddd2926"), Reason.BAD_HEX, "device_ip"),
        (_with("app_domain", "7801e8dx"), Reason.BAD_HEX, "app_domain"),
    ],
)
def test_bad_rows_get_a_reason_and_the_column(line, reason, field):
    result = parse_line(line)
    assert isinstance(result, RowError)
    assert (result.reason, result.field) == (reason, field)
    assert result.message


def test_the_first_bad_column_is_reported():
    line = _with("C21", "x").replace("14102100", "99999999")
    assert parse_line(line).field == "hour"


@pytest.mark.parametrize(
    "column, value, expected",
    [
        ("id", "0", "0"),
        ("id", str(UINT64_MAX), str(UINT64_MAX)),
        ("id", "18439999999999999999", "18439999999999999999"),
        ("id", "18440000000000000000", "18440000000000000000"),
        ("C1", "0007", 7),
        ("banner_pos", "255", 255),
        ("C14", str(2**31 - 1), 2**31 - 1),
        ("device_model", "Samsung Galaxy S5", "Samsung Galaxy S5"),
        ("hour", "14103023", 14103023),
    ],
)
def test_edge_values_inside_the_contract_are_accepted(column, value, expected):
    assert parse_line(_with(column, value))[column] == expected


@pytest.mark.parametrize(
    "column", [c for c in EXPECTED_COLUMNS if c not in ("id", "click", "hour")]
)
def test_empty_optional_columns_become_none(column):
    record = parse_line(_with(column, ""))
    assert record[column] is None
    assert sum(value is None for value in record.values()) == 1


def test_parse_fields_matches_parse_line_and_rejects_commas_inside_fields():
    assert parse_fields(EXAMPLE_LINE.split(",")) == parse_line(EXAMPLE_LINE)
    fields = EXAMPLE_LINE.split(",")
    fields[5] = "1fbe,01fe"
    result = parse_fields(fields)
    assert (result.reason, result.field) == (Reason.BAD_HEX, "site_id")
    assert parse_fields(fields[:-1]).reason is Reason.FIELD_COUNT


def test_fast_path_and_column_by_column_path_always_agree():
    # Mutate real-looking rows character by character and field by field; the fast path must
    # never accept what the precise path rejects, nor type a value differently.
    rng = random.Random(20141021)
    pool = list("0123456789abcdefABCDEF-+_ .x,\u0661") + [
        "",
        "-1",
        "00",
        "99999999999",
        "18446744073709551616",
    ]
    base_lines = [EXAMPLE_LINE, _with("C20", "100084"), _with("id", "1"), _with("hour", "14103023")]
    for line in mutated_lines(rng, base_lines, pool, 20_000):
        assert parse_line(line) == _parse_fields_slow(line.split(",")), line


def test_hour_conversions_both_ways():
    assert hour_to_datetime(14102100) == datetime(2014, 10, 21, 0, tzinfo=timezone.utc)
    assert hour_to_datetime(14103023) == datetime(2014, 10, 30, 23, tzinfo=timezone.utc)
    assert hour_to_epoch_ms(14102100) == 1413849600000
    assert len(AVAZU_HOURS) == 240
    for a, b in zip(AVAZU_HOURS, AVAZU_HOURS[1:]):
        assert hour_to_datetime(b) - hour_to_datetime(a) == timedelta(hours=1)
    assert [datetime_to_hour(hour_to_datetime(h)) for h in AVAZU_HOURS] == list(AVAZU_HOURS)
    seoul = timezone(timedelta(hours=9))
    assert datetime_to_hour(datetime(2014, 10, 21, 9, 30, tzinfo=seoul)) == 14102100


@pytest.mark.parametrize("hour, message", [(14103100, "outside"), (14102124, "not a valid")])
def test_bad_hours_raise_one_sentence(hour, message):
    with pytest.raises(ValueError, match=message):
        hour_to_datetime(hour)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError, match="aware"):
        datetime_to_hour(datetime(2014, 10, 21))


def test_avro_schema_is_valid_and_round_trips_the_full_id_range():
    schema = avro_schema()
    assert (schema["namespace"], schema["name"]) == ("io.adpipeline.avazu", "AdEvent")
    assert [f["name"] for f in schema["fields"]] == EXPECTED_COLUMNS
    assert all(f["doc"] for f in schema["fields"])
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert types["id"] == "string" and types["click"] == "int" and types["hour"] == "int"
    assert types["site_id"] == ["null", "string"] and types["C21"] == ["null", "int"]
    parsed = fastavro.parse_schema(schema)
    records = [
        parse_line(EXAMPLE_LINE),
        parse_line(_with("id", str(UINT64_MAX))),
        parse_line(_with("site_id", "")),
    ]
    buffer = io.BytesIO()
    fastavro.writer(buffer, parsed, records)
    buffer.seek(0)
    assert list(fastavro.reader(buffer)) == records

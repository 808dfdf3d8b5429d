"""DLQ headers: why and where a record failed, next to its own headers, value untouched."""

from __future__ import annotations

import datetime as dt

from include.streaming.dead_letter import (
    MAX_MESSAGE_CHARS,
    dead_letter_headers,
    dead_letter_record_headers,
    read_dead_letter_headers,
)
from include.streaming.analytics import MissingField
from include.streaming.records import InputRecord

SOURCE = InputRecord("web-events", 2, 1234, b"u1", b'{"broken":', 1, (("trace-id", b"abc"),))
KST = dt.timezone(dt.timedelta(hours=9))


def test_headers_name_the_error_the_source_and_the_processor():
    headers = dead_letter_headers(MissingField("web event has no 'user_id'"), SOURCE,
                                  "analytics_processor", dt.datetime(2024, 6, 1, 21, 0, tzinfo=KST))
    assert dict(headers) == {
        "dlq.error.class": b"MissingField",
        "dlq.error.message": b"web event has no 'user_id'",
        "dlq.source.topic": b"web-events",
        "dlq.source.partition": b"2",
        "dlq.source.offset": b"1234",
        "dlq.processor": b"analytics_processor",
        "dlq.failed.at": b"2024-06-01T12:00:00.000+00:00",
    }
    assert all(isinstance(v, bytes) for _, v in headers)


def test_record_headers_keep_the_records_own_headers_first():
    headers = dead_letter_record_headers(ValueError("x"), SOURCE, "p", dt.datetime.now(dt.timezone.utc))
    assert headers[0] == ("trace-id", b"abc")
    assert [name for name, _ in headers[1:]] == [name for name, _ in dead_letter_headers(
        ValueError("x"), SOURCE, "p", dt.datetime.now(dt.timezone.utc))]


def test_long_messages_are_cut_and_non_ascii_survives():
    headers = dict(dead_letter_headers(ValueError("처리 실패 " * 500), SOURCE, "p",
                                       dt.datetime.now(dt.timezone.utc)))
    message = headers["dlq.error.message"].decode("utf-8")
    assert len(message) == MAX_MESSAGE_CHARS
    assert message.startswith("처리 실패") and message.endswith("...")


def test_reading_them_back_drops_the_prefix_and_foreign_headers():
    headers = dead_letter_record_headers(KeyError("page"), SOURCE, "p", dt.datetime.now(dt.timezone.utc))
    read = read_dead_letter_headers(list(headers))
    assert read["error.class"] == "KeyError" and read["source.offset"] == "1234"
    assert "trace-id" not in read and read_dead_letter_headers(None) == {}

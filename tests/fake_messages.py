"""A stand-in for a consumed confluent_kafka.Message, for unit tests without a broker."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeMessage:
    """The accessors of a confluent_kafka.Message that the project's readers call, over plain fields."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None
    _headers: list | None = None

    def error(self):
        return None

    def topic(self):
        return self._topic

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def key(self):
        return self._key

    def value(self):
        return self._value

    def headers(self):
        return self._headers

    def timestamp(self):
        return (1, 1_700_000_000_000)

"""Seed 004: web and purchase events into one analytics format.

The inputs are JSON, as in the seed (a malformed event must be representable, so the inputs have
no schema):

web-events, keyed by user_id::

    {"event_id": "web-7-0000012", "user_id": "u0042", "session_id": "s012345",
     "event_type": "page_view" | "click" | "add_to_cart", "page": "/products/p017",
     "timestamp": "2024-06-01T12:00:00.123Z"}                 # session_id may be absent

purchase-events, keyed by user_id::

    {"order_id": "ord-7-0000012", "user_id": "u0042", "product_id": "p017", "quantity": 2,
     "amount": 39.98, "currency": "USD", "paid_at": 1717243200123}   # paid_at: epoch ms

The output is an ``AnalyticsEvent`` (schemas/analytics_event.avsc) in the Confluent wire format,
keyed by user_id. An event that is not JSON, not an object, lacks a field or has a field of the
wrong type or an impossible value raises an ``InvalidEvent`` subclass naming the field; the
processor sends the input unchanged to the DLQ with that error in its headers.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Callable

from include.kafka.wire import AvroEncoder, load_schema
from include.paths import SCHEMAS_DIR
from include.streaming.records import InputRecord, OutputRecord, TransformContext

SCHEMA_PATH = SCHEMAS_DIR / "analytics_event.avsc"
# The seed's assignment (004, step 4): this exact line, once per event sent to the DLQ; the
# processor fills in the DLQ's name (the declared one is in include/config/topics.yaml).
DLQ_NOTICE = "[DLQ] 처리 실패 이벤트를 {dlq_topic} 토픽으로 전송합니다."

WEB_EVENT_TYPES = {"page_view": "PAGE_VIEW", "click": "CLICK", "add_to_cart": "ADD_TO_CART"}
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_CENT = Decimal("0.01")
# decimal(12, 2) in the schema: at most 10 digits before the point.
_MAX_AMOUNT = Decimal("9999999999.99")


class InvalidEvent(ValueError):
    """An input event the analytics format cannot be made from."""


class MalformedEvent(InvalidEvent):
    """Not UTF-8 JSON, or JSON that is not an object."""


class MissingField(InvalidEvent):
    """A required field is absent or null."""


class WrongType(InvalidEvent):
    """A field holds a value of another type (a string amount, a numeric user id ...)."""


class InvalidValue(InvalidEvent):
    """A field has the right type but an impossible value (unknown event type, negative amount ...)."""


class UnknownSource(InvalidEvent):
    """A record from a topic that is neither the web nor the purchase topic."""


def parse_event(value: bytes | None, source: str) -> dict[str, Any]:
    """Decode one input value as a JSON object."""
    if value is None:
        raise MalformedEvent(f"{source} event has no value (a tombstone)")
    try:
        event = json.loads(value.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MalformedEvent(f"{source} event is not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise MalformedEvent(f"{source} event is not valid JSON: {exc}") from None
    if not isinstance(event, dict):
        raise MalformedEvent(f"{source} event is JSON {type(event).__name__}, not an object")
    return event


def _field(event: dict[str, Any], name: str, kind: type | tuple[type, ...], source: str,
           required: bool = True) -> Any:
    value = event.get(name)
    if value is None:
        if required:
            raise MissingField(f"{source} event has no '{name}'")
        return None
    # bool is an int in Python; true is never a quantity or a timestamp.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in _as_tuple(kind)):
        expected = " or ".join(k.__name__ for k in _as_tuple(kind))
        raise WrongType(f"{source} event field '{name}' is {type(value).__name__} "
                        f"{json.dumps(value)[:40]}, expected {expected}")
    if isinstance(value, str) and not value.strip():
        raise MissingField(f"{source} event has an empty '{name}'")
    return value


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _iso_time(text: str, name: str, source: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidValue(f"{source} event field '{name}' is not an ISO-8601 time: "
                           f"{text[:40]!r}") from None
    if moment.tzinfo is None:
        raise InvalidValue(f"{source} event field '{name}' has no time zone: {text[:40]!r}")
    return moment.astimezone(dt.timezone.utc)


def _epoch_millis(millis: int, name: str, source: str) -> dt.datetime:
    try:
        return dt.datetime.fromtimestamp(millis / 1000, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        raise InvalidValue(f"{source} event field '{name}' is not a time in epoch milliseconds: "
                           f"{millis}") from None


def _provenance(record: InputRecord, processed_at: dt.datetime) -> dict[str, Any]:
    return {"source_topic": record.topic, "source_partition": record.partition,
            "source_offset": record.offset, "processed_at": processed_at}


def web_to_analytics(event: dict[str, Any], record: InputRecord,
                     processed_at: dt.datetime) -> dict[str, Any]:
    """The analytics event of one parsed web event."""
    source = "web"
    event_type = _field(event, "event_type", str, source)
    if event_type not in WEB_EVENT_TYPES:
        raise InvalidValue(f"web event_type {event_type[:40]!r} is not one of "
                           f"{', '.join(sorted(WEB_EVENT_TYPES))}")
    return {
        "event_id": _field(event, "event_id", str, source),
        "event_type": WEB_EVENT_TYPES[event_type],
        "source": "WEB",
        "user_id": _field(event, "user_id", str, source),
        "occurred_at": _iso_time(_field(event, "timestamp", str, source), "timestamp", source),
        "session_id": _field(event, "session_id", str, source, required=False),
        "page": _field(event, "page", str, source),
        "product_id": None,
        "quantity": None,
        "amount": None,
        "currency": None,
        **_provenance(record, processed_at),
    }


def purchase_to_analytics(event: dict[str, Any], record: InputRecord,
                          processed_at: dt.datetime) -> dict[str, Any]:
    """The analytics event of one parsed purchase event."""
    source = "purchase"
    quantity = _field(event, "quantity", int, source)
    if not 1 <= quantity <= 2**31 - 1:
        raise InvalidValue(f"purchase quantity {quantity} is not a positive 32-bit count")
    raw_amount = _field(event, "amount", (int, float), source)
    try:
        # Through str, so 39.98 becomes Decimal('39.98') and not the float's binary expansion.
        amount = Decimal(str(raw_amount))
        if not amount.is_finite():
            raise InvalidOperation
        amount = amount.quantize(_CENT)
    except InvalidOperation:
        raise InvalidValue(f"purchase amount {raw_amount!r} is not a finite number of cents") from None
    if not Decimal(0) < amount <= _MAX_AMOUNT:
        raise InvalidValue(f"purchase amount {raw_amount!r} is not between 0.01 and {_MAX_AMOUNT}")
    currency = _field(event, "currency", str, source)
    if not _CURRENCY.match(currency):
        raise InvalidValue(f"purchase currency {currency[:10]!r} is not an ISO-4217 code")
    return {
        "event_id": _field(event, "order_id", str, source),
        "event_type": "PURCHASE",
        "source": "PURCHASE",
        "user_id": _field(event, "user_id", str, source),
        "occurred_at": _epoch_millis(_field(event, "paid_at", int, source), "paid_at", source),
        "session_id": None,
        "page": None,
        "product_id": _field(event, "product_id", str, source),
        "quantity": quantity,
        "amount": amount,
        "currency": currency,
        **_provenance(record, processed_at),
    }


class AnalyticsTransform:
    """Turns a web or a purchase record (told apart by topic) into one wire-format AnalyticsEvent."""

    def __init__(self, encoder: AvroEncoder, web_topic: str, purchase_topic: str,
                 clock: Callable[[], dt.datetime] | None = None):
        self.encoder = encoder
        self.web_topic = web_topic
        self.purchase_topic = purchase_topic
        self._clock = clock or (lambda: dt.datetime.now(dt.timezone.utc))

    def to_analytics(self, record: InputRecord) -> dict[str, Any]:
        """The analytics event (as an Avro-ready dict) of one input record."""
        if record.topic == self.web_topic:
            return web_to_analytics(parse_event(record.value, "web"), record, self._clock())
        if record.topic == self.purchase_topic:
            return purchase_to_analytics(parse_event(record.value, "purchase"), record, self._clock())
        raise UnknownSource(f"topic {record.topic} is neither the web topic {self.web_topic} "
                            f"nor the purchase topic {self.purchase_topic}")

    def __call__(self, record: InputRecord) -> list[OutputRecord]:
        event = self.to_analytics(record)
        return [OutputRecord(key=event["user_id"].encode("utf-8"), value=self.encoder.encode(event))]


def register_analytics_schema(registry: Any, subject: str) -> AvroEncoder:
    """Register the analytics schema under subject (idempotent) and return its encoder.

    Registering the same schema again returns its id; a schema incompatible with the subject's
    latest version is refused by the registry, and that error names the subject.
    """
    from confluent_kafka.schema_registry import Schema
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    schema = load_schema(SCHEMA_PATH)
    try:
        schema_id = registry.register_schema(subject, Schema(json.dumps(schema), "AVRO"))
    except SchemaRegistryError as exc:
        raise RuntimeError(f"could not register {SCHEMA_PATH.name} under {subject}: {exc}") from None
    return AvroEncoder(schema, schema_id)


def analytics_transform(context: TransformContext, web_topic: str,
                        purchase_topic: str) -> AnalyticsTransform:
    """Transform factory for the seed 004 processor (writes under ``<output topic>-value``)."""
    if context.registry is None:
        raise ValueError("the analytics processor needs a Schema Registry client "
                         "(set schema_registry_conn_id on the operator)")
    encoder = register_analytics_schema(context.registry, f"{context.output_topic}-value")
    return AnalyticsTransform(encoder, web_topic, purchase_topic)

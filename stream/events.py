"""Event contract v1: what model-serving platforms publish.

One JSON object per Kafka message, keyed by principal id. Inference events go
to ``modelsiem.inference``, feedback events to ``modelsiem.feedback``; in a
JSON-lines file both are mixed and ``kind`` tells them apart.

Every string here may be chosen by an attacker. Identifiers are bounded and an
event whose identifier is too long is rejected (it goes to the dead-letter
topic); free text an attacker writes (user agents) is truncated instead, so that
a long user agent cannot hide an event from the detectors.

The contract is a set of msgspec structs: every event is validated where it
arrives and again on each route topic it travels, and msgspec decodes one in
about a quarter of the time pydantic took (README, Performance). Values are
JSON's own types: a number sent as a string is rejected, not coerced.

>>> e = InferenceEvent.validate({
...     "event_id": "e1", "timestamp": "2026-01-01T00:00:00Z",
...     "model": {"name": "spam-filter"}, "principal": {"id": "key-1"},
...     "output": {"label": "spam", "confidence": 0.97}, "extra": "ignored"})
>>> e.principal.id, e.output.confidence, e.timestamp.isoformat()
('key-1', 0.97, '2026-01-01T00:00:00+00:00')
"""

from __future__ import annotations

import ipaddress
import numbers
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache, wraps
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Self, TypeVar

import msgspec
import numpy as np
from msgspec import Meta, Struct
from msgspec.structs import force_setattr

CONTRACT_VERSION = "1"
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_EMBEDDING = 4096
MAX_FREE_TEXT = 512

_R = TypeVar("_R")

# Identifiers: rejected when longer than this.
Ident = Annotated[str, Meta(min_length=1, max_length=256)]
Label = Annotated[str, Meta(min_length=1, max_length=128)]
OptIdent = Annotated[str, Meta(max_length=256)]
Unit = Annotated[float, Meta(ge=0.0, le=1.0)]
Count = Annotated[int, Meta(ge=0, le=2**63 - 1)]  # JSON allows any integer; Kafka's own tools read 64 bits
# RFC 3339 with a zone: a time without one is rejected, since guessing its zone would shift every rate.
AwareDatetime = Annotated[datetime, Meta(tz=True)]


def cache_short_strings(func: Callable[[str], _R]) -> Callable[[str], _R]:
    """``func``, cached for strings of up to 64 characters and computed afresh for longer ones.

    A stream repeats its callers' addresses, so caching their parsing pays; caching only short
    strings keeps an attacker from filling the cache with long ones (an IPv6 scope id can make a
    valid address any length). Failures are not cached (``lru_cache`` does not keep exceptions).
    """
    cached = lru_cache(maxsize=65536)(func)

    @wraps(func)
    def call(text: str) -> _R:
        return cached(text) if len(text) <= 64 else func(text)

    return call


@cache_short_strings
def _canonical_ip(text: str) -> str:
    # Canonical form, so that 2001:db8::1 and 2001:DB8:0::1 are one address.
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ValueError("`ip`: not an IPv4 or IPv6 address") from None


def plain_number(value: Any) -> bool | int | float:
    """A number or boolean of another type (numpy's, which a detector's evidence may hold) as a JSON one;
    msgspec's hook."""
    if isinstance(value, np.bool_):  # not a numbers.Number
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


class _computed_once:
    """A property computed on first access and kept in the instance, like ``functools.cached_property``
    without the lock that Python 3.11's takes on every first access (a few microseconds, paid per event)."""

    def __init__(self, compute: Callable[[Any], Any]) -> None:
        self.compute, self.__doc__ = compute, compute.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.compute(instance)  # later reads find it there first
        return value


class _Part(Struct, frozen=True, kw_only=True):
    """A nested object of the contract: unknown fields are accepted and dropped."""


class Model(_Part):
    name: Ident
    version: OptIdent | None = None


class Principal(_Part):
    id: Annotated[Ident, Meta(description="The API key, account or user making the call.")]
    tenant: OptIdent | None = None
    ip: Annotated[str, Meta(description="IPv4 or IPv6 address of the caller.")] | None = None
    user_agent: Annotated[str, Meta(description=f"Truncated to {MAX_FREE_TEXT} characters.")] | None = None
    created_at: Annotated[AwareDatetime, Meta(description="When the account was created (RFC 3339 with zone).")] \
        | None = None

    def __post_init__(self) -> None:
        # An error names its field in backquotes, as msgspec's own do: stream.decode reads it there.
        if self.ip is not None:
            force_setattr(self, "ip", _canonical_ip(self.ip.strip()))
        if self.user_agent is not None and len(self.user_agent) > MAX_FREE_TEXT:
            force_setattr(self, "user_agent", self.user_agent[:MAX_FREE_TEXT])


class Input(_Part):
    hash: Annotated[OptIdent, Meta(description="Hash of the raw input.")] | None = None
    embedding: Annotated[list[float], Meta(max_length=MAX_EMBEDDING)] | None = None
    tokens: Count | None = None


class Output(_Part):
    label: Label | None = None
    confidence: Annotated[Unit, Meta(description="Top-class probability.")] | None = None
    scores: Annotated[dict[Label, Unit], Meta(max_length=1024)] | None = None
    tokens: Count | None = None


class Item(_Part):
    id: OptIdent | None = None
    fingerprint: Annotated[OptIdent, Meta(description="Content or campaign cluster key of the reported item.")] \
        | None = None
    origin: Annotated[OptIdent, Meta(description="For example the sender domain.")] | None = None


class _Timed(_Part, dict=True):
    """A record with a ``timestamp`` (declared by the subclass), read as epoch seconds by the engine.

    ``dict=True`` gives each record room for the values computed once (``epoch``).
    """

    kind: ClassVar[str]
    if TYPE_CHECKING:  # a field of each subclass, declared there to keep its place in the field order
        timestamp: datetime

    @classmethod
    def validate(cls, data: Mapping[str, Any]) -> Self:
        """One record from already-parsed JSON or Python values (datetimes included), checked as on the wire."""
        return msgspec.convert(data, cls)

    @classmethod
    def json_schema(cls) -> dict[str, Any]:
        """The JSON Schema of this record, for platform teams to validate against before they publish.

        ``kind`` may be left out on a topic of one kind: the topic implies it.
        """
        schema = msgspec.json.schema(cls)
        record = schema["$defs"][cls.__name__]
        record["required"].remove("kind")
        return schema

    def to_dict(self) -> dict[str, Any]:
        """As JSON would carry it (times as RFC 3339 text, ``kind`` included)."""
        return msgspec.to_builtins(self, enc_hook=plain_number)

    def to_json(self) -> bytes:
        """As JSON, the form it travels in on the route topics; encoded once (a record is frozen)."""
        encoded = self.__dict__.get("json")
        if encoded is None:
            encoded = self.__dict__["json"] = _ENCODER.encode(self)
        return encoded

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes``, its computed values recomputed on demand."""
        return msgspec.structs.replace(self, **changes)

    @_computed_once
    def epoch(self) -> float:
        """``timestamp`` in seconds since the epoch, computed once: the engine and every detector need it.

        >>> InferenceEvent.validate({"event_id": "e", "timestamp": "2026-01-01T01:00:00+01:00",
        ...     "model": {"name": "m"}, "principal": {"id": "p"}}).epoch
        1767225600.0
        """
        return self.timestamp.timestamp()


class _Event(_Timed):
    event_id: Annotated[Ident, Meta(description="Unique id of this event.")]
    timestamp: Annotated[AwareDatetime, Meta(description="RFC 3339 with zone.")]
    model: Model
    principal: Principal


class InferenceEvent(_Event, tag_field="kind", tag="inference"):
    """One inference call (topic ``modelsiem.inference``)."""

    kind: ClassVar[str] = "inference"
    input: Input = Input()
    output: Output = Output()
    latency_ms: Annotated[float, Meta(ge=0)] | None = None


class FeedbackEvent(_Event, tag_field="kind", tag="feedback"):
    """One user feedback report (topic ``modelsiem.feedback``)."""

    kind: ClassVar[str] = "feedback"
    predicted_label: Label
    reported_label: Label
    inference_id: OptIdent | None = None
    item: Item = Item()
    confidence: Annotated[Unit, Meta(description="The model's confidence in predicted_label.")] | None = None

    @property
    def contradicts_model(self) -> bool:
        return self.predicted_label != self.reported_label


EVENT_TYPES: dict[str, type[InferenceEvent] | type[FeedbackEvent]] = {
    "inference": InferenceEvent,
    "feedback": FeedbackEvent,
}


_ENCODER = msgspec.json.Encoder(enc_hook=plain_number)

"""Event contract v1: what model-serving platforms publish.

One JSON object per Kafka message, keyed by principal id. Inference events go
to ``modelsiem.inference``, feedback events to ``modelsiem.feedback``; in a
JSON-lines file both are mixed and ``kind`` tells them apart.

Every string here may be chosen by an attacker. Identifiers are bounded and an
event whose identifier is too long is rejected (it goes to the dead-letter
topic); free text an attacker writes (user agents) is truncated instead, so that
a long user agent cannot hide an event from the detectors.

>>> e = InferenceEvent.model_validate({
...     "event_id": "e1", "timestamp": "2026-01-01T00:00:00Z",
...     "model": {"name": "spam-filter"}, "principal": {"id": "key-1"},
...     "output": {"label": "spam", "confidence": 0.97}, "extra": "ignored"})
>>> e.principal.id, e.output.confidence, e.timestamp.isoformat()
('key-1', 0.97, '2026-01-01T00:00:00+00:00')
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache, wraps
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self, TypeVar

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
)

CONTRACT_VERSION = "1"
MAX_MESSAGE_BYTES = 1024 * 1024
MAX_EMBEDDING = 4096

_R = TypeVar("_R")

# Identifiers: rejected when longer than this.
Ident = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=128)]
OptIdent = Annotated[str, StringConstraints(max_length=256)]


def _truncate(limit: int):
    def cut(value: object) -> object:
        return value[:limit] if isinstance(value, str) else value

    return BeforeValidator(cut)


# Free text: truncated, never rejected.
FreeText = Annotated[str, _truncate(512)]


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
        raise ValueError("not an IPv4 or IPv6 address") from None


def _ip(value: object) -> object:
    return _canonical_ip(value.strip()) if isinstance(value, str) else value


IP = Annotated[str, BeforeValidator(_ip)]


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


class _Part(BaseModel):
    """A nested object of the contract: unknown fields are accepted and dropped."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Model(_Part):
    name: Ident
    version: OptIdent | None = None


class Principal(_Part):
    id: Ident = Field(description="The API key, account or user making the call.")
    tenant: OptIdent | None = None
    ip: IP | None = Field(default=None, description="IPv4 or IPv6 address of the caller.")
    user_agent: FreeText | None = None
    created_at: AwareDatetime | None = Field(
        default=None, description="When the account was created (RFC 3339 with zone)."
    )


class Input(_Part):
    hash: OptIdent | None = Field(default=None, description="Hash of the raw input.")
    embedding: list[float] | None = Field(default=None, max_length=MAX_EMBEDDING)
    tokens: int | None = Field(default=None, ge=0)


class Output(_Part):
    label: Label | None = None
    confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Top-class probability."
    )
    scores: dict[Label, Annotated[float, Field(ge=0.0, le=1.0)]] | None = Field(
        default=None, max_length=1024
    )
    tokens: int | None = Field(default=None, ge=0)


class Item(_Part):
    id: OptIdent | None = None
    fingerprint: OptIdent | None = Field(
        default=None, description="Content or campaign cluster key of the reported item."
    )
    origin: OptIdent | None = Field(default=None, description="For example the sender domain.")


class _Timed(_Part):
    """A record with a ``timestamp`` (declared by the subclass), read as epoch seconds by the engine."""

    model_config = ConfigDict(ignored_types=(_computed_once,))
    if TYPE_CHECKING:  # a field of each subclass, declared there to keep its place in the field order
        timestamp: datetime

    @_computed_once
    def epoch(self) -> float:
        """``timestamp`` in seconds since the epoch, computed once: the engine and every detector need it.

        >>> InferenceEvent.model_validate({"event_id": "e", "timestamp": "2026-01-01T01:00:00+01:00",
        ...     "model": {"name": "m"}, "principal": {"id": "p"}}).epoch
        1767225600.0
        """
        return self.timestamp.timestamp()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("epoch", None)  # the copy's timestamp may differ: recompute on demand
        return copy


class _Event(_Timed):
    event_id: Ident = Field(description="Unique id of this event.")
    timestamp: AwareDatetime = Field(description="RFC 3339 with zone.")
    model: Model
    principal: Principal


class InferenceEvent(_Event):
    """One inference call (topic ``modelsiem.inference``)."""

    kind: Literal["inference"] = "inference"
    input: Input = Input()
    output: Output = Output()
    latency_ms: float | None = Field(default=None, ge=0)


class FeedbackEvent(_Event):
    """One user feedback report (topic ``modelsiem.feedback``)."""

    kind: Literal["feedback"] = "feedback"
    inference_id: OptIdent | None = None
    item: Item = Item()
    predicted_label: Label
    reported_label: Label
    confidence: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The model's confidence in predicted_label."
    )

    @property
    def contradicts_model(self) -> bool:
        return self.predicted_label != self.reported_label


Event = Annotated[InferenceEvent | FeedbackEvent, Field(discriminator="kind")]
EVENT_ADAPTER: TypeAdapter[InferenceEvent | FeedbackEvent] = TypeAdapter(Event)

EVENT_TYPES: dict[str, type[InferenceEvent] | type[FeedbackEvent]] = {
    "inference": InferenceEvent,
    "feedback": FeedbackEvent,
}


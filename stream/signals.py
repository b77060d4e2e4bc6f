"""Signals: what a building-block detector concluded, as input to the detectors that correlate it.

Some conclusions are only worth an alert once combined: one IP prefix whose
accounts get unsure answers is evidence, several such prefixes sharing those
accounts are a campaign. A *building-block* detector (``meta.building_block``)
raises no alerts; each of its findings becomes a :class:`Signal`, which the
stream processor routes, like an event, to the detectors that take the
``"signal"`` kind, partitioned by their key (a signal has only a model to be
partitioned by). A group-keyed stage can so run on every worker while the stage
that merges its conclusions sees only their signals, not the events behind them.

Signals travel on the worker's internal route topics, never on the event
topics: they are not part of the event contract, and the route agents validate
them like events, since anyone who can write to Kafka can write there.

>>> s = Signal.validate({"timestamp": "2026-01-01T00:00:00Z", "model": {"name": "m"},
...     "rule": "extraction_prefix", "subject": "10.0.0.0/24", "seq": 1, "magnitude": 80,
...     "users": ["a", "b"]})
>>> s.kind, s.epoch, s.users
('signal', 1767225600.0, ('a', 'b'))
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from msgspec import Meta, field

from stream.events import AwareDatetime, Ident, Model, _Timed

# A signal names at most this many accounts (new members of a group since its last signal; the
# building blocks send fewer, this bounds what the route agents accept).
MAX_SIGNAL_USERS = 4096


class Signal(_Timed, tag_field="kind", tag="signal"):
    """One finding of a building-block detector, on its way to the detectors that correlate it."""

    kind: ClassVar[str] = "signal"
    timestamp: Annotated[AwareDatetime, Meta(description="Time of the event that raised it.")]
    model: Model
    rule: Annotated[Ident, Meta(description="Id of the building-block detector.")]
    subject: Annotated[Ident, Meta(description="What it is about, in that detector's terms (a group id).")]
    seq: Annotated[int, Meta(ge=1, description="Its number among the signals of that detector and subject.")]
    magnitude: float
    evidence: Annotated[dict[Annotated[str, Meta(max_length=64)], Any], Meta(max_length=64)] = field(
        default_factory=dict)
    users: Annotated[tuple[Ident, ...], Meta(max_length=MAX_SIGNAL_USERS)] = ()
    ips: Annotated[tuple[Ident, ...], Meta(max_length=64)] = ()
    event_ids: Annotated[tuple[Ident, ...], Meta(max_length=64)] = ()

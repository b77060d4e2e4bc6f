"""Digests: the few values of an event that a building block reads, routed in place of the event.

A building block keyed by something other than the principal (an IP prefix, a
cohort) runs wherever its key's events are routed, so each event it reads
crosses Kafka once more and is decoded again. Such a detector can say what it
reads: ``digest(event, value)`` returns a :class:`Digest` of a few fields
(``value`` is the event's partition value, its group), and ``update`` learns
from that instead of the event. The worker then routes digests, about a tenth
of an event's bytes, and only of the events the detector learns from; replay
and the backtest digest each event in place, so both see the same values.

A detector whose evidence adds up (counts, sets of accounts) can instead tally
(``Detector.tallies``): the engine folds each event into a partial of its
group and ingest partition, and what travels is a tally of the partial, one
per group now and then rather than one per event; the tally type is the
detector's digest type, so the route agents read both alike.

Each detector has its own digest type, tagged with its id (the first item of
the digest's JSON array), so that the route agents, which validate digests like
events (anyone who can write to Kafka can write to the route topics), know
which detector a digest is for and reject one for another.

>>> class ExampleDigest(Digest, tag="example_rule"):
...     principal: str
>>> from datetime import datetime, timezone
>>> d = ExampleDigest(value="203.0.113.0/24", timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc),
...                   model=Model(name="m"), principal="p1")
>>> d.to_json()
b'["example_rule","203.0.113.0/24","2026-01-01T00:00:00Z",{"name":"m","version":null},"p1"]'
>>> d.rule, d.kind
('example_rule', 'digest')
"""

from __future__ import annotations

from typing import Annotated, ClassVar

from msgspec import Meta

from stream.events import AwareDatetime, Ident, Model, _Timed

__all__ = ["Digest", "Model"]


class Digest(_Timed, tag_field="rule", array_like=True):
    """What one detector reads of one event: its group (``value``), its time and model, and the
    subclass's fields."""

    kind: ClassVar[str] = "digest"
    value: Annotated[Ident, Meta(description="The event's partition value for the detector (its group).")]
    timestamp: AwareDatetime
    model: Model

    @property
    def rule(self) -> str:
        """Id of the detector this digest is for."""
        return self.__struct_config__.tag  # type: ignore[return-value]

"""The detector interface: metadata, a partition key, and an update step.

A detector is one class in one file. It declares

- ``meta``: a validated :class:`DetectorMeta` (id, ATLAS technique, severity,
  references, false positives, a triage note for the analyst);
- ``Params``: a pydantic model of its tunable parameters;
- ``partition_key``: what its state is keyed by (``"principal"``,
  ``"fingerprint"``, ``"ip_prefix"``..., see :func:`partition_value`), so that
  the stream processor can route every event of one key to one worker;
- ``new_state()`` and ``update(state, event)``: the state is a plain JSON-able
  ``dict`` that ``update`` mutates, so it can be checkpointed to a changelog and
  restored after a restart; ``update`` returns the findings the event raised;
- ``examples()``: labelled event sequences that must and must not alert, which
  the conformance suite replays for every installed detector.

Two options serve detectors that group accounts (see ``detectors.extraction_groups``):

- ``compares_peers``: the detector judges a key against its peers, the other
  keys of its model on the same partition (a sample of the model's traffic,
  since keys hash evenly over partitions; all of it on one partition). The
  engine then keeps one more state per model and partition, made by
  ``new_peers()``, and calls ``update(state, event, peers)``.
- ``meta.building_block``: the detector raises no alerts; its findings become
  signals (``stream.signals``) for the detectors that take the ``"signal"``
  kind, which correlate them into alerts.

A building block with the standard key may also set ``digest_type`` and define
``digest(event, value)``: ``update`` then learns from that digest of the event
(``stream.digests``), which is what the worker routes to the detector's key.
When what it learns adds up (counts, sets), it may instead set ``tallies`` and
define ``new_partial()``, ``fold(partial, event, value)`` and
``tally(partial, source)``: events are folded where they arrive into a partial
per group and ingest partition, and ``update`` learns from the tallies (of
``digest_type``) sent now and then, one per group instead of one per event.

Windows use the event's own timestamp, never the wall clock, so that a replay
of a file raises the same alerts as the live stream.
"""

from __future__ import annotations

import hashlib
import ipaddress
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

from stream.digests import Digest
from stream.events import FeedbackEvent, InferenceEvent, cache_short_strings
from stream.signals import Signal

Severity = Literal["low", "medium", "high", "critical"]
# Elastic Security's numeric severities, and the risk-score band of each.
SEVERITY_NUMBER: dict[str, int] = {"low": 21, "medium": 47, "high": 73, "critical": 99}
RISK_BANDS: dict[str, tuple[int, int]] = {
    "low": (0, 21),
    "medium": (22, 47),
    "high": (48, 73),
    "critical": (74, 100),
}
SEVERITY_RANK: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}

# What a detector's state can be keyed by; see partition_value.
PartitionKey = Literal["principal", "fingerprint", "origin", "model", "ip_prefix", "cohort", "tenant"]
EventKind = Literal["inference", "feedback", "signal"]
AnyEvent = InferenceEvent | FeedbackEvent | Signal | Digest
State = dict[str, Any]


class AtlasRef(BaseModel):
    """A MITRE ATLAS tactic or technique."""

    model_config = ConfigDict(frozen=True)
    id: str = Field(pattern=r"^AML\.(TA\d{4}|T\d{4}(\.\d{3})?)$")
    name: str

    @property
    def reference(self) -> str:
        kind = "tactics" if self.id.startswith("AML.TA") else "techniques"
        return f"https://atlas.mitre.org/{kind}/{self.id}"


class DetectorMeta(BaseModel):
    """What an analyst and a detection engineer need to know about a detector."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(pattern=r"^[a-z][a-z0-9_]{2,63}$")
    name: str = Field(min_length=3, max_length=120)
    version: int = Field(ge=1, description="Bump when the logic changes what it alerts on.")
    description: str = Field(min_length=20)
    tactic: AtlasRef
    technique: AtlasRef
    subtechnique: AtlasRef | None = None
    severity: Severity
    risk_score: int = Field(ge=0, le=100)
    event_kinds: frozenset[EventKind]
    references: tuple[HttpUrl, ...] = Field(min_length=1)
    false_positives: tuple[str, ...] = Field(min_length=1)
    triage: str = Field(min_length=20, description="What the analyst should check first.")
    building_block: bool = Field(default=False, description="Its findings are signals for other detectors, "
                                 "not alerts (see stream.signals).")

    @model_validator(mode="after")
    def _consistent(self) -> DetectorMeta:
        low, high = RISK_BANDS[self.severity]
        if not low <= self.risk_score <= high:
            raise ValueError(f"risk_score {self.risk_score} is outside the {self.severity} band {low}-{high}")
        if self.technique.id.count(".") != 1:
            raise ValueError("technique must be a technique id; put sub-techniques in subtechnique")
        if self.subtechnique and not self.subtechnique.id.startswith(self.technique.id + "."):
            raise ValueError("subtechnique must belong to technique")
        return self


@dataclass(slots=True)
class Finding:
    """What a detector concluded from an event: the stream turns it into an ECS alert.

    ``subject`` names what the alert is about (a principal id, a fingerprint);
    findings on the same subject update one alert. ``magnitude`` is the size of
    the evidence (events in the burst, reports in the surge): the alert is
    re-sent when it has grown, not on every event.

    Not frozen, though nothing changes one once made: a detector makes one per
    event of a long burst, and a frozen dataclass took 3.3 µs to make against 1.0.
    """

    subject: str
    severity: Severity
    risk_score: int
    summary: str
    magnitude: float
    evidence: dict[str, Any] = field(default_factory=dict)
    users: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    hashes: tuple[str, ...] = ()
    event_ids: tuple[str, ...] = ()
    # The principal the alert is about, when there is exactly one.
    user: str | None = None
    # Event ids to exclude from retraining (feedback of a poisoning campaign):
    # only those not listed by an earlier finding, since each is published once.
    quarantine: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Example:
    """A labelled event sequence: ``alerts`` says whether the detector must raise on it."""

    name: str
    alerts: bool
    events: Callable[[], list[AnyEvent]]


class Detector(ABC):
    """Base class of every detector; see the module docstring."""

    meta: ClassVar[DetectorMeta]
    partition_key: ClassVar[PartitionKey]
    # A key's state is dropped after this many seconds of event time without an event.
    state_ttl: ClassVar[float] = 24 * 3600.0
    # Findings on one subject this close in event time update one alert; a longer silence opens a new one.
    episode_gap: ClassVar[float] = 3600.0
    # Set to get update(state, event, peers): see the module docstring.
    compares_peers: ClassVar[bool] = False
    # Set, with digest(), to get update(state, digest): see the module docstring and stream.digests.
    digest_type: ClassVar[type[Digest] | None] = None
    # Set, with new_partial(), fold() and tally(), to learn from tallies of events: see the module docstring.
    tallies: ClassVar[bool] = False

    class Params(BaseModel):
        model_config = ConfigDict(extra="forbid", frozen=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        digest, meta = cls.digest_type, getattr(cls, "meta", None)
        if meta is None:
            return
        if cls.tallies and digest is None:
            raise TypeError(f"{cls.__name__}: a detector that tallies needs the digest_type of its tallies")
        if digest is None:
            return
        # A digest stands in for the event on the route topics: its signals need only its time and model,
        # its state key only its value, and the route agents tell digests apart by their tag.
        if not meta.building_block or cls.key is not Detector.key:
            raise TypeError(f"{cls.__name__}: only a building block with the standard key can learn from digests")
        if digest.__struct_config__.tag != meta.id:
            raise TypeError(f"{cls.__name__}: its digest_type must be tagged with its id {meta.id!r}")

    def __init__(self, **params: Any) -> None:
        self.params = self.Params(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.model_dump().items())
        return f"{type(self).__name__}({args})"

    def key(self, event: AnyEvent) -> str | None:
        """The state key of an event, or None when the detector does not apply to it."""
        if event.kind not in self.meta.event_kinds:
            return None
        value = partition_value(self.partition_key, event)
        return None if value is None else model_key(event, value)

    @abstractmethod
    def new_state(self) -> State:
        """A fresh, JSON-able state for a key never seen before."""

    @abstractmethod
    def update(self, state: State, event: AnyEvent) -> Iterable[Finding]:
        """Learn from one event (mutating ``state``) and return what it raised."""

    def new_peers(self) -> State:
        """A fresh, JSON-able state shared by a model's keys on one partition (``compares_peers`` only)."""
        return {}

    def digest(self, event: AnyEvent, value: str) -> Digest | None:
        """What ``update`` reads of an event whose partition value is ``value``, as a ``digest_type``; None
        when the event teaches the detector nothing (``digest_type`` only)."""
        raise NotImplementedError

    def new_partial(self) -> State:
        """A fresh, JSON-able partial tally of a group on one ingest partition (``tallies`` only)."""
        raise NotImplementedError

    def fold(self, partial: State, event: AnyEvent, value: str) -> bool:
        """Fold an event whose partition value is ``value`` into its group's partial (mutating it); False
        when the event teaches the detector nothing (``tallies`` only)."""
        raise NotImplementedError

    def tally(self, partial: State, source: str) -> Digest:
        """What ``update`` learns of a partial, as a ``digest_type``, to be sent now; ``source`` names the
        partial's ingest partition. Counts are the partial's since it began, so that ``update`` can count a
        tally sent again (after a crash or a rebalance) once; what the partial keeps only until it is sent
        (new members, samples) it forgets here (``tallies`` only)."""
        raise NotImplementedError

    @classmethod
    @abstractmethod
    def examples(cls) -> list[Example]:
        """Labelled positive and negative cases, run with default parameters."""


def has_standard_key(detector: Detector) -> bool:
    """Whether a detector keeps :meth:`Detector.key`: its key is then its partition value (with the model),
    for the event kinds it takes, so detectors with the same partition key share it."""
    return type(detector).key is Detector.key


def model_key(event: AnyEvent, value: str) -> str:
    """A partition value as a state key, which the worker also routes by: the model is part of every key,
    since one principal's use of two models is two baselines."""
    return f"{event.model.name}\x1f{value}"


def partition_value(kind: PartitionKey, event: AnyEvent) -> str | None:
    """The value an event is partitioned by for one kind of key, or None when it has none.

    >>> from detectors.testing import feedback
    >>> e = feedback("f1", 0, principal="p", principal_fields={"ip": "203.0.113.9"})
    >>> partition_value("ip_prefix", e), partition_value("fingerprint", e)
    ('203.0.113.0/24', 'fp-1')
    """
    return value_of(kind, event.kind)(event)


def value_of(kind: PartitionKey, event_kind: EventKind) -> Callable[[Any], str | None]:
    """What :func:`partition_value` computes for events of one kind, as a function: the engine and the
    worker's routing look it up once, not once an event."""
    return _VALUES.get((kind, event_kind), _none)


def _none(event: AnyEvent) -> None:
    return None


def _ip_prefix_of(event: InferenceEvent | FeedbackEvent) -> str | None:
    return ip_prefix(event.principal.ip) if event.principal.ip else None


def _cohort_of(event: InferenceEvent | FeedbackEvent) -> str | None:
    created = event.principal.created_at
    return None if created is None else cohort(event.principal.user_agent or "", created.date())


# The values of the keys both contract events have, then those of one kind only.
_OF_EVENT: dict[str, Callable[[Any], str | None]] = {
    "model": lambda event: event.model.name,
    "principal": lambda event: event.principal.id,
    "tenant": lambda event: event.principal.tenant,
    "ip_prefix": _ip_prefix_of,
    "cohort": _cohort_of,
}
_VALUES = {(key, kind): value for kind in ("inference", "feedback") for key, value in _OF_EVENT.items()} | {
    ("model", "signal"): _OF_EVENT["model"],
    ("origin", "feedback"): lambda event: event.item.origin,
    ("fingerprint", "feedback"): lambda event: event.item.fingerprint or event.item.origin,
}


# Cached: the stdlib parser costs ~10 µs and a stream repeats its callers' addresses.
@cache_short_strings
def ip_prefix(ip: str) -> str:
    """The network an address belongs to for grouping: a /24 for IPv4, a /48 for IPv6."""
    address = ipaddress.ip_address(ip)
    bits = 24 if address.version == 4 else 48
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


@lru_cache(maxsize=65536)
def cohort(user_agent: str, created: date) -> str:
    """The cohort of an account: its client and creation day (Sybil accounts are made in batches with one
    tool), as a fixed-length id, so that no attacker string becomes a long key.

    >>> cohort("httpx/0.27", date(2026, 1, 1))
    'c:bc3aef3e468bae95'
    """
    return "c:" + hashlib.blake2b(f"{user_agent}\x1f{created.isoformat()}".encode(), digest_size=8).hexdigest()

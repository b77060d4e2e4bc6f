"""Runs detectors over events with keyed state and turns findings into alerts.

The same engine runs inside the faust worker (state in changelogged tables) and
in ``modelsiem replay`` (state in a dict), which is why a replay of a file
raises the same alerts as the live stream.

For each (detector, key) the store holds one record::

    {"state": <the detector's own state>,
     "pos": {"topic:partition": last applied offset},
     "seen": latest event time (epoch seconds),
     "part": the partition whose changelog holds it,
     "v": the detector version that wrote "state",
     "alerts": {subject: {"start": t, "last": t, "rev": n, "mag": m, "sev": s, "named": u}},
     "sig": signals raised on this key (building-block detectors)}

A detector that ``compares_peers`` has one more record per model and
partition (key ``model\x1fpartition``), under the detector id with ``PEERS``
appended (no detector id contains a dot), holding the state its keys share there.

``pos`` makes re-delivery harmless: after a crash Kafka hands the worker events
it already applied (the changelog may be ahead of the committed offsets), and
they are skipped rather than counted twice. ``seen`` is the key's latest event
time: a key idle for the detector's ``state_ttl`` is deleted, and so is the
least recently active one when a partition holds more than ``max_keys`` keys of
one detector, which bounds memory under a flood of never-seen principals.
Events are applied in batches (the worker's, a replay's): a key's record is
fetched and put back, and idle keys are deleted, once a batch, not once an
event; a key idle past its ttl starts afresh even before it is deleted, so
that, below the ``max_keys`` bound, the outcome does not depend on the batch size.
``alerts`` is the alert lifecycle:
findings on one subject within the detector's ``episode_gap`` seconds of event time update one
alert, which is re-sent only when its severity rises or its evidence has grown
by ``growth`` times or names ``naming_growth`` more accounts (a growing
campaign's latest revision then names nearly all of it) since the last
revision, so an attack of a million events
yields a handful of documents rather than a million.

A building-block detector's findings become signals (``stream.signals``)
rather than alerts: the worker routes them to the detectors that take them,
and :meth:`Engine.settle` applies them in place when one engine runs every
detector (replay, the backtest).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from detectors.base import SEVERITY_RANK, AnyEvent, Detector, Finding, State, has_standard_key
from stream.alerts import alert_id, build_alert
from stream.signals import Signal

PEERS = ".peers"


class StateStore(Protocol):
    def get(self, detector_id: str, key: str) -> State | None: ...

    def put(self, detector_id: str, key: str, record: State) -> None: ...

    def delete(self, detector_id: str, key: str) -> None: ...

    def items(self, detector_id: str) -> Iterable[tuple[str, State]]: ...


class MemoryStore:
    """State in dicts, one per detector: for replay and tests."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, State]] = {}

    def get(self, detector_id: str, key: str) -> State | None:
        records = self.records.get(detector_id)
        return None if records is None else records.get(key)

    def put(self, detector_id: str, key: str, record: State) -> None:
        self.records.setdefault(detector_id, {})[key] = record

    def delete(self, detector_id: str, key: str) -> None:
        self.records.get(detector_id, {}).pop(key, None)

    def items(self, detector_id: str) -> Iterable[tuple[str, State]]:
        return list(self.records.get(detector_id, {}).items())


@dataclass(slots=True)
class Step:
    """What one event produced: alert documents, and the state records to save once they are delivered.

    Saving only after delivery keeps the two in order: a crash in between
    re-applies the event (its position is not yet saved) and re-sends the
    alert under the same document id, which the sink treats as a duplicate.
    """

    alerts: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)
    signals: list[Signal] = field(default_factory=list)
    records: list[tuple[str, str, State]] = field(default_factory=list)
    expired: list[tuple[str, str]] = field(default_factory=list)

    def save(self, store: StateStore) -> None:
        for detector_id, key, record in self.records:
            store.put(detector_id, key, record)
        for detector_id, key in self.expired:
            store.delete(detector_id, key)


@dataclass(frozen=True, slots=True)
class Position:
    """Where an event came from: the guard against applying it twice."""

    topic: str
    partition: int
    offset: int

    @property
    def slot(self) -> str:
        return f"{self.topic}:{self.partition}"


class _Recency:
    """The live keys of one detector on one partition, least recently active first."""

    def __init__(self) -> None:
        self.seen: OrderedDict[str, float] = OrderedDict()

    def touch(self, key: str, when: float) -> None:
        seen = self.seen
        old = seen.get(key)
        if old is None:
            seen[key] = when
        else:
            seen.move_to_end(key)
            if when > old:
                seen[key] = when

    def evict(self, now: float, ttl: float, max_keys: int) -> Sequence[str]:
        """Keys idle for ``ttl``, and the oldest beyond ``max_keys``: they are to be deleted."""
        # The usual case, checked first since it runs per detector and event: the least
        # recently active key is neither idle nor beyond the bound, so nothing goes.
        seen = self.seen
        if not seen or (len(seen) <= max_keys and next(iter(seen.values())) > now - ttl):
            return ()
        gone = []
        while seen:
            key, when = next(iter(seen.items()))
            if when > now - ttl and len(seen) <= max_keys:
                break
            del seen[key]
            gone.append(key)
        return gone


class _Batch:
    """The records one batch has fetched, by detector id and key: each is put back once, at the batch's end."""

    __slots__ = ("store", "records")

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.records: dict[str, dict[str, State]] = {}

    def record(self, detector: Detector, store_id: str, key: str, now: float, peers: bool = False) -> State:
        """A key's record (or, with ``peers``, a peers record), fetched once a batch; fresh for a key never
        seen, idle for the detector's ttl (deleted, or about to be) or written by another version."""
        records = self.records.get(store_id)
        if records is None:
            records = self.records[store_id] = {}
        record = records.get(key)
        if record is None:
            record = self.store.get(store_id, key)
            fresh = detector.new_peers if peers else detector.new_state
            if record is None or now - record.get("seen", now) > detector.state_ttl:
                record = {"state": fresh(), "v": detector.meta.version, "seen": now}
                if not peers:
                    record["pos"], record["alerts"] = {}, {}
            elif record.get("v") != detector.meta.version:
                # State restored from an older version of the detector has another shape: start it afresh.
                record["state"], record["v"] = fresh(), detector.meta.version
            records[key] = record
        if now > record.get("seen", now):
            record["seen"] = now
        return record


def _plan(detectors: list[Detector]) -> list[tuple[Detector, str, int, bool, bool]]:
    """Per detector of one event kind: itself, its id, the index of an earlier one
    whose key it shares (-1 if none), so that a key several detectors are partitioned by is computed once,
    whether it compares peers and whether it is a building block.

    Detector.key returns None for the kinds a detector does not take, so the plan of a kind
    leaves them out without asking.
    """
    plan = []
    for i, detector in enumerate(detectors):
        same = -1
        if has_standard_key(detector):
            same = next((j for j, d in enumerate(detectors[:i])
                         if has_standard_key(d) and d.partition_key == detector.partition_key), -1)
        plan.append((detector, detector.meta.id, same, detector.compares_peers,
                     detector.meta.building_block))
    return plan


class Engine:
    def __init__(
        self,
        detectors: Sequence[Detector],
        *,
        growth: float = 2.0,
        naming_growth: float = 0.08,
        max_keys: int = 50_000,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.detectors = list(detectors)
        self._plans = {kind: _plan([d for d in self.detectors if kind in d.meta.event_kinds])
                       for kind in ("inference", "feedback", "signal")}
        self.growth = growth
        self.naming_growth = naming_growth
        self.max_keys = max_keys
        self.clock = clock
        # Detectors by the ids their records are stored under (their own and their peers').
        self._owners = {d.meta.id: d for d in self.detectors} | {d.meta.id + PEERS: d for d in self.detectors}
        # By partition, then detector id.
        self._recency: dict[int, dict[str, _Recency]] = {}

    def forget(self, partitions: set[int]) -> None:
        """Partitions moved to another worker: drop their recency index (rebuilt if they come back)."""
        for partition in partitions:
            self._recency.pop(partition, None)

    def _recency_of(self, store: StateStore, detector_id: str, partition: int) -> _Recency:
        """The recency index of a partition, rebuilt from the store the first time (after a restart)."""
        by_detector = self._recency.setdefault(partition, {})
        recency = by_detector.get(detector_id)
        if recency is None:
            recency = by_detector[detector_id] = _Recency()
            restored = [
                (record.get("seen", 0.0), key)
                for key, record in store.items(detector_id)
                if record.get("part", 0) == partition
            ]
            for when, key in sorted(restored):
                recency.touch(key, when)
        return recency

    def process(
        self, event: AnyEvent, store: StateStore, position: Position | None = None, partition: int | None = None
    ) -> Step:
        """Apply one event to every detector it concerns; save the returned step once its alerts are sent.

        ``position`` is where the event first entered Kafka (the guard against applying it
        twice); ``partition`` is the partition whose changelog holds the keys (by default the
        position's).
        """
        if partition is None:
            partition = position.partition if position else 0
        return self.process_batch([(event, position)], store, partition)

    def process_batch(
        self,
        items: Sequence[tuple[AnyEvent, Position | None]],
        store: StateStore,
        partition: int = 0,
        failed: Callable[[int, Exception], None] | None = None,
    ) -> Step:
        """Apply events of one partition in order, as :meth:`process` would one by one, in one step.

        A key's record is fetched and put back once a batch, and its recency kept once a batch,
        rather than once an event: that work, not the detectors', was most of the engine's cost.
        An event on which a detector raises is passed to ``failed`` with its index (the batch goes
        on), or the error is raised when there is no ``failed``.
        """
        step, batch, latest = Step(), _Batch(store), float("-inf")
        for index, (event, position) in enumerate(items):
            latest = max(latest, event.epoch)
            try:
                self._apply(event, position, partition, batch, step)
            except Exception as exc:
                if failed is None:
                    raise
                failed(index, exc)
        recencies = self._recency.get(partition) or {}
        for detector_id, records in batch.records.items():
            recency = recencies.get(detector_id) or self._recency_of(store, detector_id, partition)
            for key, record in records.items():
                # Put back, not only mutated: the store keeps track of what changed.
                step.records.append((detector_id, key, record))
                recency.touch(key, record["seen"])
            gone = recency.evict(latest, self._owners[detector_id].state_ttl, self.max_keys)
            step.expired.extend((detector_id, key) for key in gone)  # a batch's own keys too, past max_keys
        return step

    def _apply(self, event: AnyEvent, position: Position | None, partition: int, batch: _Batch, step: Step) -> None:
        now = event.epoch
        slot = position.slot if position is not None else None
        keys: list[str | None] = []
        for detector, detector_id, same_key_as, peered, building_block in self._plans.get(event.kind, ()):
            key = detector.key(event) if same_key_as < 0 else keys[same_key_as]
            keys.append(key)
            if key is None:
                continue
            record = batch.record(detector, detector_id, key, now)
            if position is not None:
                if record["pos"].get(slot, -1) >= position.offset:
                    continue
                record["pos"][slot] = position.offset
            record["part"] = partition
            if peered:
                # The partition is in the key: a table holds the keys of all the worker's partitions in one dict.
                peers = batch.record(detector, detector_id + PEERS, f"{event.model.name}\x1f{partition}", now,
                                     peers=True)
                peers["part"] = partition
                findings = detector.update(record["state"], event, peers["state"])  # type: ignore[call-arg]
            else:
                findings = detector.update(record["state"], event)
            for finding in findings:
                if building_block:
                    record["sig"] = record.get("sig", 0) + 1
                    step.signals.append(_signal(detector_id, record["sig"], finding, event))
                else:
                    self._revise(detector, record["alerts"], finding, event, step)

    def settle(self, event: AnyEvent, store: StateStore) -> Step:
        """Apply an event, then the signals it raised to this engine's detectors that take them, and so on."""
        return self.settle_batch([event], store)

    def settle_batch(self, events: Sequence[AnyEvent], store: StateStore) -> Step:
        """Apply events, then the signals they raised to this engine's detectors that take them, and so on.

        For one process running every detector (replay, the backtest); the worker routes signals
        to the worker that holds their key instead. Each step is saved as it is made (a signal's
        detector must see the state the previous one left), so the returned step, which holds
        every alert and quarantine record, has nothing more to save.
        """
        total, pending = Step(), list(events)
        while pending:
            step = self.process_batch([(each, None) for each in pending], store)
            step.save(store)
            total.alerts += step.alerts
            total.quarantine += step.quarantine
            pending = step.signals
        return total

    def _revise(
        self, detector: Detector, open_alerts: dict[str, Any], finding: Finding, event: AnyEvent, step: Step
    ) -> None:
        now = event.epoch
        for subject in [s for s, a in open_alerts.items() if now - a["last"] > detector.episode_gap]:
            del open_alerts[subject]
        alert = open_alerts.get(finding.subject)
        if alert is None:
            alert = open_alerts[finding.subject] = {
                "start": now, "last": now, "rev": 0, "mag": 0.0, "sev": -1, "named": 0}
        alert["last"] = max(alert["last"], now)
        if finding.quarantine:  # the id only when needed: a uuid5 for every finding cost 2 % of the worker
            the_id = alert_id(detector.meta, event.model.name, finding.subject, alert["start"])
            step.quarantine.extend(
                {"event_id": event_id, "alert_id": the_id, "rule_id": detector.meta.id,
                 "model": event.model.name, "subject": finding.subject, "@timestamp": event.timestamp.isoformat()}
                for event_id in finding.quarantine
            )
        rank = SEVERITY_RANK[finding.severity]
        named = len(finding.users)
        if (
            alert["rev"]
            and rank <= alert["sev"]
            and finding.magnitude < self.growth * alert["mag"]
            and named < max(alert.get("named", 0) * (1 + self.naming_growth), alert.get("named", 0) + 1)
        ):
            return
        alert["rev"] += 1
        alert["sev"] = max(rank, alert["sev"])
        alert["mag"] = finding.magnitude
        alert["named"] = named
        step.alerts.append(build_alert(
            detector.meta,
            detector.partition_key,
            finding,
            event,
            episode_start=alert["start"],
            revision=alert["rev"],
            created=self.clock(),
        ))


def _signal(detector_id: str, seq: int, finding: Finding, event: AnyEvent) -> Signal:
    signal = Signal(timestamp=event.timestamp, model=event.model, rule=detector_id, subject=finding.subject,
                    seq=seq, magnitude=finding.magnitude, evidence=finding.evidence, users=finding.users,
                    ips=finding.ips, event_ids=finding.event_ids)
    # Encoded here, where an error is the event's (reported, the batch going on), rather than first
    # when the worker sends it, which would stop the partition; the worker sends these bytes.
    signal.to_json()
    return signal

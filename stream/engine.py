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

A detector with a ``digest_type`` learns from digests (``stream.digests``):
the engine digests each event it takes in place, and in the worker's route
agents it is handed the digests the worker routed, as events of kind
``"digest"``. A detector that ``tallies`` has one more record per group and
partition (key ``<key>\x1fpartition``, under its id with ``TALLY`` appended):
the partial its events are folded into, position-guarded like any record.
:meth:`Engine.tallies` makes the tallies of the partials folded into since the
last call, which the worker routes and replay applies in place.

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
from typing import Any, NamedTuple, Protocol, get_args

from detectors.base import (SEVERITY_RANK, AnyEvent, Detector, EventKind, Finding, State, has_standard_key, model_key,
                            value_of)
from stream.alerts import alert_id, build_alert
from stream.digests import Digest
from stream.signals import Signal

PEERS = ".peers"
TALLY = ".tally"


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


class Position(NamedTuple):
    """Where an event came from: the guard against applying it twice.

    A named tuple: the worker's route agents make one for every routed event they read (the ingest uses
    the fetched record itself, see :class:`Located`), and a frozen dataclass took twice as long to make
    (1.0 µs against 0.5 here).
    """

    topic: str
    partition: int
    offset: int


class Located(Protocol):
    """What the engine reads of a position: a :class:`Position`, or a record fetched from Kafka (the worker's
    ingest passes the record itself rather than make a Position of it)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


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

    __slots__ = ("store", "partition", "suffix", "records")

    def __init__(self, store: StateStore, partition: int) -> None:
        self.store = store
        self.partition = partition
        self.suffix = f"\x1f{partition}"  # of a key the partition is part of (peers, partials)
        self.records: dict[str, dict[str, State]] = {}

    def records_of(self, store_id: str) -> dict[str, State]:
        """The records of one detector (or its peers) this batch has fetched, by key."""
        records = self.records.get(store_id)
        if records is None:
            records = self.records[store_id] = {}
        return records

    def fetch(self, detector: Detector, store_id: str, key: str, now: float, fresh: Callable[[], State] | None = None,
              guarded: bool = True) -> State:
        """A record this batch has not fetched yet: from the store, or fresh for a key never seen, idle for
        the detector's ttl (deleted, or about to be) or written by another version. ``fresh`` makes the
        state of a record other than the key's own (its peers', its partial); ``guarded``: whether the
        record keeps the positions applied to it (a key's own and a partial; not peers, which the key's
        own record guards)."""
        record = self.store.get(store_id, key)
        own = fresh is None
        fresh = fresh or detector.new_state
        if record is None or now - record.get("seen", now) > detector.state_ttl:
            record = {"state": fresh(), "v": detector.meta.version}
            if guarded:
                record["pos"] = {}
            if own:
                record["alerts"] = {}
        elif record.get("v") != detector.meta.version:
            # State restored from an older version of the detector has another shape: start it afresh.
            record["state"], record["v"] = fresh(), detector.meta.version
        record["seen"] = max(now, record.get("seen", now))
        record["part"] = self.partition
        self.records_of(store_id)[key] = record
        return record


DIGEST = Digest.kind  # the kind of the records the route agents hand over in place of events


@dataclass(frozen=True, slots=True)
class _Lane:
    """One detector's part in the events of one kind, resolved once an engine.

    ``value_of`` computes its partition value (None for a detector with its own ``key``), and
    ``same_key_as`` is the index of an earlier lane with the same key (-1 if none), so that a key
    several detectors are partitioned by is computed once an event. ``digest`` is the detector's
    own, when it learns from digests and the lane takes events; ``fold`` its own, when it tallies them,
    and then its records are its partials: ``store_id`` is where its records are stored, ``fresh`` makes
    the state of one other than a key's own (None for a key's own).
    """

    detector: Detector
    detector_id: str
    value_of: Callable[[Any], str | None] | None
    same_key_as: int
    peered: bool
    building_block: bool
    digest: Callable[[Any, str], Any] | None
    fold: Callable[[State, Any, str], bool] | None
    store_id: str
    fresh: Callable[[], State] | None


def _lanes(detectors: list[Detector], kind: str) -> list[_Lane]:
    """The lanes of the detectors that take one event kind (or digests)."""
    lanes: list[_Lane] = []
    for detector in detectors:
        if kind == DIGEST:
            value = _value_of_digest(detector.digest_type)
        else:
            value = value_of(detector.partition_key, kind) if has_standard_key(detector) else None  # type: ignore[arg-type]
        # A digest is the detector's own: a lane that digests, or takes digests, shares its key with none.
        shares = value is not None and detector.digest_type is None
        same = next((i for i, lane in enumerate(lanes) if shares and lane.value_of is not None
                     and lane.detector.digest_type is None
                     and lane.detector.partition_key == detector.partition_key), -1)
        takes_events = detector.digest_type is not None and kind != DIGEST
        digest = detector.digest if takes_events and not detector.tallies else None
        fold = detector.fold if takes_events and detector.tallies else None
        lanes.append(_Lane(detector, detector.meta.id, value, same, detector.compares_peers,
                           detector.meta.building_block, digest, fold,
                           detector.meta.id + (TALLY if fold else ""), detector.new_partial if fold else None))
    return lanes


def _value_of_digest(digest_type: type | None) -> Callable[[Any], str | None]:
    """The partition value of a digest, for the detector whose digest type it is."""
    def value(digest: Any) -> str | None:
        return digest.value if type(digest) is digest_type else None

    return value


class Engine:
    def __init__(
        self,
        detectors: Sequence[Detector],
        *,
        growth: float = 2.0,
        naming_growth: float = 0.08,
        max_keys: int = 50_000,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        folds: bool = True,
    ) -> None:
        """``folds``: whether the detectors that tally fold the events they take (replay, the worker's
        ingest), or only learn from tallies (a route of the worker)."""
        self.detectors = list(detectors)
        self.folds = folds
        self._lanes = {kind: _lanes([d for d in self.detectors if kind in d.meta.event_kinds
                                     and (folds or not d.tallies)], kind)
                       for kind in get_args(EventKind)}
        self._lanes[DIGEST] = _lanes([d for d in self.detectors if d.digest_type is not None], DIGEST)
        self.growth = growth
        self.naming_growth = naming_growth
        self.max_keys = max_keys
        self.clock = clock
        # Detectors by the ids their records are stored under (their own and their peers').
        self._owners = {d.meta.id + suffix: d for d in self.detectors for suffix in ("", PEERS, TALLY)}
        # By partition, then detector id.
        self._recency: dict[int, dict[str, _Recency]] = {}
        # By partition: the partials folded into since their last tally, by store id and key; and the
        # partitions whose restored partials have been looked through for one not sent before a restart.
        self._due: dict[int, dict[tuple[str, str], State]] = {}
        self._scanned: set[int] = set()

    def forget(self, partitions: set[int]) -> None:
        """Partitions moved to another worker: drop their recency index (rebuilt if they come back)."""
        for partition in partitions:
            self._recency.pop(partition, None)
            self._due.pop(partition, None)
            self._scanned.discard(partition)

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
        self, event: AnyEvent, store: StateStore, position: Located | None = None, partition: int | None = None
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
        items: Sequence[tuple[AnyEvent, Located | None]],
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
        step, batch, latest = Step(), _Batch(store, partition), float("-inf")
        due = self._due.setdefault(partition, {})
        # Per event kind met in this batch: each lane with the records it has fetched (its partials' for a
        # lane that folds) and its peers'.
        lanes: dict[str, list[tuple]] = {}
        source: tuple[str, int] | None = None  # of the latest position, and its slot: most of a batch shares one
        slot: str | None = None
        for index, (event, position) in enumerate(items):
            now = event.epoch
            latest = max(latest, now)
            if position is None:
                slot, offset, source = None, -1, None
            else:
                offset = position.offset
                if source is None or position.topic != source[0] or position.partition != source[1]:
                    source = (position.topic, position.partition)
                    slot = f"{source[0]}:{source[1]}"
            kind_lanes = lanes.get(event.kind)
            if kind_lanes is None:
                kind_lanes = lanes[event.kind] = [
                    (lane, batch.records_of(lane.store_id),
                     batch.records_of(lane.detector_id + PEERS) if lane.peered else None)
                    for lane in self._lanes[event.kind]]
            try:
                self._apply(event, now, slot, offset, kind_lanes, batch, step, due)
            except Exception as exc:
                if failed is None:
                    raise
                failed(index, exc)
        recencies = self._recency.get(partition) or {}
        for detector_id, records in batch.records.items():
            if not records:
                continue
            recency = recencies.get(detector_id) or self._recency_of(store, detector_id, partition)
            for key, record in records.items():
                # Put back, not only mutated: the store keeps track of what changed.
                step.records.append((detector_id, key, record))
                recency.touch(key, record["seen"])
            gone = recency.evict(latest, self._owners[detector_id].state_ttl, self.max_keys)
            step.expired.extend((detector_id, key) for key in gone)  # a batch's own keys too, past max_keys
        return step

    def _apply(self, event: AnyEvent, now: float, slot: str | None, offset: int, lanes: list[tuple], batch: _Batch,
               step: Step, due: dict[tuple[str, str], State]) -> None:
        # The hot path of the engine, run per event and detector: a record this batch has fetched
        # is a dict lookup away, and only a miss goes to _Batch.fetch. ``slot`` and ``offset`` are the
        # event's position (None and -1 for none).
        keys: list[str | None] = []
        for lane, records, peer_records in lanes:
            if lane.same_key_as >= 0:
                key = keys[lane.same_key_as]
            elif lane.value_of is not None:
                value = lane.value_of(event)
                key = None if value is None else model_key(event, value)
            else:
                key = lane.detector.key(event)
            keys.append(key)
            if key is None:
                continue
            seen = event
            if lane.digest is not None:  # value is set: a lane that digests has the standard key, shared with none
                seen = lane.digest(event, value)
                if seen is None:
                    continue
            elif lane.fold is not None:
                # Its record is the partial, the partition in the key as for peers: a table holds the partials
                # of all the worker's partitions.
                key += batch.suffix
            record = records.get(key)
            if record is None:
                record = batch.fetch(lane.detector, lane.store_id, key, now, lane.fresh)
            elif now > record["seen"]:
                record["seen"] = now
            if slot is not None:
                applied = record["pos"]
                if applied.get(slot, -1) >= offset:
                    continue
                applied[slot] = offset
            if lane.fold is not None:  # value is set, as for a lane that digests
                if lane.fold(record["state"], event, value) and record.get("due") is not True:
                    record["due"] = True  # so that a partial restored after a crash is still sent
                    due[(lane.store_id, key)] = record
                continue
            detector = lane.detector
            if lane.peered:
                # The partition is in the key: a table holds the keys of all the worker's partitions in one dict.
                peer_key = event.model.name + batch.suffix
                peers = peer_records.get(peer_key)
                if peers is None:
                    peers = batch.fetch(detector, lane.detector_id + PEERS, peer_key, now, detector.new_peers,
                                        guarded=False)
                elif now > peers["seen"]:
                    peers["seen"] = now
                findings = detector.update(record["state"], seen, peers["state"])  # type: ignore[call-arg]
            else:
                findings = detector.update(record["state"], seen)
            for finding in findings:
                if lane.building_block:
                    record["sig"] = record.get("sig", 0) + 1
                    step.signals.append(_signal(lane.detector_id, record["sig"], finding, seen))
                else:
                    self._revise(detector, record["alerts"], finding, event, step)

    def tally_partitions(self) -> list[int]:
        """The partitions this engine has applied a batch of since it last made their tallies."""
        return list(self._due)

    def tallies(self, store: StateStore, partition: int = 0,
                failed: Callable[[State, Exception], None] | None = None) -> list[Digest]:
        """The tallies of a partition's partials folded into since the last call, for the detectors' routes;
        the partials forget what they keep only until it is sent, and are to be saved (they are put back).

        The first call for a partition also sends the partials restored with something unsent. A partial
        whose detector fails to tally it is passed to ``failed`` with the error (or the error is raised);
        it is tallied again once more is folded into it.
        """
        due = self._due.pop(partition, {})
        if not self.folds:
            return []
        if partition not in self._scanned:
            self._scanned.add(partition)
            for detector in self.detectors:
                if detector.tallies:
                    store_id = detector.meta.id + TALLY
                    due.update(((store_id, key), record) for key, record in store.items(store_id)
                               if record.get("due") and record.get("part", 0) == partition)
        made = []
        for (store_id, key), record in due.items():
            try:
                made.append(self._owners[store_id].tally(record["state"], str(partition)))
            except Exception as exc:
                if failed is None:
                    raise
                failed(record, exc)
            record["due"] = False
            if store.get(store_id, key) is record:  # not deleted as idle meanwhile
                store.put(store_id, key, record)
        return made

    def settle(self, event: AnyEvent, store: StateStore) -> Step:
        """Apply an event, then the signals it raised to this engine's detectors that take them, and so on."""
        return self.settle_batch([event], store)

    def settle_batch(self, events: Sequence[AnyEvent], store: StateStore) -> Step:
        """Apply events, then the signals they raised and the tallies of what they folded to this engine's
        detectors that take them, and so on.

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
            pending = [*step.signals, *self.tallies(store)]
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

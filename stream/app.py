"""The faust worker: events in, detectors run with changelogged state, alerts out.

Flow (one consumer group, any number of workers):

- ``ingest`` consumes the inference and feedback topics (keyed by principal
  id), decodes each message, dead-letters what is invalid, runs the detectors
  partitioned by principal in place, and forwards each event to one route
  topic per other partition key (``<app>-route-fingerprint``...), to the
  partition of that key, so that every event of one item reaches the same
  worker. A route whose detectors all learn from digests gets, in place of the
  event, each detector's digest of it (``stream.digests``). Detectors that
  tally fold the events into partials here, and every ``tally_interval`` the
  partials folded into go to their routes as tallies, through the outbox
  below. Events are taken in
  batches, and the events of one batch for one route partition travel as one
  routed message (``stream.routing``): faust's cost is per message, the
  detectors' per event.
- ``route-<key>`` consumes a route topic and runs the detectors of that key.
  Signals of building-block detectors (``stream.signals``) are routed the same
  way, to the detectors that take them, through the outbox below.
- Detector state lives in one faust table per detector, backed by a compacted
  changelog topic: a restarted worker (or the one that takes its partitions
  over) restores it before it processes anything. Changed records are
  checkpointed to the changelog at each offset commit, before the offsets are
  chosen, so committed offsets never run ahead of the saved state; see
  ``stream.checkpoint``. Alerts, quarantine records (the feedback event ids of
  a poisoning campaign), dead-letter records and the checkpoints themselves go
  through an outbox that is flushed before each checkpoint, so records reach
  the broker before the state that produced them is saved, and after it, so
  the state is saved before the offsets past it; see ``connectors.kafka.Outbox``.
- Messages faust skips during a rebalance are read back; see ``stream.skipped``.

The app is built by :func:`create_app` (no module-level app, no import-time
side effects), so tests and commands build their own with their settings.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any, get_args

import faust
import orjson

from connectors.kafka import DEADLETTER_MAX_BYTES, Outbox, deadletter_headers
from detectors.base import (AnyEvent, Detector, EventKind, PartitionKey, State, has_standard_key, model_key,
                            value_of)
from modelsiem.settings import KafkaSettings, Settings
from stream.checkpoint import CheckpointSensor, CheckpointStore
from stream.consumer import Transport
from stream.decode import Kind, Rejected, decode, digest_decoder
from stream.engine import DIGEST, PEERS, TALLY, Engine, Located, Step
from stream.handover import Handover, acknowledge
from stream.routing import letter, route_partition, routed_item, routed_messages, unpack
from stream.skipped import Message, Raw, SkippedOffsets

log = logging.getLogger("modelsiem.worker")
# Events are processed in batches of up to BATCH_MAX, cut from what a fetch brought (stream.handover): about a
# quarter of it per partition, each key's records fetched and put back once per partition's part (README,
# Performance).
BATCH_MAX = 2000
# A routed message holds events up to this many bytes (one larger event travels alone; events are at most 1 MiB).
ROUTED_MAX_BYTES = 1024 * 1024

# An event as a lane's agent hands it to the engine: the partition whose state it updates, the message it
# came in, the event, where it first entered Kafka (none for a signal) and, for a routed event, its own text
# (what is dead-lettered if a detector fails on it; see stream.routing.letter).
_Item = tuple[int, Message, AnyEvent, Located | None, bytes | None]


def _credentials(kafka: KafkaSettings) -> Any:
    if kafka.security_protocol == "PLAINTEXT":
        return None
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    if kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password.get_secret_value() if kafka.sasl_password else None,
            mechanism=kafka.sasl_mechanism,
            ssl_context=context if "SSL" in kafka.security_protocol else None,
        )
    return faust.SSLCredentials(context)


class _App(faust.App):
    """faust's app without its statistics monitor among the sensors.

    The monitor keeps per-topic counters and latency figures for faust's web
    views (off here) and is called four times for every message: without it the
    do-nothing agent ran 1.15 times as fast on this project's stack.
    """

    handover: Handover  # set by new_app

    def on_init_dependencies(self) -> Iterable[Any]:
        services = super().on_init_dependencies()
        if self.monitor in set(self.sensors):
            self.sensors.remove(self.monitor)
        return services


def new_app(settings: Settings, partitions: int, app_id: str | None = None) -> faust.App:
    """A faust app configured for modelsiem, with no agents yet."""
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    app = _App(
        app_id or settings.app_id,
        broker=";".join(f"kafka://{h.strip()}" for h in settings.kafka.bootstrap.split(",")),
        broker_credentials=_credentials(settings.kafka),
        store="memory://",
        datadir=str(settings.worker_dir),
        web_enabled=False,
        autodiscover=False,
        topic_partitions=partitions,
        topic_replication_factor=settings.topics.replication,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,
        producer_acks=-1,
        producer_max_request_size=DEADLETTER_MAX_BYTES,
        # A killed worker's partitions move on after this long, not after faust's default minute.
        broker_session_timeout=15.0,
        broker_heartbeat_interval=3.0,
        key_serializer="raw",
        value_serializer="raw",
        # A standby replica does not speed up taking a partition over here: faust restores an
        # in-memory table from the start of its changelog all the same. It only doubled every
        # worker's state (beyond the memory bound) and its changelog reading.
        table_standby_replicas=0,
        # Routed messages compressed: a fetch takes up to 1 MiB of each partition, routed or not,
        # and uncompressed routed events fell behind while a backlog of compressed ones was worked
        # off. zstd, not lz4: aiokafka compresses lz4 at level 9 (about 5 µs per routed event
        # here); zstd at its level 3 takes a fifth of that and makes 60 % of the bytes.
        producer_compression_type="zstd",
    )
    app.transport = Transport(app.conf.broker_consumer, app)
    app.handover = Handover(app)
    return app


def create_app(settings: Settings, detectors: list[Detector], partitions: int) -> faust.App:
    """Build the worker app; ``partitions`` is the partition count of the event topics."""
    t = settings.topics
    app = new_app(settings, partitions)
    kinds: dict[str, Kind] = {t.inference: "inference", t.feedback: "feedback"}
    outbox = Outbox(settings)
    skipped = SkippedOffsets(settings.kafka)
    by_key: dict[PartitionKey, list[Detector]] = defaultdict(list)
    for d in detectors:
        by_key[d.partition_key].append(d)

    def changelog(topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        outbox.send(topic, key, value, partition=partition)

    def lane(group: list[Detector], topics: set[str], folding: Sequence[Detector] = ()) -> _Lane:
        # One table per detector, one for the state shared by the peers of a detector that compares them, and
        # one for the partials of a detector folding events here.
        names = {d.meta.id: f"detector-{d.meta.id}" for d in group}
        names.update({d.meta.id + PEERS: f"detector-{d.meta.id}-peers" for d in group if d.compares_peers})
        names.update({d.meta.id + TALLY: f"detector-{d.meta.id}-tally" for d in folding})
        tables = {
            store_id: app.Table(name, default=None, partitions=partitions, key_type=str,
                                extra_topic_configs={"max.message.bytes": str(DEADLETTER_MAX_BYTES)})
            for store_id, name in names.items()  # keys and values go to the changelog as JSON
        }
        # A route's engine folds nothing: its tallying detectors learn from the tallies the ingest sends.
        engine = Engine([*group, *folding], max_keys=settings.max_keys, folds=bool(folding))
        return _Lane(engine, CheckpointStore(tables, topics, changelog))

    folding = [d for d in detectors if d.tallies]
    tallying = {d.meta.id: d.partition_key for d in folding}  # the route of each detector's tallies
    inline = lane(by_key.pop("principal", []), {t.inference, t.feedback}, folding)
    routes = {
        key: (app.topic(f"{settings.app_id}-route-{key}", key_type=bytes, value_type=bytes, internal=True,
                        partitions=partitions, config={"max.message.bytes": str(DEADLETTER_MAX_BYTES)}), group)
        for key, group in by_key.items()
    }
    route_lanes = {key: lane(group, {topic.get_topic_name()}) for key, (topic, group) in routes.items()}
    by_kind = _routes_by_kind({key: group for key, (_, group) in routes.items()})
    lanes = [inline, *route_lanes.values()]
    app.sensors.add(CheckpointSensor([each.store for each in lanes], deliver=outbox.flush))

    def deadletter(raw: Message, reason: str, stage: str) -> None:
        outbox.send(t.deadletter, raw.key, raw.value,
                    deadletter_headers(reason, raw.topic, raw.partition, raw.offset, stage))

    def detector_failed(raw: Message, exc: Exception) -> None:
        deadletter(raw, f"detector failure: {type(exc).__name__}: {exc}"[:1000], "engine")

    def handle(lane: _Lane, items: list[_Item]) -> None:
        """Run a lane's detectors on a batch's events, one engine batch per partition, in order."""
        if not lane.engine.detectors:
            return
        by_partition: dict[int, list[_Item]] = defaultdict(list)
        for item in items:
            by_partition[item[0]].append(item)
        for partition, group in by_partition.items():
            def failed(index: int, exc: Exception, group: list[_Item] = group) -> None:
                # A detector's bug must not stop the partition behind this event.
                _, raw, _, source, text = group[index]
                raw = raw if text is None else letter(raw, source, text)
                log.exception("detectors failed on %s[%d]@%d; dead-lettered", raw.topic, raw.partition, raw.offset)
                detector_failed(raw, exc)

            lane.store.at(partition)
            step = lane.engine.process_batch([(item[2], item[3]) for item in group], lane.store, partition, failed)
            publish(step)
            step.save(lane.store)  # checkpointed only after the outbox is flushed: see CheckpointSensor

    def publish(step: Step) -> None:
        for alert in step.alerts:
            outbox.send(t.alerts, alert["event"]["id"].encode(), orjson.dumps(alert))
        for record in step.quarantine:
            outbox.send(t.quarantine, record["event_id"].encode(), orjson.dumps(record))
        for signal in step.signals:
            # Through the outbox, like alerts: on the broker before the state that raised it is saved. A signal
            # carries no source position: its detector drops one it has seen (by its number) instead.
            payload = routed_messages([routed_item(None, "signal", signal.to_json())], ROUTED_MAX_BYTES)[0]
            for key, value_of_key, ask, _ in by_kind["signal"]:
                value = value_of_key(signal)
                if value is not None and (ask is None or ask(signal)):
                    outbox.send(routes[key][0].get_topic_name(), None, payload,
                                partition=route_partition(model_key(signal, value), partitions))

    last_tallies = [time.monotonic()]

    def send_tallies() -> None:
        """Send the tallies of what the ingest folded since the last time, one routed message per route
        partition, through the outbox: on the broker before the partials that forgot them are saved."""
        last_tallies[0] = time.monotonic()
        forward: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        for partition in inline.engine.tally_partitions():
            def failed(record: State, exc: Exception, partition: int = partition) -> None:
                # A detector's bug: the partial is dead-lettered where its latest event came from.
                slot, offset = max(record["pos"].items(), key=lambda each: each[1], default=(t.inference, -1))
                log.exception("a detector failed to tally a partial of partition %d; dead-lettered", partition)
                detector_failed(Raw(slot.rpartition(":")[0] or slot, partition, offset, None,
                                    orjson.dumps(record["state"])), exc)

            inline.store.at(partition)
            for tally in inline.engine.tallies(inline.store, partition, failed):
                key = tallying[tally.rule]
                forward[(key, route_partition(model_key(tally, tally.value), partitions))].append(
                    routed_item(None, DIGEST, tally.to_json()))
        for (key, partition), items in forward.items():
            for message in routed_messages(items, ROUTED_MAX_BYTES):
                outbox.send(routes[key][0].get_topic_name(), None, message, partition=partition)

    if tallying:
        @app.timer(settings.tally_interval)
        async def tally_when_quiet() -> None:
            if time.monotonic() - last_tallies[0] >= settings.tally_interval:
                send_tallies()

    def digested(digesters: list[Detector], event: AnyEvent, key_value: str, raw: Message) -> Iterator[bytes]:
        """The routed items of an event's digests, one per detector that learns from it (the record is the
        digests' source position)."""
        for detector in digesters:
            try:
                seen = detector.digest(event, key_value)
                if seen is not None:
                    yield routed_item(raw, DIGEST, seen.to_json())
            except Exception as exc:  # a detector's bug: reported like one in the engine, the event goes on
                log.exception("%s failed to digest %s[%d]@%d; dead-lettered", detector.meta.id, raw.topic,
                              raw.partition, raw.offset)
                detector_failed(raw, exc)

    async def batches(queue: Any) -> AsyncIterator[list[Message]]:
        """An agent's records as its consumer fetched them (``stream.handover``), holes filled; acknowledged
        once processed."""
        async for raws in app.handover.pieces(queue, BATCH_MAX):
            raws = await skipped.complete(raws)
            yield raws
            acknowledge(app.consumer, raws)

    @app.on_partitions_assigned.connect
    async def watch_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        skipped.rebalanced()

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        skipped.forget((tp.topic, tp.partition) for tp in revoked)
        for each in lanes:
            each.forget({tp.partition for tp in revoked if tp.topic in each.store.topics})

    ingest_queue = app.handover.register([t.inference, t.feedback])

    # A faust agent, for faust to subscribe to its topics and supervise it; its records come by hand-over.
    @app.agent(app.topic(t.inference, t.feedback, key_type=bytes, value_type=bytes), name="modelsiem.ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for raws in batches(ingest_queue):
            # One routed message per route partition and batch (stream.routing).
            forward: dict[tuple[str, int], list[bytes]] = defaultdict(list)
            inline_items = []
            for raw in raws:
                value = raw.value or b""
                event = decode(value, kinds[raw.topic])
                if isinstance(event, Rejected):
                    log.warning("dead-lettered %s[%d]@%d: %s", raw.topic, raw.partition, raw.offset, event.reason)
                    deadletter(raw, event.reason, "decode")
                    continue
                item = None  # the same for every route that takes the event
                for key, value_of_key, ask, digesters in by_kind[event.kind]:
                    key_value = value_of_key(event)
                    if key_value is None or (ask is not None and not ask(event)):
                        continue
                    # The source position travels along: a re-delivered event forwarded twice is applied once.
                    bound = forward[(key, route_partition(model_key(event, key_value), partitions))]
                    if digesters is None:
                        item = item or routed_item(raw, event.kind, value)
                        bound.append(item)
                    else:
                        bound.extend(digested(digesters, event, key_value, raw))
                inline_items.append((raw.partition, raw, event, raw, None))  # a record is its own position
            handle(inline, inline_items)
            if tallying and time.monotonic() - last_tallies[0] >= settings.tally_interval:
                send_tallies()
            for (key, partition), items in forward.items():
                for message in routed_messages(items, ROUTED_MAX_BYTES):
                    await routes[key][0].send(value=message, partition=partition)

    for key, (topic, _) in routes.items():
        _route_agent(app, topic, key, route_lanes[key], batches, handle, deadletter)
    return app


class _Lane:
    """One agent's engine and its checkpointed state."""

    def __init__(self, engine: Engine, store: CheckpointStore) -> None:
        self.engine, self.store = engine, store

    def forget(self, partitions: set[int]) -> None:
        self.store.forget(partitions)
        self.engine.forget(partitions)


_Route = tuple[PartitionKey, Callable[[Any], str | None], Callable[[AnyEvent], bool] | None, list[Detector] | None]


def _routes_by_kind(routes: dict[PartitionKey, list[Detector]]) -> dict[str, list[_Route]]:
    """By event kind, the routes that may take such an event: the route's key, the function giving an event's
    value of it, the question to ask when only detectors with their own key might take it (None when the
    kind alone decides), and, when every detector of the route learns from digests, those that take the
    kind (None when the route carries events). Resolved once, not once an event."""
    by_kind: dict[str, list[_Route]] = {}
    for kind in get_args(EventKind):
        by_kind[kind] = []
        for key, group in routes.items():
            group = [d for d in group if not d.tallies]  # these get tallies from the ingest, not events
            if not group:
                continue
            taken = any(kind in d.meta.event_kinds for d in group if has_standard_key(d))
            digesters = ([d for d in group if kind in d.meta.event_kinds]
                         if all(d.digest_type is not None for d in group) else None)
            if taken or not all(has_standard_key(d) for d in group):
                by_kind[kind].append((key, value_of(key, kind), None if taken else _taker(group), digesters))
    return by_kind


def _taker(group: list[Detector]) -> Callable[[AnyEvent], bool]:
    """Whether any detector of a route takes an event that has a value of the route's key.

    Detectors with the standard key take such an event by its kind alone; the others are asked.
    """
    kinds = frozenset().union(*(d.meta.event_kinds for d in group if has_standard_key(d)))
    custom = [d for d in group if not has_standard_key(d)]

    def takes(event: AnyEvent) -> bool:
        return event.kind in kinds or any(d.key(event) for d in custom)

    return takes


def _route_agent(app: faust.App, topic: Any, key: str, lane: _Lane, batches: Any, handle: Any,
                 deadletter: Callable[[Message, str, str], None]) -> None:
    queue = app.handover.register([topic.get_topic_name()])
    digests = digest_decoder([d.digest_type for d in lane.engine.detectors if d.digest_type is not None])

    @app.agent(topic, name=f"modelsiem.route-{key}")
    async def route(stream: faust.StreamT) -> None:
        async for raws in batches(queue):
            items: list[_Item] = []
            for raw in raws:
                routed = unpack(raw)
                if isinstance(routed, Rejected):
                    log.error("dead-lettered %s[%d]@%d: %s", raw.topic, raw.partition, raw.offset, routed.reason)
                    deadletter(raw, routed.reason, "route")
                    continue
                for source, kind, value in routed:
                    event = digests(value) if kind == DIGEST else decode(value, kind)
                    if isinstance(event, Rejected):  # the worker validated it: another writer's, or a bug
                        dead = letter(raw, source, value)
                        log.error("dead-lettered a routed event from %s[%d]@%d: %s", dead.topic, dead.partition,
                                  dead.offset, event.reason)
                        deadletter(dead, event.reason, "route")
                        continue
                    items.append((raw.partition, raw, event, source, value))
                if len(items) >= BATCH_MAX:  # a routed message holds many events: engine batches stay small
                    handle(lane, items)
                    items = []
            handle(lane, items)

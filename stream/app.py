"""The faust worker: events in, detectors run with changelogged state, alerts out.

Flow (one consumer group, any number of workers):

- ``ingest`` consumes the inference and feedback topics (keyed by principal
  id), decodes each message, dead-letters what is invalid, runs the detectors
  partitioned by principal in place, and forwards each event to one route
  topic per other partition key (``<app>-route-fingerprint``...), keyed by that
  key, so that every event of one item reaches the same worker.
- ``route-<key>`` consumes a route topic and runs the detectors of that key.
- Detector state lives in one faust table per detector, backed by a compacted
  changelog topic: a restarted worker (or the one that takes its partitions
  over) restores it before it processes anything. Changed records are
  checkpointed to the changelog at each offset commit, before the offsets are
  chosen, so committed offsets never run ahead of the saved state; see
  ``stream.checkpoint``. Alerts (and quarantine records, the
  feedback event ids of a poisoning campaign) are delivered before the state
  that produced them is saved; see ``Engine``.

The app is built by :func:`create_app` (no module-level app, no import-time
side effects), so tests and commands build their own with their settings.
"""

from __future__ import annotations

import logging
import ssl
from collections import defaultdict
from typing import Any

import faust
import orjson

from connectors.kafka import DEADLETTER_MAX_BYTES, deadletter_headers
from detectors.base import AnyEvent, Detector, PartitionKey, State, partition_value
from modelsiem.settings import KafkaSettings, Settings
from stream.checkpoint import CheckpointSensor, CheckpointStore
from stream.decode import Kind, Rejected, decode
from stream.engine import Engine, Position, Step

log = logging.getLogger("modelsiem.worker")
_SOURCE = "modelsiem.source"  # header of a routed event: where it first entered Kafka


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


def new_app(settings: Settings, partitions: int, app_id: str | None = None) -> faust.App:
    """A faust app configured for modelsiem, with no agents yet."""
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    return faust.App(
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
    )


def create_app(settings: Settings, detectors: list[Detector], partitions: int) -> faust.App:
    """Build the worker app; ``partitions`` is the partition count of the event topics."""
    t = settings.topics
    app = new_app(settings, partitions)
    kinds: dict[str, Kind] = {t.inference: "inference", t.feedback: "feedback"}
    alerts_topic = app.topic(t.alerts, key_type=bytes, value_type=bytes)
    deadletter_topic = app.topic(t.deadletter, key_type=bytes, value_type=bytes)
    quarantine_topic = app.topic(t.quarantine, key_type=bytes, value_type=bytes)
    by_key: dict[PartitionKey, list[Detector]] = defaultdict(list)
    for d in detectors:
        by_key[d.partition_key].append(d)

    def lane(group: list[Detector], topics: set[str]) -> _Lane:
        tables = {
            d.meta.id: app.Table(f"detector-{d.meta.id}", default=None, partitions=partitions, key_type=str)
            for d in group  # keys and values go to the changelog as JSON
        }
        return _Lane(Engine(group, max_keys=settings.max_keys), CheckpointStore(tables, topics))

    inline = lane(by_key.pop("principal", []), {t.inference, t.feedback})
    routes = {
        key: (app.topic(f"{settings.app_id}-route-{key}", key_type=bytes, value_type=bytes, internal=True,
                        partitions=partitions), group)
        for key, group in by_key.items()
    }
    route_lanes = {key: lane(group, {topic.get_topic_name()}) for key, (topic, group) in routes.items()}
    lanes = [inline, *route_lanes.values()]
    app.sensors.add(CheckpointSensor([each.store for each in lanes]))

    async def handle(lane: _Lane, ev: Any, event: AnyEvent, source: Position) -> None:
        if not lane.engine.detectors:
            return
        msg = ev.message
        lane.store.at(msg.partition)
        try:
            step: Step = lane.engine.process(event, lane.store, source, msg.partition)
        except Exception as exc:  # a detector's bug must not stop the partition behind this event
            log.exception("detectors failed on %s[%d]@%d; dead-lettered", msg.topic, msg.partition, msg.offset)
            reason = f"detector failure: {type(exc).__name__}: {exc}"[:1000]
            await deadletter_topic.send(key=ev.key, value=ev.value,
                                        headers=deadletter_headers(reason, msg.topic, msg.partition, msg.offset, "engine"))
            return
        deliveries = [
            await alerts_topic.send(key=alert["event"]["id"].encode(), value=orjson.dumps(alert))
            for alert in step.alerts
        ] + [
            await quarantine_topic.send(key=record["event_id"].encode(), value=orjson.dumps(record))
            for record in step.quarantine
        ]
        for delivery in deliveries:
            await delivery  # on the broker before the state that produced it is saved
        step.save(lane.store)

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        for each in lanes:
            each.forget({tp.partition for tp in revoked if tp.topic in each.store.topics})

    @app.agent(app.topic(t.inference, t.feedback, key_type=bytes, value_type=bytes), name="modelsiem.ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for ev in stream.events():
            msg = ev.message
            source = Position(msg.topic, msg.partition, msg.offset)
            event = decode(ev.value or b"", kinds[msg.topic])
            if isinstance(event, Rejected):
                log.warning("dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, event.reason)
                await deadletter_topic.send(
                    key=ev.key,
                    value=ev.value,
                    headers=deadletter_headers(event.reason, msg.topic, msg.partition, msg.offset, "decode"),
                )
                continue
            for key, (topic, group) in routes.items():
                value = partition_value(key, event)
                if value is not None and any(d.key(event) for d in group):
                    # The source position travels along: a re-delivered event forwarded twice is applied once.
                    await topic.send(key=f"{event.model.name}\x1f{value}".encode(),
                                     value=event.model_dump_json().encode(),
                                     headers=[(_SOURCE, f"{source.topic}\x1f{source.partition}\x1f{source.offset}".encode())])
            await handle(inline, ev, event, source)

    for key, (topic, _) in routes.items():
        _route_agent(app, key, topic, route_lanes[key], handle)
    return app


class _Lane:
    """One agent's engine and its checkpointed state."""

    def __init__(self, engine: Engine, store: CheckpointStore) -> None:
        self.engine, self.store = engine, store

    def forget(self, partitions: set[int]) -> None:
        self.store.forget(partitions)
        self.engine.forget(partitions)


def _route_agent(app: faust.App, key: str, topic: Any, lane: _Lane, handle: Any) -> None:
    @app.agent(topic, name=f"modelsiem.route-{key}")
    async def route(stream: faust.StreamT) -> None:
        async for ev in stream.events():
            msg = ev.message
            event = decode(ev.value or b"")
            if isinstance(event, Rejected):  # only the worker writes here: a bug, not bad input
                log.error("undecodable routed event %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, event.reason)
                continue
            header = dict(msg.headers or []).get(_SOURCE)
            if header:
                topic_name, partition, offset = header.decode().split("\x1f")
                source = Position(topic_name, int(partition), int(offset))
            else:  # routed by an older worker: its own position is the best guard there is
                source = Position(msg.topic, msg.partition, msg.offset)
            await handle(lane, ev, event, source)

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
  over) restores it before it processes anything. Alerts (and quarantine
  records, the feedback event ids of a poisoning campaign) are delivered before
  the state that produced them is saved; see ``Engine``.

The app is built by :func:`create_app` (no module-level app, no import-time
side effects), so tests and commands build their own with their settings.
"""

from __future__ import annotations

import logging
import ssl
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import faust
import orjson

from connectors.kafka import DEADLETTER_MAX_BYTES, deadletter_headers
from detectors.base import AnyEvent, Detector, PartitionKey, State, partition_value
from modelsiem.settings import KafkaSettings, Settings
from stream.decode import Kind, Rejected, decode
from stream.engine import Engine, Position, Step

log = logging.getLogger("modelsiem.worker")


class TableStore:
    """The engine's state store over faust tables, one per detector."""

    def __init__(self, tables: dict[str, Any]) -> None:
        self.tables = tables

    def get(self, detector_id: str, key: str) -> State | None:
        return self.tables[detector_id].get(key)

    def put(self, detector_id: str, key: str, record: State) -> None:
        self.tables[detector_id][key] = record

    def delete(self, detector_id: str, key: str) -> None:
        # Inside the event's context: the tombstone goes to that event's changelog partition,
        # which is the key's own (the engine only expires keys of the partition at hand).
        self.tables[detector_id].pop(key, None)

    def items(self, detector_id: str) -> Iterable[tuple[str, State]]:
        return list(self.tables[detector_id].items())


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


def create_app(settings: Settings, detectors: list[Detector], partitions: int) -> faust.App:
    """Build the worker app; ``partitions`` is the partition count of the event topics."""
    t = settings.topics
    settings.worker_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.app_id,
        broker=";".join(f"kafka://{h.strip()}" for h in settings.kafka.bootstrap.split(",")),
        broker_credentials=_credentials(settings.kafka),
        store="memory://",
        datadir=str(settings.worker_dir),
        web_enabled=False,
        autodiscover=False,
        topic_partitions=partitions,
        topic_replication_factor=t.replication,
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
    kinds: dict[str, Kind] = {t.inference: "inference", t.feedback: "feedback"}
    alerts_topic = app.topic(t.alerts, key_type=bytes, value_type=bytes)
    deadletter_topic = app.topic(t.deadletter, key_type=bytes, value_type=bytes)
    quarantine_topic = app.topic(t.quarantine, key_type=bytes, value_type=bytes)
    tables = {
        d.meta.id: app.Table(
            f"detector-{d.meta.id}",
            default=None,
            partitions=partitions,
            key_type=str,  # keys and values go to the changelog as JSON
        )
        for d in detectors
    }
    store = TableStore(tables)

    by_key: dict[PartitionKey, list[Detector]] = defaultdict(list)
    for d in detectors:
        by_key[d.partition_key].append(d)
    inline = Engine(by_key.pop("principal", []), max_keys=settings.max_keys)
    routes = {
        key: (app.topic(f"{settings.app_id}-route-{key}", key_type=bytes, value_type=bytes, internal=True,
                        partitions=partitions), Engine(group, max_keys=settings.max_keys))
        for key, group in by_key.items()
    }

    async def run_engine(engine: Engine, event: AnyEvent, position: Position) -> None:
        step: Step = engine.process(event, store, position)
        deliveries = [
            await alerts_topic.send(key=alert["event"]["id"].encode(), value=orjson.dumps(alert))
            for alert in step.alerts
        ] + [
            await quarantine_topic.send(key=record["event_id"].encode(), value=orjson.dumps(record))
            for record in step.quarantine
        ]
        for delivery in deliveries:
            await delivery  # on the broker before the state that produced it is saved
        step.save(store)

    @app.agent(app.topic(t.inference, t.feedback, key_type=bytes, value_type=bytes), name="modelsiem.ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for ev in stream.events():
            msg = ev.message
            event = decode(ev.value or b"", kinds[msg.topic])
            if isinstance(event, Rejected):
                log.warning("dead-lettered %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, event.reason)
                await deadletter_topic.send(
                    key=ev.key,
                    value=ev.value,
                    headers=deadletter_headers(event.reason, msg.topic, msg.partition, msg.offset, "decode"),
                )
                continue
            if inline.detectors:
                await run_engine(inline, event, Position(msg.topic, msg.partition, msg.offset))
            for key, (topic, engine) in routes.items():
                value = partition_value(key, event)
                if value is not None and any(d.key(event) for d in engine.detectors):
                    await topic.send(key=f"{event.model.name}\x1f{value}".encode(), value=event.model_dump_json().encode())

    for key, (topic, engine) in routes.items():
        _route_agent(app, key, topic, engine, run_engine)
    return app


def _route_agent(app: faust.App, key: str, topic: Any, engine: Engine, run_engine: Any) -> None:
    @app.agent(topic, name=f"modelsiem.route-{key}")
    async def route(stream: faust.StreamT) -> None:
        async for ev in stream.events():
            msg = ev.message
            event = decode(ev.value or b"")
            if isinstance(event, Rejected):  # only the worker writes here: a bug, not bad input
                log.error("undecodable routed event %s[%d]@%d: %s", msg.topic, msg.partition, msg.offset, event.reason)
                continue
            await run_engine(engine, event, Position(msg.topic, msg.partition, msg.offset))

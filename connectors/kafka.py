"""Kafka plumbing shared by the commands: topic creation, producing, dead-letter records."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from modelsiem.settings import Settings

log = logging.getLogger("modelsiem.kafka")

# Headers of a dead-letter record; its key and value are the original message's, byte for byte.
DLQ_REASON = "modelsiem.reason"
DLQ_TOPIC = "modelsiem.source.topic"
DLQ_PARTITION = "modelsiem.source.partition"
DLQ_OFFSET = "modelsiem.source.offset"
DLQ_STAGE = "modelsiem.stage"
DEADLETTER_MAX_BYTES = 16 * 1024 * 1024


def deadletter_headers(reason: str, topic: str, partition: int, offset: int, stage: str) -> list[tuple[str, bytes]]:
    return [
        (DLQ_REASON, reason.encode()),
        (DLQ_TOPIC, topic.encode()),
        (DLQ_PARTITION, str(partition).encode()),
        (DLQ_OFFSET, str(offset).encode()),
        (DLQ_STAGE, stage.encode()),
    ]


def admin(settings: Settings) -> AdminClient:
    return AdminClient(settings.kafka.client_config())


def ensure_topics(
    settings: Settings, configs: dict[str, dict[str, str]] | None = None, timeout: float = 30.0
) -> dict[str, int]:
    """Create the event, alert, dead-letter and quarantine topics if missing; return each one's partition count.

    ``configs`` adds topic configs by topic name, for the topics this call creates.
    """
    t = settings.topics
    client = admin(settings)
    wanted = [t.inference, t.feedback, t.alerts, t.deadletter, t.quarantine]
    # The dead-letter topic takes what the event topics may have let through, byte for byte.
    configs = {t.deadletter: {"max.message.bytes": str(DEADLETTER_MAX_BYTES)}, **(configs or {})}
    futures = client.create_topics(
        [NewTopic(name, num_partitions=t.partitions, replication_factor=t.replication, config=configs.get(name, {}))
         for name in wanted],
        operation_timeout=timeout,
        request_timeout=timeout,
    )
    for name, future in futures.items():
        try:
            future.result(timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    # A topic just created may take a moment to appear in the broker's metadata.
    deadline = time.monotonic() + timeout
    while True:
        metadata = client.list_topics(timeout=timeout)
        if all(name in metadata.topics and metadata.topics[name].partitions for name in wanted):
            return {name: len(metadata.topics[name].partitions) for name in wanted}
        if time.monotonic() > deadline:
            missing = [name for name in wanted if name not in metadata.topics]
            raise RuntimeError(f"topics not visible after {timeout:.0f} s: {missing}")
        time.sleep(0.2)


def producer(settings: Settings, **overrides: Any) -> Producer:
    conf: dict[str, Any] = {
        **settings.kafka.client_config(),
        "enable.idempotence": True,
        "linger.ms": 20,
        "compression.type": "lz4",
        "message.max.bytes": DEADLETTER_MAX_BYTES,
    }
    conf.update(overrides)
    return Producer(conf)


def publish_events(settings: Settings, events: Iterable[dict[str, Any]]) -> int:
    """Publish contract events to their topics, keyed by principal id; return how many."""
    topics = {"inference": settings.topics.inference, "feedback": settings.topics.feedback}
    errors: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(str(err))

    prod = producer(settings)
    count = 0
    for event in events:
        topic = topics[event["kind"]]
        value = orjson.dumps(event)
        while True:
            try:
                prod.produce(topic, value=value, key=event["principal"]["id"].encode(), on_delivery=on_delivery)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                prod.poll(0.5)
        count += 1
        prod.poll(0)
    remaining = prod.flush(60)
    if remaining or errors:
        raise RuntimeError(f"{remaining} events undelivered, {len(errors)} delivery errors; first: {errors[:1]}")
    return count


class Outbox:
    """What the worker sends (alerts, quarantine and dead-letter records, state checkpoints), flushed on demand.

    The worker enqueues and moves on; :meth:`flush` is called before detector
    state is checkpointed, so a record is on the broker before the state that
    produced it is saved (a crash in between re-applies the event and re-sends
    the record under the same key, which consumers de-duplicate), and after.
    """

    def __init__(self, settings: Settings) -> None:
        self._producer = producer(settings, **{"linger.ms": 5})
        self._errors: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def send(self, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]] | None = None, partition: int = -1) -> None:
        """Enqueue a record; ``partition`` -1 lets the key choose it."""
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers, partition=partition,
                                       on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: wait for deliveries to make room
                self._producer.poll(0.1)
        self._producer.poll(0)

    def flush(self) -> None:
        """Block until every record sent so far is on the broker; raise if one failed.

        While Kafka is away this waits (nothing downstream can progress
        anyway); a record fails only after librdkafka's ``message.timeout.ms``
        (5 minutes), and then the worker stops rather than save state past it.
        """
        while remaining := self._producer.flush(10):
            if self._errors:
                break
            log.warning("waiting for Kafka to take %d records (alerts, quarantine, dead letters, state)", remaining)
        if self._errors:
            errors, self._errors = self._errors[:3], []
            raise KafkaException(f"records not delivered ({errors}); stopping before saving state past them")

"""Finds messages the stream skipped and reads them back from Kafka.

faust-streaming 0.15 can drop a message while its consumer rebalances (a
worker joining, leaving or restarting): the fetcher moves its read offset past
a message whose hand-over to the stream the rebalance interrupted (upstream
issues 216, 312, 606). The agent never sees that event, and faust never
commits past the offset it never acknowledged.

The topics the worker reads are neither compacted nor transactional, so the
offsets of one partition are consecutive: a jump from offset 254 to 256 means
255 was skipped. :class:`SkippedOffsets` notices the jump, reads the missing
messages directly from Kafka, and puts them in front of the one that revealed
them; once processed they are acknowledged to faust like any other message, so
commits move on. A message that turns up twice (the rebalance re-delivers it
after all) is applied once: the engine's position guard skips it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition
from faust.types import TP, Message

from modelsiem.settings import KafkaSettings

log = logging.getLogger("modelsiem.worker")


@dataclass(slots=True)
class Raw:
    """A message as the agents use it, delivered by faust or read back here."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: float = 0.0
    read_back: bool = False  # not delivered by faust: to be acknowledged to it once processed

    @classmethod
    def of(cls, message: Any) -> Raw:
        headers = message.headers or []
        return cls(message.topic, message.partition, message.offset, message.key, message.value,
                   list(headers.items() if isinstance(headers, dict) else headers), message.timestamp or 0.0)


class SkippedOffsets:
    """Per partition, the last offset the agent got; fills the holes faust leaves."""

    def __init__(self, kafka: KafkaSettings, read_timeout: float = 60.0) -> None:
        self.kafka = kafka
        self.read_timeout = read_timeout
        self.last: dict[tuple[str, int], int] = {}

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions moved away: whoever gets them back starts afresh from the committed offset."""
        for tp in partitions:
            self.last.pop(tp, None)

    async def complete(self, messages: Sequence[Raw]) -> list[Raw]:
        """``messages`` in order, with every message skipped before one of them read back and put in front of it."""
        out: list[Raw] = []
        for message in messages:
            tp = (message.topic, message.partition)
            last = self.last.get(tp)
            if last is not None and message.offset > last + 1:
                log.warning("%s[%d]: offsets %d..%d were skipped by the consumer; reading them back",
                            message.topic, message.partition, last + 1, message.offset - 1)
                out.extend(await asyncio.to_thread(self._read, message.topic, message.partition,
                                                   last + 1, message.offset))
            # A lower offset is a re-delivery after a rebalance: count on from there.
            self.last[tp] = message.offset
            out.append(message)
        return out

    def _read(self, topic: str, partition: int, start: int, end: int) -> list[Raw]:
        consumer = Consumer({**self.kafka.client_config(), "group.id": f"modelsiem-readback-{uuid.uuid4().hex}",
                             "enable.auto.commit": False, "enable.partition.eof": False,
                             "auto.offset.reset": "earliest"})  # below the log start (retention): from its start
        try:
            consumer.assign([TopicPartition(topic, partition, start)])
            found: list[Raw] = []
            reached = start - 1
            deadline = time.monotonic() + self.read_timeout
            while reached < end - 1:  # an offset removed by retention is simply not found
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read back {topic}[{partition}] offsets {start}..{end - 1}")
                for msg in consumer.consume(end - start, timeout=1.0):
                    if msg.error() is None:
                        reached = max(reached, msg.offset())
                        if start <= msg.offset() < end:
                            found.append(Raw(topic, partition, msg.offset(), msg.key(), msg.value(),
                                             list(msg.headers() or []), msg.timestamp()[1] / 1000, read_back=True))
            return found
        finally:
            consumer.close()


def acknowledge(consumer: Any, messages: Iterable[Raw]) -> None:
    """Tell faust's consumer the read-back messages are done, so that it commits past them."""
    for m in messages:
        if m.read_back:
            consumer.ack(Message(m.topic, m.partition, m.offset, m.timestamp, 0, m.headers, m.key, m.value,
                                 None, tp=TP(m.topic, m.partition)))

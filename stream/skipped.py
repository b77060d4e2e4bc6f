"""Finds messages the stream skipped and reads them back from Kafka.

faust-streaming 0.15 can drop a message while its consumer rebalances (a
worker joining, leaving or restarting): the fetcher moves its read offset past
a message whose hand-over to the stream the rebalance interrupted (upstream
issues 216, 312, 606). The agent never sees that event, and faust never
commits past the offset it never acknowledged. (``stream.consumer`` gives back
the records of a fetch that outlives a rebalance, the cause found here; this
read-back stays for any hole left another way.)

In a topic that is not compacted, written without transactions, the offsets of
one partition are consecutive: a jump from offset 254 to 256 means 255 was
skipped. :class:`SkippedOffsets` notices the jump, reads the missing messages
directly from Kafka, and puts them in front of the one that revealed them; once
processed they are acknowledged to faust like any other message, so commits
move on. A message that turns up twice (the rebalance re-delivers it after all)
is applied once: the engine's position guard skips it.

A platform may publish events in transactions, though: each commit marker
takes an offset that holds no event. A read-back that finds nothing marks the
partition as gapped, and from then on its jumps are read back only within
``watch`` seconds of a rebalance, when faust drops messages, rather than at
every transaction.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord
from confluent_kafka import Consumer, TopicPartition

from modelsiem.settings import KafkaSettings

log = logging.getLogger("modelsiem.worker")


@dataclass(slots=True)
class Raw:
    """A message made here: read back from Kafka, or what is dead-lettered in place of one."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]] = ()


# A message as the agents read it: a record as aiokafka fetched it for the worker's consumer (handed over as it
# is: copying every field of every record into a Raw was 4 % of the worker), or a Raw. Both have a topic,
# partition, offset, key, value and headers.
Message = Raw | ConsumerRecord


class SkippedOffsets:
    """Per partition, the last offset the agent got; fills the holes faust leaves."""

    def __init__(self, kafka: KafkaSettings, read_timeout: float = 60.0, watch: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kafka = kafka
        self.read_timeout = read_timeout
        self.watch = watch
        self.clock = clock
        self.last: dict[tuple[str, int], int] = {}
        self.gapped: set[tuple[str, int]] = set()  # partitions whose offsets have gaps of their own
        self.watch_until = clock() + watch  # the first assignment is a rebalance too

    def rebalanced(self) -> None:
        """Partitions moved: look into every jump for a while, gapped partitions included."""
        self.watch_until = self.clock() + self.watch

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Partitions moved away: whoever gets them back starts afresh from the committed offset."""
        for tp in partitions:
            self.last.pop(tp, None)

    async def complete(self, messages: Sequence[Message]) -> list[Message]:
        """``messages`` in order, with every message skipped before one of them read back and put in front of it."""
        out: list[Message] = []
        for message in messages:
            tp = (message.topic, message.partition)
            last = self.last.get(tp)
            if last is not None and message.offset > last + 1 and (
                    tp not in self.gapped or self.clock() < self.watch_until):
                found = await asyncio.to_thread(self._read, message.topic, message.partition, last + 1, message.offset)
                if found:
                    log.warning("%s[%d]: %d message(s) of offsets %d..%d were skipped by the consumer; read back",
                                message.topic, message.partition, len(found), last + 1, message.offset - 1)
                elif tp not in self.gapped:
                    log.info("%s[%d]: offsets %d..%d hold no message (transaction markers or compaction)",
                             message.topic, message.partition, last + 1, message.offset - 1)
                    self.gapped.add(tp)
                out.extend(found)
            # A lower offset is a re-delivery after a rebalance: count on from there.
            self.last[tp] = message.offset
            out.append(message)
        return out

    def _read(self, topic: str, partition: int, start: int, end: int) -> list[Raw]:
        """The messages at offsets ``start`` to ``end - 1`` that exist."""
        consumer = Consumer({**self.kafka.client_config(), "group.id": f"modelsiem-readback-{uuid.uuid4().hex}",
                             "enable.auto.commit": False, "enable.partition.eof": False,
                             # What faust's consumer reads (it does not wait for transactions to commit).
                             "isolation.level": "read_uncommitted",
                             "auto.offset.reset": "earliest"})  # below the log start (retention): from its start
        try:
            consumer.assign([TopicPartition(topic, partition, start)])
            found: list[Raw] = []
            deadline = time.monotonic() + self.read_timeout
            # Read up to the message that revealed the hole, which exists: offsets in between that hold
            # no message (a transaction marker, a record removed by retention or compaction) are not found.
            reached = start - 1
            while reached < end:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"could not read back {topic}[{partition}] offsets {start}..{end - 1}")
                for msg in consumer.consume(end - start + 1, timeout=1.0):
                    if msg.error() is None:
                        reached = max(reached, msg.offset())
                        if start <= msg.offset() < end:
                            found.append(Raw(topic, partition, msg.offset(), msg.key(), msg.value(),
                                             msg.headers() or ()))
            return found
        finally:
            consumer.close()

"""A fetch's records of one partition, handed to an agent in one piece.

faust hands its streams one message at a time: a message object, an event
object, a queue put and get, an await and an acknowledgement per message. On
this project's stack its do-nothing agent handled 7,000–11,000 events/s
against 317,000 for the aiokafka consumer under it, and that path was most of
the worker's time (README, Performance). For the topics
registered here, the worker's consumer (``stream.consumer``) skips all of it:
it puts an agent's part of each fetch on the agent's queue as one piece, the
partitions' records taken in turn as faust's scheduler takes them, as aiokafka
made them (see :data:`stream.skipped.Message`); the agent acknowledges their
offsets in one step once it has processed them.

Everything else stays faust's: the consumer group and its rebalances, the
tables and their recovery, offset commits (from the acknowledged offsets, as
for any message), and flow control. A rebalance stops the flow and clears the
queues (they are faust flow-control queues), and faust seeks every assigned
partition back to its committed offset; what the agent takes from a queue
under an earlier consumer generation is dropped rather than processed, as
faust drops its own stale events. What was queued is therefore read again,
never lost, and what the agent had already applied is skipped by the
engine's position guard (``stream.engine``), never applied twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any

from faust.types import TP
from faust.types.tuples import ack_lock

from stream.skipped import Message

# Fetches waiting for one agent, each at most 1 MiB per partition (aiokafka's default). One is enough: an agent
# takes far longer over a piece than the consumer over a fetch, and aiokafka fetches ahead meanwhile. (Two, in
# one run each: 5,314 and 5,397 events/s, peak RSS 314 and 309 MB; one: 6,306 events/s, 291 MB.)
QUEUE_PIECES = 1


@dataclass(frozen=True, slots=True)
class Piece:
    """An agent's records from one fetch, its partitions interleaved, and the consumer generation that fetched them."""

    generation: int
    raws: list[Message]


class Handover:
    """The topics whose records go to an agent's queue in pieces, rather than to faust's streams."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.queues: dict[str, Any] = {}

    def register(self, topics: Sequence[str]) -> Any:
        """A queue that gets every piece of ``topics`` (an agent's topics), bounded, cleared at a rebalance."""
        queue = self.app.FlowControlQueue(maxsize=QUEUE_PIECES, clear_on_resume=True)
        for topic in topics:
            self.queues[topic] = queue
        return queue

    async def pieces(self, queue: Any, most: int) -> AsyncIterator[list[Message]]:
        """The queue's records in runs of at most ``most``, those of an earlier generation left out."""
        app = self.app
        while True:
            piece: Piece = await queue.get()
            if piece.generation != app.consumer_generation_id or not app.flow_control.is_active():
                continue  # fetched before a rebalance: the partition was sought back, it comes again
            raws = piece.raws
            for start in range(0, len(raws), most):
                yield raws[start:start + most]


def interleaved(partitions: Sequence[list[Message]]) -> list[Message]:
    """The records of several partitions, one of each in turn, as faust's scheduler hands them over.

    Partitions are ordered apart, but their events are about the same time at about the same place in
    a fetch: taken in turn, a batch spans the same stretch of time in each, and detectors that see
    several partitions (a campaign's) get events in near time order rather than one partition's minutes
    after another's.

    >>> from stream.skipped import Raw
    >>> [r.offset for r in interleaved([[Raw("t", 0, o, None, None) for o in (1, 2, 3)],
    ...                                 [Raw("t", 1, o, None, None) for o in (7,)]])]
    [1, 7, 2, 3]
    """
    if len(partitions) == 1:
        return partitions[0]
    return [raw for turn in zip_longest(*partitions) for raw in turn if raw is not None]


def acknowledge(consumer: Any, raws: Sequence[Message]) -> None:
    """Mark ``raws`` processed, as faust's ``Consumer.ack`` does for each of its messages, in one step."""
    by_tp: dict[tuple[str, int], list[int]] = {}
    for raw in raws:
        by_tp.setdefault((raw.topic, raw.partition), []).append(raw.offset)
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    with ack_lock:
        for (topic, partition), offsets in by_tp.items():
            if not acks_enabled_for(topic):
                continue
            tp = TP(topic, partition)
            committed = consumer._committed_offset[tp]
            index = consumer._acked_index[tp]
            new = [offset for offset in offsets if (committed is None or offset >= committed) and offset not in index]
            index.update(new)
            consumer._acked[tp].extend(new)
            consumer._n_acked += len(new)

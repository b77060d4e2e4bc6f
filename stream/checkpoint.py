"""Detector state for the faust worker: kept in memory, checkpointed to the changelog at each commit.

Writing a key's whole record to the changelog on every event makes Kafka carry
each state as many times as it has events, and serialising large records
(a cohort's) dominates the worker. So changed records are written once per
offset commit instead: :class:`CheckpointSensor` hears faust begin a commit,
and writes every changed record before faust computes the offsets to commit
(synchronously, so no event slips in between), waiting until the broker has
them. Committed offsets therefore never run ahead of the checkpointed state: a
crash, a restart or a rebalance re-delivers exactly the events whose effect was
not checkpointed, and the records' positions (see ``stream.engine``) skip
those that were.

The records go through the worker's confluent-kafka producer, not faust's:
faust sends one message at a time from Python and makes the agents wait while
more than a hundred are pending, so a commit of a few thousand changed keys
stalled every agent for a second or more. The bytes are what faust's table
would write (JSON key and value; no value for a deleted key), so faust restores
the tables from them as from its own.

Each store serves one agent; its partitions are that agent's source partitions,
which are also the changelog partitions of the keys read from them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from faust.sensors import Sensor

from detectors.base import State

log = logging.getLogger("modelsiem.worker")
_GONE = None  # a deleted key, to be written as a tombstone
_CLEAN = object()  # a key not changed since the last checkpoint
# Sends one changelog record: (topic, partition, key, value or None for a tombstone).
Send = Callable[[str, int, bytes, bytes | None], None]


def _json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)  # as faust's JSON codec writes it


class CheckpointStore:
    """The engine's state store over faust tables, one per detector, with write-behind.

    ``send`` puts a changelog record in the worker's outbox; the sensor waits
    for its delivery before faust commits.
    """

    def __init__(self, tables: dict[str, Any], topics: set[str], send: Send,
                 max_record_bytes: int = 15 * 1024 * 1024) -> None:
        self.tables = tables
        self.topics = topics
        self.send = send
        self.max_record_bytes = max_record_bytes
        self.dirty: dict[int, dict[tuple[str, str], State | None]] = {}
        self._dicts: dict[str, dict[str, State]] = {}
        self.partition = 0

    def at(self, partition: int) -> None:
        """Select the partition of the event about to be processed."""
        self.partition = partition
        self.dirty.setdefault(partition, {})

    # -- the engine's StateStore protocol, for the selected partition
    def get(self, detector_id: str, key: str) -> State | None:
        record = self.dirty[self.partition].get((detector_id, key), _CLEAN)
        return self._saved(detector_id).get(key) if record is _CLEAN else record

    def _saved(self, detector_id: str) -> dict[str, State]:
        """The dict under a table's in-memory store: faust's ``Store.get`` goes through Python-level
        ``Mapping.get`` and ``__getitem__`` and raises ``KeyError`` for a key never seen (0.6 µs against 0.04),
        once per key and engine batch. The store keeps its dict for the table's life (recovery and a
        rebalance update or clear it in place)."""
        saved = self._dicts.get(detector_id)
        if saved is None:
            saved = self._dicts[detector_id] = self.tables[detector_id].data.data
        return saved

    def put(self, detector_id: str, key: str, record: State) -> None:
        self.dirty[self.partition][(detector_id, key)] = record

    def delete(self, detector_id: str, key: str) -> None:
        self.dirty[self.partition][(detector_id, key)] = _GONE

    def items(self, detector_id: str) -> Iterable[tuple[str, State]]:
        merged = dict(self.tables[detector_id].data.items())
        for (det, key), record in self.dirty[self.partition].items():
            if det == detector_id:
                merged[key] = record
        return [(k, v) for k, v in merged.items() if v is not None]

    def checkpoint(self, assigned: set[int]) -> None:
        """Send every changed record of the ``assigned`` partitions to its changelog (buffered)."""
        for partition in list(self.dirty):
            changes = self.dirty.pop(partition)
            if partition not in assigned:
                continue  # moved to another worker, which re-applies these events itself
            for (detector_id, key), record in changes.items():
                table = self.tables[detector_id]
                if record is _GONE:
                    table.data.pop(key, None)
                    value = None
                else:
                    table.data[key] = record
                    value = _json(record)
                    if len(value) > self.max_record_bytes:
                        # Kafka would refuse it and the worker would stop on every restart. The state stays
                        # in memory, so detection goes on; a restart restores the key's last saved state.
                        log.error("state of %s key %s is %d bytes, over the %d-byte limit: not checkpointed",
                                  detector_id, _json(key[:100]).decode(), len(value), self.max_record_bytes)
                        continue
                self.send(table.changelog_topic.get_topic_name(), partition, _json(key), value)

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions moved to another worker: drop what was not checkpointed; it will be re-applied there."""
        for partition in partitions:
            self.dirty.pop(partition, None)


class CheckpointSensor(Sensor):  # type: ignore[misc]
    """Checkpoints the stores when faust begins an offset commit, before it picks the offsets.

    ``deliver`` must block until everything sent so far is on the broker. It
    is called first, so that what the checkpointed state produced (alerts...)
    is never lost behind state that says it was sent, and again after the
    checkpoint, so that the state is saved before the offsets past it.
    """

    def __init__(self, stores: list[CheckpointStore], deliver: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.stores = stores
        self.deliver = deliver

    def on_commit_initiated(self, consumer: Any) -> Any:
        self.deliver()
        assignment = consumer.assignment()
        for store in self.stores:
            store.checkpoint({tp.partition for tp in assignment if tp.topic in store.topics})
        self.deliver()
        return None

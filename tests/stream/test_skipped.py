"""Holes in a partition's offsets are found and filled in order (the read-back itself is integration-tested)."""

from __future__ import annotations

import asyncio

from modelsiem.settings import KafkaSettings
from stream.skipped import Message, Raw, SkippedOffsets


class _Recorded(SkippedOffsets):
    """Reads back from a dict instead of Kafka, and records what it was asked for.

    Offsets in ``markers`` hold no message, as a transaction's commit marker; the clock is set by hand.
    """

    def __init__(self, markers: frozenset[int] = frozenset()) -> None:
        self.now = 0.0
        super().__init__(KafkaSettings(), watch=60.0, clock=lambda: self.now)
        self.markers = markers
        self.asked: list[tuple[str, int, int, int]] = []

    def _read(self, topic: str, partition: int, start: int, end: int) -> list[Raw]:
        self.asked.append((topic, partition, start, end))
        return [Raw(topic, partition, o, None, b"back")
                for o in range(start, end) if o not in self.markers]


def _raw(offset: int, partition: int = 0) -> Raw:
    return Raw("t", partition, offset, None, b"x")


def _offsets(raws: list[Message]) -> list[tuple[int, int, bool]]:
    return [(r.partition, r.offset, _read_back(r)) for r in raws]


def _read_back(raw: Message) -> bool:
    return raw.value == b"back"


def test_a_hole_is_read_back_and_put_in_front_of_the_message_that_revealed_it():
    gaps = _Recorded()
    out = asyncio.run(gaps.complete([_raw(250), _raw(251), _raw(254), _raw(255)]))
    assert _offsets(out) == [(0, 250, False), (0, 251, False), (0, 252, True), (0, 253, True),
                             (0, 254, False), (0, 255, False)]
    assert gaps.asked == [("t", 0, 252, 254)]


def test_partitions_are_tracked_apart_and_across_batches():
    gaps = _Recorded()
    asyncio.run(gaps.complete([_raw(10, 0), _raw(70, 1)]))
    out = asyncio.run(gaps.complete([_raw(11, 0), _raw(72, 1)]))
    assert _offsets(out) == [(0, 11, False), (1, 71, True), (1, 72, False)]


def test_a_redelivery_after_a_rebalance_is_not_a_hole():
    gaps = _Recorded()
    out = asyncio.run(gaps.complete([_raw(300), _raw(301), _raw(290), _raw(291)]))
    assert [r.offset for r in out] == [300, 301, 290, 291]
    assert gaps.asked == []


def test_the_first_message_of_a_partition_and_one_given_back_start_afresh():
    gaps = _Recorded()
    asyncio.run(gaps.complete([_raw(5)]))
    gaps.forget([("t", 0)])  # revoked: another worker moves it on
    out = asyncio.run(gaps.complete([_raw(900)]))
    assert [r.offset for r in out] == [900]
    assert gaps.asked == []


def test_gaps_of_transaction_markers_are_looked_into_only_near_a_rebalance():
    gaps = _Recorded(markers=frozenset({10, 20, 30}))
    # Within the watch after start-up: the gap is read back, holds nothing, and marks the partition.
    out = asyncio.run(gaps.complete([_raw(9), _raw(11)]))
    assert [r.offset for r in out] == [9, 11] and gaps.asked == [("t", 0, 10, 11)]
    gaps.now = 61.0  # the watch is over: the partition's own gaps are no longer read back
    asyncio.run(gaps.complete([_raw(o) for o in [*range(12, 20), 21]]))
    assert len(gaps.asked) == 1
    gaps.rebalanced()  # ... until partitions move again, when faust may skip a message
    out = asyncio.run(gaps.complete([_raw(o) for o in [*range(22, 30), 31, 33]]))
    assert [(r.offset, _read_back(r)) for r in out[-4:]] == [(29, False), (31, False), (32, True), (33, False)]
    assert gaps.asked[1:] == [("t", 0, 30, 31), ("t", 0, 32, 33)]


def test_a_partition_without_gaps_of_its_own_is_always_checked():
    gaps = _Recorded()
    gaps.now = 1000.0  # long after the last rebalance
    out = asyncio.run(gaps.complete([_raw(1), _raw(3)]))
    assert [(r.offset, _read_back(r)) for r in out] == [(1, False), (2, True), (3, False)]

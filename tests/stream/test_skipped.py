"""Holes in a partition's offsets are found and filled in order (the read-back itself is integration-tested)."""

from __future__ import annotations

import asyncio

from modelsiem.settings import KafkaSettings
from stream.skipped import Raw, SkippedOffsets


class _Recorded(SkippedOffsets):
    """Reads back from a dict instead of Kafka, and records what it was asked for."""

    def __init__(self) -> None:
        super().__init__(KafkaSettings())
        self.asked: list[tuple[str, int, int, int]] = []

    def _read(self, topic: str, partition: int, start: int, end: int) -> list[Raw]:
        self.asked.append((topic, partition, start, end))
        return [Raw(topic, partition, o, None, b"back", read_back=True) for o in range(start, end)]


def _raw(offset: int, partition: int = 0) -> Raw:
    return Raw("t", partition, offset, None, b"x")


def _offsets(raws: list[Raw]) -> list[tuple[int, int, bool]]:
    return [(r.partition, r.offset, r.read_back) for r in raws]


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

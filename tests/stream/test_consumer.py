"""The worker's consumer: no records lost to a fetch that outlives a rebalance, no commit held back by duplicates."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from modelsiem.settings import Settings
from stream.app import new_app
from stream.consumer import Consumer

TP0 = TP("events", 0)


@pytest.fixture
def consumer(tmp_path) -> Iterator[Consumer]:
    app = new_app(Settings(worker_dir=tmp_path), partitions=2, app_id="test-consumer")
    assert isinstance(app.consumer, Consumer)  # the worker's app uses this consumer, not faust's own
    yield app.consumer
    app.consumer._thread.thread_loop.close()  # never started: close the loops it made
    app.loop.close()


def test_offsets_acknowledged_twice_are_committed_in_one_go(consumer):
    consumer._committed_offset[TP0] = 7711
    # 7712..7714 recorded once as a gap and once acknowledged for real, as after a rebalance.
    consumer._acked[TP0] = [7711, 7712, 7712, 7713, 7713, 7714, 7714, 7715]
    consumer._acked_index[TP0] = {7711, 7712, 7713, 7714, 7715}
    assert consumer._new_offset(TP0) == 7716
    assert not consumer._acked[TP0] and not consumer._acked_index[TP0]


def test_a_real_hole_still_holds_the_commit_back(consumer):
    consumer._committed_offset[TP0] = 100
    consumer._acked[TP0] = [100, 101, 101, 103]  # 102 not acknowledged yet
    consumer._acked_index[TP0] = {100, 101, 103}
    assert consumer._new_offset(TP0) == 102
    assert consumer._acked[TP0] == [103] and consumer._acked_index[TP0] == {103}


def test_offsets_below_the_committed_one_do_not_cost_a_commit(consumer):
    consumer._committed_offset[TP0] = 50
    consumer._acked[TP0] = [40, 41, 50, 51]
    consumer._acked_index[TP0] = {40, 41, 50, 51}
    assert consumer._new_offset(TP0) == 52


class _Assignment:
    """aiokafka makes a new one at every rebalance."""


class _Record:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _KafkaConsumer:
    """The few parts of aiokafka's consumer that a fetch touches, with a fetch that may outlive a rebalance."""

    def __init__(self, rebalance_during_fetch: bool) -> None:
        self.rebalance_during_fetch = rebalance_during_fetch
        self.subscription = SimpleNamespace(assignment=_Assignment())
        self._subscription = SimpleNamespace(subscription=self.subscription, is_assigned=lambda tp: tp == TP0,
                                             fetch_context=contextlib.nullcontext)
        self._fetcher = SimpleNamespace(_closed=False, _subscriptions=self._subscription, fetched_records=self._fetched)
        self._closed = False
        self.sought: list[tuple[TP, int]] = []

    async def _fetched(self, partitions: Any, timeout: float, max_records: int) -> dict[TP, list[_Record]]:
        if self.rebalance_during_fetch:
            self.subscription.assignment = _Assignment()
        return {TP0: [_Record(5), _Record(6)], TP("gone", 0): [_Record(9)]}

    def seek(self, tp: TP, offset: int) -> None:
        self.sought.append((tp, offset))


def test_records_fetched_across_a_rebalance_are_given_back(consumer):
    kafka = _KafkaConsumer(rebalance_during_fetch=True)
    got = asyncio.run(consumer._thread._fetch_records(kafka, {TP0}, timeout=1.0, max_records=10))
    # Nobody would have delivered them: their partition goes back to the first one taken (a revoked one is let be).
    assert got == {} and kafka.sought == [(TP0, 5)]


def test_records_of_a_steady_assignment_are_delivered(consumer):
    kafka = _KafkaConsumer(rebalance_during_fetch=False)
    got = asyncio.run(consumer._thread._fetch_records(kafka, {TP0}, timeout=1.0, max_records=10))
    assert [r.offset for r in got[TP0]] == [5, 6] and kafka.sought == []

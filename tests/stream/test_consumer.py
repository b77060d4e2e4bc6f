"""The worker's consumer and app: no records lost to a fetch that outlives a rebalance, no commit held back, less per message."""

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
from stream.consumer import FETCH_MAX_WAIT_MS, Consumer, started
from stream.handover import Piece, acknowledge

TP0 = TP("events", 0)


@pytest.fixture
def consumer(tmp_path) -> Iterator[Consumer]:
    asyncio.set_event_loop(asyncio.new_event_loop())  # the app's loop: its own, closed after
    app = new_app(Settings(worker_dir=tmp_path), partitions=2, app_id="test-consumer")
    assert isinstance(app.consumer, Consumer)  # the worker's app uses this consumer, not faust's own
    yield app.consumer
    app.consumer._thread.thread_loop.close()  # never started: close the loops it made
    app.loop.close()
    asyncio.set_event_loop(None)


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


def test_a_hand_over_that_need_not_wait_is_done_in_place():
    delivered: list[str] = []

    async def put() -> None:
        delivered.append("event")

    assert started(put()) is None and delivered == ["event"]  # no event loop, no task: run in place


def test_a_hand_over_that_waits_is_finished_with_its_result_or_its_error():
    async def waits(fail: bool) -> str:
        await asyncio.sleep(0.01)
        await asyncio.sleep(0)
        if fail:
            raise ValueError("full")
        return "put"

    async def both() -> tuple[Any, Any]:
        ok = started(waits(False))
        bad = started(waits(True))
        assert ok is not None and bad is not None
        return await ok, await asyncio.gather(bad, return_exceptions=True)

    ok, (bad,) = asyncio.run(both())
    assert ok == "put" and isinstance(bad, ValueError)


def test_a_waiting_hand_over_given_up_is_cancelled_inside():
    seen: list[str] = []

    async def blocked(gate: asyncio.Event) -> None:
        try:
            await gate.wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def give_up() -> None:
        rest = started(blocked(asyncio.Event()))
        assert rest is not None
        task = asyncio.ensure_future(rest)
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(give_up())
    assert seen == ["cancelled"]


def _record(offset: int, tp: TP = TP0) -> SimpleNamespace:
    """An aiokafka record."""
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset, timestamp=1_700_000_000_000 + offset,
                           timestamp_type=0, key=b"k", value=b"v%d" % offset, headers=[("h", b"1")], checksum=None,
                           serialized_key_size=1, serialized_value_size=2)


def _drain(consumer: Consumer, fetched: dict[TP, list[int]], callback: Any = None,
           stop_flow_after: float | None = None) -> None:
    """Run the consumer's drain loop over one fetch of ``fetched`` offsets by partition (then stop it)."""
    loop = consumer.app.loop
    fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def next_records(timeout: float) -> Any:
        fetcher._stopped.set()
        return {tp: [_record(o, tp) for o in offsets] for tp, offsets in fetched.items()}, set(fetched)

    async def run() -> None:
        if stop_flow_after is not None:
            loop.call_later(stop_flow_after, consumer.stop_flow)
        await asyncio.wait_for(consumer._drain_messages(fetcher), 5)

    consumer._wait_next_records = next_records
    if callback is not None:
        consumer.callback = callback
    loop.run_until_complete(run())


def test_the_drain_loop_hands_every_message_over_in_order(consumer):
    got: list[int] = []

    async def callback(message: Any) -> None:
        if message.offset == 2:
            await asyncio.sleep(0.01)  # a full buffer: this one waits
        got.append(message.offset)

    _drain(consumer, {TP0: [0, 1, 2, 3, 1]}, callback)  # offset 1 again: read already, dropped as faust does
    assert got == [0, 1, 2, 3] and consumer._read_offset[TP0] == 3


def test_a_hand_over_blocked_when_the_flow_stops_is_given_up_with_the_rest_of_the_fetch_as_faust_does(consumer):
    got: list[int] = []
    never = asyncio.Event()

    async def callback(message: Any) -> None:
        if message.offset == 1:
            await never.wait()  # the stream's buffer stays full: a rebalance stops the flow
        got.append(message.offset)

    _drain(consumer, {TP0: [0, 1, 2]}, callback, stop_flow_after=0.05)
    assert got == [0] and consumer._read_offset[TP0] == 0  # 1 and 2 are fetched again after the rebalance


TP1 = TP("events", 1)


def test_records_of_a_registered_topic_go_to_its_queue_a_fetch_at_a_time_partitions_in_turn(consumer):
    queue = consumer.app.handover.register(["events"])
    consumer._read_offset[TP1] = 40
    consumer.app.consumer_generation_id = 3
    consumer.app.topics.acks_enabled_for = lambda topic: True  # as for an agent's topic
    _drain(consumer, {TP0: [0, 1, 2], TP1: [39, 40, 41, 43]})  # 39 read already; 42 is a gap
    piece = queue.get_nowait()
    assert queue.empty() and piece.generation == 3
    assert [(r.partition, r.offset) for r in piece.raws] == [(0, 0), (1, 40), (0, 1), (1, 41), (0, 2), (1, 43)]
    first = piece.raws[0]  # the record as aiokafka made it
    assert (first.topic, first.key, first.value, first.headers) == ("events", b"k", b"v0", [("h", b"1")])
    assert consumer._read_offset[TP0] == 2 and consumer._read_offset[TP1] == 43
    assert consumer._gap[TP1].overlaps(42) and not consumer._gap[TP1].overlaps(41)  # the gap, as faust records it


def test_a_hand_over_to_a_full_queue_is_given_up_when_the_flow_stops(consumer):
    queue = consumer.app.handover.register(["events"])
    for _ in range(queue.maxsize):
        queue.put_nowait(Piece(0, []))  # the agent is behind, then a rebalance stops the flow
    _drain(consumer, {TP0: [7, 8]}, stop_flow_after=0.05)
    assert queue.qsize() == queue.maxsize and consumer._read_offset[TP0] is None  # to be fetched again


def test_a_hand_over_to_a_full_queue_waits_for_the_agent(consumer):
    queue = consumer.app.handover.register(["events"])
    for _ in range(queue.maxsize):
        queue.put_nowait(Piece(0, []))
    consumer.app.loop.call_later(0.05, lambda: [queue.get_nowait() for _ in range(queue.maxsize)])  # the agent
    _drain(consumer, {TP0: [7, 8]})
    assert [r.offset for r in queue.get_nowait().raws] == [7, 8] and consumer._read_offset[TP0] == 8


def test_pieces_come_in_runs_and_those_of_an_earlier_generation_are_dropped(consumer):
    app = consumer.app
    queue = app.handover.register(["events"])
    app.consumer_generation_id = 2
    app.flow_control.resume()  # as once partitions are assigned
    queue.force_put_nowait(Piece(1, [_record(o) for o in range(3)]))  # fetched before a rebalance
    queue.force_put_nowait(Piece(2, [_record(o) for o in range(3, 8)]))  # (past the bound, for the test)

    async def take(runs: int) -> list[list[int]]:
        got = []
        async for raws in app.handover.pieces(queue, 2):
            got.append([r.offset for r in raws])
            if len(got) == runs:
                return got
        return got

    assert app.loop.run_until_complete(asyncio.wait_for(take(3), 5)) == [[3, 4], [5, 6], [7]]


def test_acknowledged_pieces_are_committed_through(consumer):
    consumer.app.topics.acks_enabled_for = lambda topic: True  # as for an agent's topic
    consumer._committed_offset[TP0] = 5
    consumer._committed_offset[TP1] = None
    raws = [_record(o) for o in (3, 5, 6)] + [_record(o, TP1) for o in (0, 1)] + [_record(7)]
    acknowledge(consumer, raws)
    acknowledge(consumer, raws[1:2])  # once more: counted once
    assert consumer._acked[TP0] == [5, 6, 7] and consumer._acked[TP1] == [0, 1]  # 3 is committed already
    assert consumer._n_acked == 5
    assert consumer._new_offset(TP0) == 8 and consumer._new_offset(TP1) == 2


def test_the_app_runs_without_faust_s_statistics_monitor(consumer):
    app = consumer.app
    app.on_init_dependencies()  # where faust adds its monitor to the sensors
    assert app.monitor not in set(app.sensors)
    app.on_init_dependencies()  # and again, harmlessly


def test_the_broker_holds_a_fetch_briefly(consumer):
    # One fetch is in flight per broker: the longer the broker may hold a fetch of quiet partitions,
    # the longer busy partitions wait behind it (faust asks for 1.5 s).
    async def create() -> Any:  # aiokafka's consumer is made inside a running loop, as in its thread
        return consumer._thread._create_worker_consumer(consumer.transport)

    kafka = asyncio.run(create())
    assert kafka._fetch_max_wait_ms == FETCH_MAX_WAIT_MS <= 100

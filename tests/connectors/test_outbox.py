"""The worker's outbox: waiting for delivery holds up no other work."""

from __future__ import annotations

import asyncio

import pytest

from connectors.kafka import Outbox
from modelsiem.settings import Settings, settings_with


def test_nothing_sent_is_delivered_at_once() -> None:
    asyncio.run(asyncio.wait_for(Outbox(Settings()).delivered(), 1.0))


def test_waiting_for_an_unreachable_broker_leaves_the_event_loop_running() -> None:
    # Nothing listens on port 9 here: the record stays pending (librdkafka retries for minutes).
    outbox = Outbox(settings_with({"MODELSIEM_KAFKA__BOOTSTRAP": "127.0.0.1:9"}))
    outbox.send("nowhere", b"k", b"v")
    ticks = 0

    async def other_work() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    async def run() -> None:
        worker = asyncio.ensure_future(other_work())
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(outbox.delivered(), 0.5)
        worker.cancel()

    asyncio.run(run())
    assert ticks >= 10  # the loop ran other tasks throughout the wait

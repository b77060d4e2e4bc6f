"""faust's Kafka consumer, mended where a rebalance made it lose or stall messages.

Two faults of faust-streaming 0.15.3's aiokafka consumer, seen on this
project's stack as partitions that stopped being processed after a worker
joined or left:

* Records fetched for a stopped fetcher. At a rebalance faust stops its
  fetcher, but the fetch the fetcher was waiting on runs on in the consumer's
  thread for up to a second, now under the new assignment, and it takes
  whatever records arrive for the partitions faust has just made active: the
  changelog partitions it is restoring, the event partitions it has just
  sought to their committed offsets. Nobody receives them, and the consumer's
  position has moved past them: a table's restore waited forever for records
  already taken ("No event received for active tp"), a partition without a
  committed offset was never processed, a partition with one lost its tail.
  Here a fetch that straddles a rebalance gives its records back: it seeks
  each partition back to the first record it took, and returns nothing.

* Offsets acknowledged twice. faust commits a partition up to the end of the
  first run of consecutive offsets in its list of acknowledged ones, one run
  per commit; a jump in fetched offsets is recorded as a gap, added to that
  list at the next commit as if acknowledged. When the "missing" messages come
  after all (read back by ``stream.skipped``, or re-fetched), they are
  acknowledged for real and each offset is in the list twice. Every duplicate
  ends a run, so the committed offset crept forward one offset per commit
  (2.8 s). Here the list is made sorted and unique before faust reads it.
"""

from __future__ import annotations

import logging
from typing import Any

from faust.transport.drivers import aiokafka
from faust.types import TP

log = logging.getLogger("modelsiem.worker")


def committable(acked: list[int], committed: int | None) -> list[int]:
    """The acknowledged offsets still to commit, each once, in order.

    >>> committable([7711, 7712, 7712, 7713, 7713, 7714], None)
    [7711, 7712, 7713, 7714]
    >>> committable([5, 3, 4, 9], 4)  # below the committed offset: done already
    [4, 5, 9]
    """
    return sorted({o for o in acked if committed is None or o >= committed})


class ConsumerThread(aiokafka.AIOKafkaConsumerThread):  # type: ignore[misc]
    """The thread that runs aiokafka's consumer: a fetch that straddles a rebalance gives its records back."""

    async def _fetch_records(self, consumer: Any, active_partitions: Any, timeout: float | None = None,
                             max_records: int | None = None) -> Any:
        state = consumer._subscription
        assignment = state.subscription.assignment if state.subscription else None
        records = await super()._fetch_records(consumer, active_partitions, timeout=timeout,
                                               max_records=max_records)
        if records and (state.subscription is None or state.subscription.assignment is not assignment):
            for tp, taken in records.items():
                if state.is_assigned(tp):
                    consumer.seek(tp, taken[0].offset)  # the fetcher of the new assignment reads them
            log.info("gave back %d record(s) of %d partition(s) fetched across a rebalance",
                     sum(map(len, records.values())), len(records))
            return {}
        return records


class Consumer(aiokafka.Consumer):  # type: ignore[misc]
    """faust's aiokafka consumer on the thread above, committing through duplicated acknowledgements."""

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_offset(self, tp: TP) -> Any:
        acked = self._acked[tp]
        if acked:
            acked[:] = committable(acked, self._committed_offset[tp])
            self._acked_index[tp].intersection_update(acked)
        return super()._new_offset(tp)


class Transport(aiokafka.Transport):  # type: ignore[misc]
    """faust's ``kafka://`` transport with the consumer above (the producer is faust's own)."""

    Consumer = Consumer

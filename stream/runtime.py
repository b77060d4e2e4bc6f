"""Process settings for long stream runs (the worker, replay, the benchmarks).

CPython's cyclic garbage collector runs a young-generation pass every 700 net
container allocations, and each event brings a dozen or more (its models and
their dicts, lists, the framework's message objects): on a replay of the
detectors, collection took 15 to 20 % of the time. Events die young and the
detectors' state is long-lived, so collecting less often saves most of that
for little memory (the worker's peak RSS did not grow in ``modelsiem bench``);
objects alive at start-up (modules, the framework) are frozen out of every
collection.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000


def collect_less_often() -> None:
    """Freeze what is alive now, and collect the young generation every ``YOUNG_THRESHOLD`` allocations."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 20, 20)

"""Replay throughput of the installed detectors on one core: decode plus engine plus detectors.

The trace is a realistic mix (benign background, heavy integrators, backfills,
a sign-up wave, NAT users, and every extraction family) of ``events`` events,
serialized to bytes up front so that only the replay is timed. Besides the full replay, the figures split the cost: decoding alone,
the engine with a detector that does nothing (its per-detector overhead), and
each detector alone through the engine.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from functools import partial
from typing import Any

import orjson

from detectors.base import AnyEvent, Detector, Finding, State
from detectors.query_rate import QueryRateDetector
from detectors.registry import build
from modelsiem.scenarios import simulate
from stream.decode import Rejected, decode
from stream.engine import Engine, MemoryStore
from stream.replay import BATCH, replay

_SCENARIOS = [
    "query_flood", "distributed_extraction", "low_and_slow_extraction", "boundary_probing_blind",
    "heavy_integrators", "natural_backfill", "signup_wave", "nat_users",
]


class _Idle(QueryRateDetector):
    """A detector that learns nothing: what the engine costs per detector and event."""

    def update(self, state: State, event: AnyEvent) -> Iterable[Finding]:
        return ()


def mixed_trace(events: int, seed: int = 1) -> list[bytes]:
    """``events`` serialized events of a realistic mix, in time order.

    The simulated window grows with ``events`` (about 2,500 events a minute)
    rather than a short trace being repeated: a repeat would send time
    backwards, which no live stream does.
    """
    minutes = max(30, events // 2500 + 1)
    while True:
        trace = simulate(_SCENARIOS, minutes=minutes, seed=seed, principals=60,
                         start=datetime(2026, 1, 1, tzinfo=timezone.utc))
        if len(trace.events) >= events:
            return [orjson.dumps(e) for e in trace.sorted_events()[:events]]
        minutes *= 2


def _timed(work: Callable[[], None]) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def _replay(engine: Engine, events: list[AnyEvent], batch: int) -> None:
    store = MemoryStore()
    for start in range(0, len(events), batch):
        engine.settle_batch(events[start:start + batch], store)


def bench_detectors(events: int = 200_000, seed: int = 1, batch: int = BATCH) -> dict[str, Any]:
    """Time the replay of ``events`` events in batches of ``batch``; figures in seconds and events per second."""
    raw = mixed_trace(events, seed)
    detectors: list[Detector] = build()

    def full() -> None:
        replay(enumerate(raw), Engine(detectors), lambda alert: None, batch=batch)

    seconds = _timed(full)
    # Decoding timed without keeping what it makes, as a replay keeps only a batch: 200,000 live events
    # would make each garbage collection longer and count that as decoding.
    decode_seconds = _timed(lambda: collections.deque(map(decode, raw), maxlen=0))
    decoded: list[AnyEvent] = [e for e in map(decode, raw) if not isinstance(e, Rejected)]
    idle_seconds = _timed(lambda: _replay(Engine([_Idle()]), decoded, batch))
    per_detector = {d.meta.id: round(_timed(partial(_replay, Engine([d]), decoded, batch)), 3) for d in detectors}
    return {
        "events": len(raw),
        "batch": batch,
        "seconds": round(seconds, 3),
        "events_per_s": round(len(raw) / seconds),
        "decode_seconds": round(decode_seconds, 3),
        "engine_seconds_per_detector": round(idle_seconds, 3),
        "detector_seconds": per_detector,
    }

"""Memory of the detectors' state under a flood of never-seen principals: RSS, live keys, bytes per key.

What it measures: the engine's keyed state in memory (the records, the
recency index), which is what the worker's faust in-memory tables hold, run as
the worker runs it: one engine for the ingest (the detectors keyed by
principal, and the folding of those that tally, whose tallies go to their own
lane after every event) and one per other partition key, keys spread over
``partitions`` partitions (crc32, not Kafka's murmur2), a source position in
every record. Every event comes from a principal id never seen before, with a
random IP and, for feedback, a random item fingerprint; event time advances
200 events a second, so no key is idle long enough to expire during the flood
and only ``max_keys`` bounds the state. Each principal sends one event: its
state is that of one event, not the largest a long-lived principal reaches
(see the README's per-detector sizes).

Figures: process RSS (VmRSS; peak from VmHWM) sampled while the flood runs, the
live keys of each detector, and bytes per key = RSS growth / keys added while
every detector is below its bound (after a warm-up of 1% of the flood). Each
detector is also run alone, in a fresh process, on a flood of the event kind it
reads. After the flood, a few events 8 days of event time later show idle state
expiring.

What it does not measure: the worker's Kafka client buffers, faust's own
structures, the changelog write-behind buffer, or the decoding of raw bytes.
Python returns freed memory to the system only in part, so RSS after state
expires may stay near its peak: that memory is reused by later keys.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from multiprocessing import get_context
from typing import Any

import numpy as np

from detectors.base import partition_value
from detectors.registry import build
from modelsiem.scenarios.traffic import feedback, inference, make_principal
from stream.engine import TALLY, Engine, MemoryStore, Position
from stream.events import EVENT_TYPES

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
RATE = 200.0  # events per second of event time
FEEDBACK_SHARE = 0.1
_MB = 1024 * 1024


def rss() -> tuple[int, int]:
    """Current and peak resident set size of this process, in bytes."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def flood_events(rng: np.random.Generator, count: int, start: datetime, feedback_share: float):  # type: ignore[no-untyped-def]
    """``count`` decoded events, each from a never-seen principal, ``RATE`` a second from ``start``."""
    for i in range(count):
        when = (start + timedelta(seconds=i / RATE)).isoformat()
        who = make_principal(rng, f"key-{rng.bytes(12).hex()}", start - timedelta(days=1))
        if rng.random() < feedback_share:
            fp = rng.bytes(8).hex()
            raw = feedback(rng, when, who, fp, "spam", str(rng.choice(["spam", "ham"])), rng.random(), f"{fp}.example")
        else:
            p = float(rng.random())
            raw = inference(rng, when, who, who["id"], embedding=rng.normal(size=32).round(4).tolist(),
                            scores={"spam": round(p, 4), "ham": round(1 - p, 4)})
        yield EVENT_TYPES[raw["kind"]].validate(raw)


def flood(detector_ids: list[str], events: int, max_keys: int, partitions: int, seed: int = 1,
          feedback_share: float = FEEDBACK_SHARE, samples: int = 40) -> dict[str, Any]:
    """Run the detectors over a flood of ``events`` in this process; the figures of one run."""
    detectors = build(detector_ids)
    lanes = defaultdict(list)
    for d in detectors:
        lanes[d.partition_key].append(d)
    # As in the worker: detectors that tally fold where the events arrive (with the principal's detectors),
    # and learn from the tallies on their own lane.
    tallying = {d.meta.id: d for d in detectors if d.tallies}
    ingest = Engine([*lanes.pop("principal", []), *tallying.values()], max_keys=max_keys)
    engines = {key: Engine(group, max_keys=max_keys, folds=False) for key, group in lanes.items()}
    ids = [d.meta.id for d in detectors] + [d + TALLY for d in tallying]
    store, offsets = MemoryStore(), defaultdict(int)
    peak_keys = dict.fromkeys(ids, 0)
    live = lambda: {d: len(store.records.get(d, {})) for d in ids}  # noqa: E731
    bound = max_keys * partitions

    def apply(engine: Engine, event, partition: int, position: Position | None) -> None:  # type: ignore[no-untyped-def]
        step = engine.process(event, store, position, partition)
        step.save(store)
        for signal in step.signals:  # to the lane that correlates them, as the worker routes them
            for other in engines.values():
                other.settle(signal, store)

    def process(event) -> None:  # type: ignore[no-untyped-def]
        part = zlib.crc32(event.principal.id.encode()) % partitions
        offsets[event.kind, part] += 1
        apply(ingest, event, part, Position(event.kind, part, offsets[event.kind, part]))
        for tally in ingest.tallies(store, part):  # after every event: the most a worker sends
            apply(engines[tallying[tally.rule].partition_key], tally,
                  zlib.crc32(tally.value.encode()) % partitions, None)
        for key, engine in engines.items():
            value = partition_value(key, event)
            if value is None or all(d.key(event) is None for d in engine.detectors if not d.tallies):
                continue
            part = zlib.crc32(value.encode()) % partitions
            offsets[f"route-{key}", part] += 1
            apply(engine, event, part, Position(f"route-{key}", part, offsets[f"route-{key}", part]))
        for d, n in live().items():
            peak_keys[d] = max(peak_keys[d], n)

    rng, every = np.random.default_rng(seed), max(1, events // samples)
    warmup, quarters = max(1, events // 100), {events * q // 4: f"{25 * q}%" for q in range(1, 5)}
    principal_ids = [d.meta.id for d in ingest.detectors if d.partition_key == "principal"]
    base: tuple[int, dict[str, int]] = (0, {})
    last_below: tuple[int, dict[str, int]] | None = None  # the last sample with every detector below 90% of its bound
    rss_at, keys_at = {}, {}
    began = time.perf_counter()
    for i, event in enumerate(flood_events(rng, events, START, feedback_share), 1):
        process(event)
        if i == warmup:
            base = (rss()[0], live())
        if i in quarters:
            rss_at[quarters[i]], keys_at[quarters[i]] = round(rss()[0] / _MB, 1), sum(live().values())
        if i > warmup and (i % every == 0 or i == events) and max(live().values()) < 0.9 * bound:
            last_below = (rss()[0], live())
    seconds = time.perf_counter() - began
    growth, added, principals = 0, 0, 0
    if last_below:
        growth = last_below[0] - base[0]
        added = sum(last_below[1].values()) - sum(base[1].values())
        principals = max((last_below[1][d] - base[1][d] for d in principal_ids), default=0)
    end_rss, peak_rss = rss()
    result = {
        "events": events, "seconds": round(seconds, 1), "events_per_s": round(events / seconds),
        "peak_rss_mb": round(peak_rss / _MB, 1), "end_rss_mb": round(end_rss / _MB, 1),
        "rss_mb_at": rss_at, "live_keys_at": keys_at, "live_keys_end": live(), "live_keys_max": peak_keys,
        "rss_growth_below_bound_mb": round(growth / _MB, 1), "keys_added_below_bound": added,
        "bytes_per_key": round(growth / added) if added > 0 else None,
        "bytes_per_principal": round(growth / principals) if principals > 0 else None,
    }
    late = START + timedelta(seconds=events / RATE, days=8)  # past every detector's state_ttl
    for event in flood_events(rng, 1000, late, 0.5):
        process(event)
    result["live_keys_after_idle"] = sum(live().values())
    result["rss_mb_after_idle"] = round(rss()[0] / _MB, 1)
    return result


def _alone(detector_id: str, events: int, max_keys: int, partitions: int, seed: int) -> dict[str, Any]:
    kinds = build([detector_id])[0].meta.event_kinds
    r = flood([detector_id], events, max_keys, partitions, seed, 0.0 if "feedback" not in kinds else 1.0, samples=20)
    return {"keys": r["live_keys_end"][detector_id], "rss_growth_mb": r["rss_growth_below_bound_mb"],
            "bytes_per_key": r["bytes_per_key"], "peak_rss_mb": r["peak_rss_mb"]}


def bench_memory(events: int = 1_000_000, max_keys: int = 250_000, partitions: int = 4,
                 per_detector_events: int = 100_000, seed: int = 1) -> dict[str, Any]:
    """The flood with every installed detector in this process, then each detector alone in a fresh one."""
    ids = [d.meta.id for d in build()]
    before = rss()[0]
    result: dict[str, Any] = {"max_keys": max_keys, "partitions": partitions, "keys_bound_per_detector": max_keys * partitions,
                              "detectors": len(ids), "rss_before_mb": round(before / _MB, 1)}
    result |= flood(ids, events, max_keys, partitions, seed)
    alone = min(events, per_detector_events)
    result["per_detector_events"] = alone
    spawn = get_context("spawn")
    per: dict[str, Any] = {}
    for d in ids:  # a fresh process each: RSS growth that reused no memory freed by another run
        with ProcessPoolExecutor(1, mp_context=spawn) as pool:
            per[d] = pool.submit(_alone, d, alone, max_keys, partitions, seed).result()
    result["per_detector"] = per
    return result

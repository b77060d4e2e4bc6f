"""The memory benchmark: a flood of never-seen principals stays within max_keys, and the figures are measured."""

from __future__ import annotations

from detectors.registry import build
from modelsiem.bench_memory import bench_memory
from stream.engine import TALLY


def test_flood_of_new_principals_is_bounded_by_max_keys_and_measured() -> None:
    max_keys, partitions = 1_000, 4
    r = bench_memory(events=20_000, max_keys=max_keys, partitions=partitions, per_detector_events=2_000)
    detectors = {d.meta.id: d for d in build()}
    bound = max_keys * partitions
    partials = {det_id + TALLY for det_id, d in detectors.items() if d.tallies}  # as the worker holds them
    assert partials and set(r["live_keys_max"]) == set(r["live_keys_end"]) == set(detectors) | partials
    assert set(r["per_detector"]) == set(detectors)
    # Checked after every event: no detector ever held more than max_keys per partition.
    assert all(n <= bound for n in r["live_keys_max"].values()), r["live_keys_max"]
    for det_id, d in detectors.items():
        if d.partition_key == "principal":  # ~18,000 new principals: full, and at the bound exactly
            assert r["live_keys_end"][det_id] == bound
            assert r["per_detector"][det_id]["bytes_per_key"] > 0
    assert r["peak_rss_mb"] >= r["end_rss_mb"] > 0
    # In this process RSS may grow or even shrink (memory freed by earlier tests is reused or returned),
    # so only the per-detector figures, each from a fresh process, are required to show growth.
    assert {"bytes_per_key", "bytes_per_principal"} <= set(r)
    assert r["keys_added_below_bound"] > 0
    assert set(r["rss_mb_at"]) == set(r["live_keys_at"]) == {"25%", "50%", "75%", "100%"}
    # 8 days later every flood key has expired: only keys of the 1,000 late events are left.
    assert r["live_keys_after_idle"] <= 1_000 * (len(detectors) + len(partials))
    assert r["live_keys_after_idle"] < sum(r["live_keys_end"].values())

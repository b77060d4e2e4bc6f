"""Boundary probing: near-duplicate runs on the boundary, with and without embeddings."""

from __future__ import annotations

import math

from detectors.boundary_probing import BoundaryProbingDetector
from detectors.testing import inference


def run(events, **params):
    det = BoundaryProbingDetector(**params)
    state = det.new_state()
    return [f for e in events for f in det.update(state, e)]


def walk(n: int, start: float = 0.0, margin: float = 0.02, step: float = 1e-3):
    half = margin / 2
    return [inference(f"w{i}", start + i, input={"embedding": [math.cos(i * step), math.sin(i * step), 1.0, 0.5]},
                      output={"scores": {"spam": 0.5 + half, "ham": 0.5 - half}}) for i in range(n)]


def natural(n: int):
    return [inference(f"n{i}", i * 5, input={"embedding": [math.cos(i), math.sin(i * 3), (i % 5) - 2.0, 1.0]},
                      output={"scores": {"spam": 0.95, "ham": 0.05}}) for i in range(n)]


def test_a_walk_is_caught_as_soon_as_the_window_fills_with_probes() -> None:
    findings = run(walk(100))
    assert findings[0].evidence["probes_in_window"] == 24 and findings[0].event_ids
    assert findings[-1].evidence["probes_in_run"] == 99  # every query but the first, which has no predecessor


def test_severity_rises_with_the_length_of_the_run() -> None:
    assert run(walk(250))[-1].severity == "high"


def test_near_duplicates_answered_confidently_are_not_probes() -> None:
    assert not run(walk(200, margin=0.9))


def test_distinct_inputs_at_the_boundary_need_no_embedding_to_count_but_do_with_one() -> None:
    # Far-apart inputs with unsure answers: random extraction queries, not a walk.
    spread = [inference(f"s{i}", i, input={"embedding": [math.cos(i * 2.0), math.sin(i * 2.0), i % 3, 1.0]},
                        output={"scores": {"spam": 0.52, "ham": 0.48}}) for i in range(200)]
    assert not run(spread)


def test_a_new_run_after_the_old_one_ended_starts_counting_again() -> None:
    findings = run(walk(60) + natural(100) + walk(60, start=2000))
    runs = [f.evidence["probes_in_run"] for f in findings]
    assert max(runs) == 59 and runs[-1] == 59


def test_opaque_queries_fall_back_to_their_rate() -> None:
    findings = run([inference(f"o{i}", i * 0.05) for i in range(600)])
    assert findings and findings[0].severity == "low" and findings[0].evidence["opaque_queries_per_minute"] == 500

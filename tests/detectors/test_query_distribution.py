"""Low-and-slow extraction: the answers' margins and the spacing of the inputs."""

from __future__ import annotations

import numpy as np
import orjson

from detectors.query_distribution import QueryDistributionDetector, _place
from detectors.testing import inference


def run(events, **params):
    det = QueryDistributionDetector(**params)
    state = det.new_state()
    return [f for e in events for f in det.update(state, e)]


def queries(points: np.ndarray, unsure_share: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = []
    for i, x in enumerate(points):
        p = 0.55 if rng.random() < unsure_share else 0.97
        out.append(inference(f"q{i}", i * 6.0, input={"embedding": [float(v) for v in x]},
                             output={"scores": {"spam": p, "ham": 1 - p}}))
    return out


def clustered(n: int, dims: int = 32, seed: int = 0) -> np.ndarray:
    """Natural-looking inputs: a few topics, each a low-dimensional sheet, dense cores and sparse edges."""
    rng = np.random.default_rng(seed)
    centers, bases = rng.normal(size=(4, dims)), rng.normal(scale=0.3, size=(4, dims, 2))
    which = rng.integers(0, 4, n)
    return centers[which] + np.einsum("nij,nj->ni", bases[which], rng.standard_t(3, size=(n, 2)))


def uniform(n: int, dims: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-2, 2, size=(n, dims))


def test_unsure_answers_alone_raise_a_medium_finding_after_the_minimum_volume() -> None:
    findings = run(queries(clustered(600), unsure_share=0.6))
    assert findings[0].evidence["answered_queries"] == 400 and findings[0].severity == "medium"


def test_evenly_spaced_inputs_with_unsure_answers_are_high_severity() -> None:
    findings = run(queries(uniform(600), unsure_share=0.6))
    first = findings[0]
    assert first.severity == "high" and first.evidence["nearest_neighbour_variation"] < 0.3


def test_evenly_spaced_inputs_with_a_minority_of_unsure_answers_still_alert() -> None:
    assert run(queries(uniform(600), unsure_share=0.3))


def test_natural_inputs_with_the_same_minority_of_unsure_answers_do_not() -> None:
    assert not run(queries(clustered(2000), unsure_share=0.3))


def test_isotropic_natural_inputs_on_a_poorly_calibrated_model_do_not() -> None:
    # Gaussian blobs are as evenly spaced as random points; a natural share of unsure answers must not add up to a finding.
    blobs = np.random.default_rng(3).normal(size=(3000, 32)) + np.repeat(np.eye(32)[:3] * 4, 1000, axis=0)
    assert not run(queries(blobs, unsure_share=0.2))


def test_an_account_turning_to_extraction_is_not_diluted_by_its_past() -> None:
    past = queries(clustered(3000), unsure_share=0.05)
    later = [e.replace(event_id=f"x{i}") for i, e in enumerate(
        queries(clustered(2000, seed=1), unsure_share=0.9, seed=1))]
    assert run(past + later)


def test_the_peers_histogram_follows_recent_principals_and_stays_bounded() -> None:
    det = QueryDistributionDetector()
    peers = det.new_peers()
    # 3,000 principals once unsure a third of the time, then 3,000 that are almost always sure.
    for share, count in ((1 / 3, 3000), (1 / 50, 3000)):
        for _ in range(count):
            state = det.new_state()
            state["answered"], state["unsure_all"] = 128, round(128 * share)
            _place(state, peers["bins"])
    assert sum(peers["bins"]) <= 2000
    # The median principal is one of the recent, sure ones.
    assert det._peers_share(det.new_state(), peers) < 0.05


def test_a_state_restored_from_json_judges_as_the_live_one() -> None:
    """The recent embeddings come from the detector's own cache while it runs and from the state's string after
    a restart: both must give the same nearest-neighbour statistics."""
    events = queries(uniform(400), unsure_share=0.3)
    live, restarted = QueryDistributionDetector(), QueryDistributionDetector()
    live_state, restored_state = live.new_state(), restarted.new_state()
    for i, event in enumerate(events):
        live.update(live_state, event)
        restarted.update(restored_state, event)
        if i % 16 == 15:  # after each batch of distances, as a worker restarting from its changelog
            restored_state = orjson.loads(orjson.dumps(restored_state))
            restarted = QueryDistributionDetector()
    assert live_state["nn"][0] > 300
    assert np.allclose(live_state["nn"], restored_state["nn"], rtol=1e-9)
    assert live_state["recent"] == restored_state["recent"]


def test_distances_are_exact_for_near_duplicates() -> None:
    """Distances from the matrix product keep their precision when queries nearly coincide."""
    det = QueryDistributionDetector()
    state = det.new_state()
    rng = np.random.default_rng(3)
    base, direction = rng.normal(size=32) * 100, rng.normal(size=32)
    # A walk of 0.01 steps far from the origin: each query's nearest predecessor is the one before it.
    steps = [base + 0.01 * i * direction / np.linalg.norm(direction) for i in range(64 + 16)]
    for i, x in enumerate(steps):
        det.update(state, inference(f"q{i}", i, input={"embedding": [float(v) for v in x]}))
    count, total, squares = state["nn"]
    assert count >= 16
    # Projected to 16 dimensions, a 0.01 step stays about 0.01 long: the mean is that, not rounding noise.
    assert 0.004 < total / count < 0.025

"""The model-level drift detector: the Page-Hinkley test it implements, and what its alarms name."""

from __future__ import annotations

import numpy as np
import pytest
from river.drift import PageHinkley

from detectors.base import Finding
from detectors.feedback_drift import FeedbackDriftDetector
from detectors.testing import feedback
from stream.events import FeedbackEvent


def stream(disputed: list[int], *, start: float = 0.0, fingerprint=lambda i: f"fp-{i}",
           principal=lambda i: f"user-{i}") -> list[FeedbackEvent]:
    """Feedback whose i-th report disputes a confident verdict when ``disputed[i]``."""
    return [feedback(f"e{start + i}", start + i, principal=principal(i), fingerprint=fingerprint(i),
                     confidence=0.95 if x else 0.6) for i, x in enumerate(disputed)]


def alarms(detector: FeedbackDriftDetector, events: list[FeedbackEvent]) -> list[tuple[int, Finding]]:
    state = detector.new_state()
    return [(i, f) for i, e in enumerate(events) for f in detector.update(state, e)]


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_without_prior_it_alarms_on_the_same_report_as_river(seed: int) -> None:
    rng = np.random.default_rng(seed)
    before, after = rng.uniform(0.05, 0.4), rng.uniform(0.5, 0.95)
    xs = [int(x) for x in np.r_[rng.random(int(rng.integers(100, 2000))) < before, rng.random(300) < after]]
    river = PageHinkley(min_instances=1, delta=0.1, threshold=20.0, alpha=1.0, mode="up")
    expected = None
    for i, x in enumerate(xs):
        river.update(x)
        if river.drift_detected:
            expected = i
            break
    found = alarms(FeedbackDriftDetector(prior_weight=0, memory=10**9), stream(xs))
    assert expected is not None and found and found[0][0] == expected


@pytest.mark.parametrize(("seed", "rate"), [(1, 0.05), (2, 0.3), (3, 0.6)])
def test_a_steady_share_never_alarms(seed: int, rate: float) -> None:
    rng = np.random.default_rng(seed)
    detector = FeedbackDriftDetector(prior_rate=rate)
    assert alarms(detector, stream([int(x) for x in rng.random(20_000) < rate])) == []


def test_a_campaign_on_one_item_names_the_item_and_its_reporters_only() -> None:
    rng = np.random.default_rng(7)
    usual = [int(x) for x in rng.random(2000) < 0.2]
    # The campaign's reports are interleaved with the usual feedback, one in four.
    mixed = [1 if i % 4 else int(rng.random() < 0.2) for i in range(400)]
    events = stream(usual) + stream(mixed, start=5000, fingerprint=lambda i: "fp-pharma" if i % 4 else f"fp-{i}",
                                    principal=lambda i: f"burner-{i}" if i % 4 else f"user-{i}")
    found = alarms(FeedbackDriftDetector(), events)
    first = found[0][1]
    assert 2000 < found[0][0] < 2060
    assert first.hashes == ("fp-pharma",) and first.severity == "low"
    assert first.users and all(u.startswith("burner-") for u in first.users)


def test_a_rotating_campaign_names_no_item_but_the_latest_disputers() -> None:
    events = stream([0, 0, 0, 1] * 100) + stream([1] * 80, start=1000, principal=lambda i: f"burner-{i}")
    (at, finding), *_ = alarms(FeedbackDriftDetector(), events)
    assert finding.hashes == ()
    latest = events[at - 31: at + 1]
    assert finding.users == tuple(e.principal.id for e in latest if e.confidence >= 0.8)


def test_the_prior_lets_a_campaign_that_comes_first_alarm() -> None:
    assert alarms(FeedbackDriftDetector(), stream([1] * 100))
    assert alarms(FeedbackDriftDetector(prior_weight=0), stream([1] * 100)) == []


def test_a_campaign_that_goes_on_alarms_again() -> None:
    events = stream([0, 0, 0, 1] * 100) + stream([1] * 400, start=1000)
    found = alarms(FeedbackDriftDetector(), events)
    assert len(found) >= 3

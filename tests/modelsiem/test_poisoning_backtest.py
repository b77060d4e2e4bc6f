"""The poisoning targets of issue 4, checked with the backtest on simulated traces of several shapes.

Campaign sizes, paces, account ages and network layouts vary beyond the
registered scenarios' defaults, so that the detectors are not tuned to one
generator setting.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import numpy as np
import orjson
import pytest

from detectors.feedback_drift import FeedbackDriftDetector
from detectors.feedback_surge import FeedbackSurgeDetector
from modelsiem.evaluate import AttackScore, Evaluation, evaluate
from modelsiem.scenarios import Trace, Window
from modelsiem.scenarios.poisoning import burst_campaign, organic_corrections, slow_campaign
from modelsiem.scenarios.traffic import benign
from stream.engine import Engine

START = datetime(2026, 1, 1, tzinfo=timezone.utc)
Builder = Callable[..., None]


def backtest(builder: Builder, seed: int, **params: Any) -> Evaluation:
    rng = np.random.default_rng(seed)
    window = Window(START, 120)
    trace = Trace()
    benign(rng, window, trace, 8)
    builder(rng, window, trace, **params)
    lines = [(i, orjson.dumps(e)) for i, e in enumerate(trace.sorted_events(), 1)]
    return evaluate(lines, trace.truth, Engine([FeedbackSurgeDetector(), FeedbackDriftDetector()]))


def assert_named_and_quarantined(attack: AttackScore, result: Evaluation) -> None:
    assert attack.recall_of_accounts >= 0.9
    assert attack.precision_of_accounts >= 0.95
    assert attack.quarantined == attack.feedback_events
    assert result.quarantined_benign == 0 and result.false_alerts == 0


@pytest.mark.parametrize(("seed", "params"), [
    (1, {}),
    (2, {"accounts": 120, "minutes": 3}),
    (3, {"accounts": 450, "minutes": 40, "prefixes": 6}),
    (4, {"accounts": 300, "prefixes": 300, "age_hours": 96, "creation_minutes": 2000}),
    (5, {"accounts": 250, "prefixes": 1, "age_hours": 5000, "creation_minutes": 80_000}),
    (6, {"accounts": 350, "prefixes": 350, "age_hours": 1500, "creation_minutes": 3000, "confidence": (0.86, 0.97)}),
])
def test_a_burst_is_caught_within_30_reports(seed: int, params: dict[str, Any]) -> None:
    result = backtest(burst_campaign, seed, **params)
    (attack,) = result.attacks
    assert attack.detected and attack.events_before_alert is not None and attack.events_before_alert <= 30
    assert attack.max_severity == "high"
    assert_named_and_quarantined(attack, result)
    # One campaign alert, plus the model-level drift it causes.
    assert attack.alerts == 2


def test_the_slow_campaign_is_caught_within_its_first_half_in_most_runs() -> None:
    # With half its accounts fresh against a 10% base rate, the evidence needs about 15 reports
    # on average; how many it takes varies from run to run (see the final report of issue 4).
    within_half = 0
    for seed in range(20):
        result = backtest(slow_campaign, seed)
        (attack,) = result.attacks
        assert attack.detected and attack.max_severity in ("medium", "high")
        assert_named_and_quarantined(attack, result)
        within_half += attack.events_before_alert is not None and attack.events_before_alert <= 30
    assert within_half >= 16


@pytest.mark.parametrize(("seed", "params"), [
    (4, {"reports": 90, "hours": 18, "fresh_share": 0.45}),
    (5, {"reports": 50, "hours": 8, "fresh_share": 0.6, "fresh_days": (0.2, 4)}),
    (6, {"reports": 140, "hours": 30, "fresh_share": 0.35}),
])
def test_slow_campaigns_of_other_shapes_are_caught_within_their_first_half(seed: int, params: dict[str, Any]) -> None:
    result = backtest(slow_campaign, seed, **params)
    (attack,) = result.attacks
    assert attack.detected and attack.events_before_alert is not None
    assert attack.events_before_alert <= attack.feedback_events / 2
    assert attack.max_severity in ("medium", "high")
    assert_named_and_quarantined(attack, result)


@pytest.mark.parametrize(("seed", "params"), [
    (1, {}),
    (2, {"reporters": 700, "hours": 6}),
    (3, {"reporters": 300, "confidence": (0.6, 0.8), "new_user_share": 0.08, "shared_network_share": 0.2}),
])
def test_organic_corrections_raise_nothing(seed: int, params: dict[str, Any]) -> None:
    result = backtest(organic_corrections, seed, **params)
    assert result.benign[0].alerts == 0 and result.false_alerts == 0 and result.quarantined_benign == 0


@pytest.mark.parametrize(("seed", "params"), [
    (1, {"reporters": 300, "confidence": (0.85, 0.95)}),
    (2, {"reporters": 900, "confidence": (0.9, 0.99), "new_user_share": 0.1, "shared_network_share": 0.25}),
])
def test_organic_corrections_of_a_confident_verdict_stay_low_and_are_not_quarantined(
        seed: int, params: dict[str, Any]) -> None:
    result = backtest(organic_corrections, seed, **params)
    assert result.benign[0].max_severity in (None, "low")
    assert result.quarantined_benign == 0

"""The backtest scores detections against ground truth."""

from __future__ import annotations

from datetime import datetime, timezone

import orjson

from detectors.feedback_surge import FeedbackSurgeDetector
from detectors.query_rate import QueryRateDetector
from modelsiem.evaluate import evaluate
from modelsiem.scenarios import SCENARIOS, Truth, simulate
from stream.engine import Engine

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def lines(events):
    return [(i, orjson.dumps(e)) for i, e in enumerate(events, 1)]


def test_starter_scenarios_are_detected_without_false_alerts() -> None:
    trace = simulate(["query_flood", "feedback_poisoning"], minutes=20, principals=15, start=START)
    result = evaluate(lines(trace.sorted_events()), trace.truth,
                      Engine([QueryRateDetector(), FeedbackSurgeDetector()]))
    by_name = {a.scenario: a for a in result.attacks}
    flood, poisoning = by_name["query_flood"], by_name["feedback_poisoning"]
    assert flood.detected and poisoning.detected
    assert flood.accounts_named == flood.accounts_involved == 1
    assert poisoning.events_before_alert == FeedbackSurgeDetector.Params().min_reports
    assert poisoning.named_outside_attack == 0 and poisoning.alerts == 1
    assert result.false_alerts == 0
    assert result.benign_events + sum(a.attack_events + a.events_outside_window for a in result.attacks) == result.events
    # The flooding key's usual queries before the flood are its own use, not the attack.
    assert flood.events_outside_window > 0


def test_an_attack_counts_the_events_of_its_window_and_alerts_before_it_are_false() -> None:
    # An hour: the flooding key's ~3 usual queries a minute before the flood outnumber what the detector needs.
    trace = simulate(["query_flood"], minutes=60, principals=5, start=START)
    [truth] = trace.truth
    result = evaluate(lines(trace.sorted_events()), trace.truth, Engine([QueryRateDetector()]))
    [flood] = result.attacks
    assert flood.events_outside_window > 100 and flood.detected and flood.events_before_alert <= 100
    start, end = (datetime.fromisoformat(t) for t in (truth.start, truth.end))
    in_window = [e for e in trace.sorted_events() if e["principal"]["id"] in truth.principals
                 and start <= datetime.fromisoformat(e["timestamp"]) <= end]
    assert flood.attack_events == len(in_window)
    # Declared to start after the flood's alerts: those alerts named the key before its attack.
    late = Truth(**{**truth.model_dump(), "start": truth.end})
    result = evaluate(lines(trace.sorted_events()), [late], Engine([QueryRateDetector()]))
    assert not result.attacks[0].detected and result.false_alerts == 1


def test_alerts_naming_no_attacker_are_false_and_charged_to_the_benign_pattern() -> None:
    trace = simulate(["query_flood"], minutes=20, principals=5, start=START)
    # Pretend the flooding key was a known benign batch job.
    truth = [Truth(**{**trace.truth[0].model_dump(), "label": "benign", "scenario": "nightly_batch"})]
    result = evaluate(lines(trace.sorted_events()), truth, Engine([QueryRateDetector()]))
    assert result.attacks == [] and result.false_alerts == 1
    assert result.benign[0].alerts == 1 and result.benign[0].max_severity == "low"
    assert result.false_alerts_per_million == 1e6 / result.benign_events


def test_missed_attacks_are_reported_as_missed() -> None:
    trace = simulate(["feedback_poisoning"], minutes=20, principals=5, start=START)
    result = evaluate(lines(trace.sorted_events()), trace.truth, Engine([QueryRateDetector()]))
    assert not result.attacks[0].detected and result.attacks[0].events_before_alert is None


def test_simulation_is_reproducible_and_every_scenario_has_truth() -> None:
    for name, scenario in SCENARIOS.items():
        a = simulate([name], minutes=20, principals=3, seed=3, start=START)
        b = simulate([name], minutes=20, principals=3, seed=3, start=START)
        assert a.sorted_events() == b.sorted_events()
        assert [t.scenario for t in a.truth] == [name] and a.truth[0].label == scenario.label

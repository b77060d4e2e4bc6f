"""The per-item poisoning-campaign detector: evidence, severities, quarantine, naming, state bounds."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from detectors.base import Finding
from detectors.feedback_surge import FeedbackSurgeDetector
from detectors.testing import feedback
from stream.engine import Engine, MemoryStore
from stream.events import FeedbackEvent

FRESH = "2025-12-31T12:00:00Z"  # half a day before the reports


def aged(i: int, *, network: str | None = None) -> dict[str, str]:
    """A long-standing account on its own network (or on ``network``), created years from the others."""
    ip = f"{network}.{i % 250 + 1}" if network else f"{11 + i % 200}.{i // 200 % 250}.{i * 7 % 250}.9"
    return {"ip": ip, "created_at": f"{2005 + i % 18}-{i % 12 + 1:02d}-{i % 28 + 1:02d}T{i % 24:02d}:30:00Z"}


def burner(i: int) -> dict[str, str]:
    return {"ip": f"{11 + i % 200}.{i * 3 % 250}.{i * 11 % 250}.7", "created_at": FRESH}


def reports(n: int, fields, *, every: float = 10.0, start: float = 0.0, fingerprint: str = "fp-1",
            prefix: str = "r", confidence: float = 0.99) -> list[FeedbackEvent]:
    return [feedback(f"{prefix}{i}", start + i * every, principal=f"{prefix}-acct-{i}", fingerprint=fingerprint,
                     confidence=confidence, principal_fields=fields(i)) for i in range(n)]


def run(detector: FeedbackSurgeDetector, events: list[FeedbackEvent]) -> list[Finding]:
    state = detector.new_state()
    return [f for e in events for f in detector.update(state, e)]


def test_fresh_burners_are_a_campaign_from_min_reports_and_high_from_high_reporters() -> None:
    findings = run(FeedbackSurgeDetector(), reports(80, burner))
    assert len(findings) == 80 - 11
    assert findings[0].severity == "medium" and findings[0].evidence["confident_disputes"] == 12
    assert findings[0].evidence["fresh_reporters"] == 12
    high = [f for f in findings if f.severity == "high"]
    assert high and high[0].evidence["account_flagged_reporters"] == 50
    assert findings[-1].hashes == ("fp-1",) and len(findings[-1].users) == 80


def test_every_campaign_report_is_quarantined_once_including_those_before_detection() -> None:
    events = reports(60, burner)
    findings = run(FeedbackSurgeDetector(), events)
    quarantined = [i for f in findings for i in f.quarantine]
    assert len(quarantined) == len(set(quarantined)) == 60
    assert set(quarantined) == {e.event_id for e in events}
    assert findings[0].quarantine == tuple(e.event_id for e in events[:12])


def test_the_quarantine_buffer_is_bounded_by_max_reports() -> None:
    # Aged accounts join first (no evidence), the burners after them: detection comes late.
    events = reports(40, aged, prefix="a") + reports(40, burner, start=400, prefix="b")
    detector = FeedbackSurgeDetector(max_reports=30)
    findings = run(detector, events)
    campaign = [f for f in findings if f.quarantine]
    assert len(campaign[0].quarantine) == 30  # only the newest 30 reports were still held
    assert sum(len(f.quarantine) for f in findings) < 80


def test_aged_accounts_behind_one_network_are_a_campaign() -> None:
    findings = run(FeedbackSurgeDetector(), reports(40, lambda i: aged(i, network="198.51.100")))
    assert findings and findings[0].severity == "medium" and findings[0].quarantine
    assert findings[0].evidence["account_flagged_reporters"] == 0


def test_a_slow_campaign_accumulates_over_hours() -> None:
    # One report every 25 minutes, half of them from fresh accounts.
    findings = run(FeedbackSurgeDetector(), reports(40, lambda i: burner(i) if i % 2 else aged(i), every=1500))
    assert findings and findings[0].severity == "medium"
    assert findings[0].evidence["confident_disputes"] <= 20


def test_reports_further_apart_than_the_window_never_add_up() -> None:
    events = reports(40, burner, every=7200)
    assert run(FeedbackSurgeDetector(window_seconds=3600), events) == []


def test_organic_corrections_at_moderate_confidence_raise_nothing() -> None:
    assert run(FeedbackSurgeDetector(), reports(300, aged, every=20, confidence=0.7)) == []


def test_genuine_users_disputing_a_confident_verdict_are_a_low_quality_finding_without_quarantine() -> None:
    # Long-standing users, a few new ones and a few sharing office networks: what real users look like.
    def genuine(i: int) -> dict[str, str]:
        if i % 20 == 0:
            return burner(i)
        return aged(i, network=f"100.64.{i % 3}") if i % 10 == 5 else aged(i)

    findings = run(FeedbackSurgeDetector(), reports(300, genuine, every=20))
    assert findings and {f.severity for f in findings} == {"low"}
    assert not any(f.quarantine for f in findings)
    assert findings[0].evidence["distinct_reporters"] == 50


def test_reporters_nothing_is_known_about_are_neither_flagged_nor_genuine() -> None:
    findings = run(FeedbackSurgeDetector(), reports(60, lambda i: {}))
    assert findings[0].severity == "low" and findings[0].evidence["distinct_reporters"] == 50
    assert findings[0].evidence["account_llr"] == findings[0].evidence["network_llr"] == 0


def test_reports_agreeing_with_the_model_or_without_confidence_are_ignored() -> None:
    events = [feedback(f"n{i}", i, principal=f"b{i}", confidence=None, principal_fields=burner(i)) for i in range(60)]
    events += [feedback(f"a{i}", i, principal=f"b{i}", reported="spam", principal_fields=burner(i)) for i in range(60)]
    assert run(FeedbackSurgeDetector(), events) == []


def test_the_latest_revision_names_nearly_every_account_of_a_growing_campaign() -> None:
    detector = FeedbackSurgeDetector()
    engine, store = Engine([detector]), MemoryStore()
    alerts: list[dict[str, Any]] = []
    for event in reports(437, burner, every=2):
        step = engine.process(event, store)
        alerts.extend(step.alerts)
        step.save(store)
    assert len({a["event"]["id"] for a in alerts}) == 1
    named = alerts[-1]["related"]["user"]
    assert len(named) >= 437 / (1 + engine.naming_growth)
    # Re-sent as it grows, a few dozen revisions, not once per report.
    assert 10 < len(alerts) < 60


def test_state_stays_bounded_and_under_a_mebibyte_with_the_longest_identifiers() -> None:
    detector = FeedbackSurgeDetector()
    state = detector.new_state()
    long = "x" * 240
    for i in range(3000):
        event = feedback(f"{long}{i:08d}", i, principal=f"{long}{i:08d}", principal_fields={
            "ip": f"2001:db8:{i:x}::1", "created_at": FRESH})
        list(detector.update(state, event))
    assert len(state["window"]["reports"]) == detector.params.max_reports
    assert len(state["named"]) == detector.params.max_named
    assert len(orjson.dumps(state)) < 1024 * 1024


def test_campaign_rates_must_exceed_base_rates() -> None:
    with pytest.raises(ValidationError):
        FeedbackSurgeDetector(account_base_rate=0.5, account_campaign_rate=0.4)
    with pytest.raises(ValidationError):
        FeedbackSurgeDetector(network_base_rate=0.8, network_campaign_rate=0.8)


def test_thresholds_are_exact_for_the_false_alarm_budget_and_never_above_walds() -> None:
    import math

    from detectors.feedback_surge import _crossing

    detector = FeedbackSurgeDetector()
    p = detector.params
    budget = p.max_false_alarm / 2
    rates = ((p.account_base_rate, p.account_campaign_rate), (p.network_base_rate, p.network_campaign_rate))
    for threshold, (p0, p1) in zip(detector._thresholds, rates, strict=True):
        assert threshold <= math.log(1 / budget)
        assert _crossing(p0, p1, threshold, p.max_reports, p.min_reports) <= budget
        # The lowest such: a little lower spends more than the budget.
        assert _crossing(p0, p1, threshold - 0.05, p.max_reports, p.min_reports) > budget

"""The flood detector: short-window detection on a known baseline, grace for established accounts."""

from __future__ import annotations

from detectors.query_rate import QueryRateDetector
from detectors.testing import inference

AGED = {"created_at": "2024-01-01T00:00:00Z"}


def run(events, **params):
    det = QueryRateDetector(**params)
    state = det.new_state()
    return [f for e in events for f in det.update(state, e)]


def quiet_history(minutes: int = 30, per_minute: int = 3, **fields):
    return [inference(f"q{i}", i * 60 / per_minute, **fields) for i in range(minutes * per_minute)]


def test_a_flood_on_a_quiet_key_is_seen_within_a_few_dozen_queries() -> None:
    flood = [inference(f"f{i}", 1800.3 + i / 40, principal_fields=AGED) for i in range(300)]
    findings = run(quiet_history(principal_fields=AGED) + flood)
    first = findings[0]
    assert first.evidence["queries_in_window"] <= 40 and first.severity == "low"
    assert first.evidence["baseline_buckets"] >= 3 and first.user == "key-1"


def test_a_slower_flood_twice_the_ceiling_is_seen_within_a_hundred_queries() -> None:
    # 10 queries a second: a 2-second window never holds the 26 its bar asks, a whole bucket takes 300 queries;
    # the sliding 10-second window sees it. Started mid-window: a sliding window does not wait for the next one.
    flood = [inference(f"f{i}", 1803.7 + i / 10, principal_fields=AGED) for i in range(600)]
    findings = run(quiet_history(principal_fields=AGED) + flood)
    first = findings[0]
    assert first.evidence["queries_in_medium_window"] <= 100 and first.evidence["queries_in_bucket"] <= 100
    assert first.summary.startswith(f"sent {first.evidence['queries_in_medium_window']} queries in 10 s")


def test_an_established_account_seen_first_at_its_heavy_rate_is_learned_not_alerted() -> None:
    assert not run([inference(f"h{i}", i / 8, principal_fields=AGED) for i in range(8 * 600)])


def test_a_key_of_unknown_age_gets_no_grace() -> None:
    findings = run([inference(f"h{i}", i / 8) for i in range(8 * 60)])
    assert findings and findings[0].evidence["queries_in_bucket"] == 300


def test_a_backfill_just_under_the_population_ceiling_does_not_alert() -> None:
    # 4.5 queries a second for 20 minutes, after a quiet history: Poisson bursts above 5/s are expected.
    backfill = [inference(f"b{i}", 1800 + i / 4.5 + (i % 7) * 0.05) for i in range(5400)]
    assert not run(quiet_history() + backfill)


def test_a_long_flood_makes_a_finding_as_its_burst_grows_not_one_a_query() -> None:
    # 100 queries a second for 200 seconds after a quiet history: four buckets of flood.
    flood = [inference(f"f{i}", 1800.3 + i / 100, principal_fields=AGED) for i in range(20_000)]
    findings = run(quiet_history(principal_fields=AGED) + flood)
    bursts = [f.magnitude for f in findings]
    assert 10 < len(findings) < 200
    assert all(after > before for before, after in zip(bursts, bursts[1:]))
    # The latest finding is at most a sixteenth of the burst behind the flood's end.
    assert bursts[-1] * 17 / 16 >= 20_000

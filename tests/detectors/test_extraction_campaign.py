"""The distributed-extraction campaign: one alert per campaign, naming its accounts, relative to the population."""

from __future__ import annotations

from detectors.extraction_campaign import ExtractionCampaignDetector
from detectors.testing import inference


def run(events, **params):
    det = ExtractionCampaignDetector(**params)
    state = det.new_state()
    return [f for e in sorted(events, key=lambda e: e.timestamp) for f in det.update(state, e)], state


def population(n: int, confidence: float = 0.95):
    return [inference(f"n{i}", i, principal=f"user-{i % 100}", output={"confidence": confidence - (i % 4) * 0.1},
                      principal_fields={"ip": f"10.{i % 100}.{i % 3}.1", "created_at": f"2024-0{1 + i % 9}-01T00:00:00Z"})
            for i in range(n)]


def campaign(n: int, accounts: int, prefixes: int, confidence: float = 0.6, start: float = 100.0):
    return [inference(f"s{i}", start + i * 0.7, principal=f"bot-{i % accounts}", output={"confidence": confidence},
                      principal_fields={"ip": f"203.0.{i % accounts % prefixes}.{1 + i % accounts}",
                                        "user_agent": "python-httpx/0.27.0",
                                        "created_at": f"2025-12-30T{(i % accounts) % 3:02d}:00:00Z"})
            for i in range(n)]


def test_a_campaign_over_many_prefixes_is_one_alert_naming_every_account() -> None:
    findings, _ = run(population(3000) + campaign(3000, accounts=90, prefixes=12))
    assert {f.subject for f in findings} == {findings[0].subject}
    assert findings[-1].evidence["accounts"] == 90 and len(findings[-1].users) == 90
    assert findings[-1].severity == "high" and findings[-1].user is None


def test_the_population_reference_excludes_the_group_itself() -> None:
    # The campaign is most of the traffic: compared with a population that included it, it would look normal.
    findings, _ = run(population(400) + campaign(4000, accounts=40, prefixes=2))
    assert findings and findings[0].evidence["population_unsure_share"] < 0.3


def test_natural_groups_are_never_flagged_even_when_large() -> None:
    nat = [inference(f"t{i}", i, principal=f"corp-{i % 200}", output={"confidence": 0.95 - (i % 4) * 0.1},
                     principal_fields={"ip": "198.51.100.7", "user_agent": "mail-web/5.2",
                                       "created_at": "2025-12-31T09:00:00Z"}) for i in range(5000)]
    findings, _ = run(population(3000) + nat)
    assert not findings


def test_a_model_whose_users_are_all_unsure_does_not_flag_a_group_for_it() -> None:
    findings, _ = run(population(3000, confidence=0.62) + campaign(2000, accounts=40, prefixes=2))
    assert not findings


def test_groups_stay_bounded_under_a_flood_of_new_addresses() -> None:
    flood = [inference(f"r{i}", i * 0.01, principal=f"x{i}", output={"confidence": 0.9},
                       principal_fields={"ip": f"{1 + i % 200}.{i // 200 % 250}.{i // 50000}.1"}) for i in range(20000)]
    _, state = run(flood, max_groups=256)
    assert len(state["groups"]) <= 256

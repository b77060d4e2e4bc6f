"""Distributed extraction, both stages: groups flagged against their peers, merged into one campaign alert."""

from __future__ import annotations

from detectors.extraction_campaign import ExtractionCampaignDetector
from detectors.extraction_groups import CohortGroupDetector, PrefixGroupDetector
from detectors.testing import inference
from stream.engine import Engine, MemoryStore


def run(events, store=None, max_keys=50_000, **params):
    """The campaign's alerts over events, with both building blocks, and the store."""
    engine = Engine([PrefixGroupDetector(**params), CohortGroupDetector(**params), ExtractionCampaignDetector()],
                    max_keys=max_keys)
    store = store if store is not None else MemoryStore()
    alerts = [a for e in sorted(events, key=lambda e: e.timestamp) for a in engine.settle(e, store).alerts]
    return alerts, store


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


def group_signals(engine: Engine, store: MemoryStore, event, partition: int = 0) -> list:
    """The signals of the building blocks once an event is folded and its partition's tallies applied."""
    engine.process(event, store, partition=partition).save(store)
    step = engine.process_batch([(t, None) for t in engine.tallies(store, partition)], store, partition)
    step.save(store)
    return step.signals


def evidence(alert):
    return alert["modelsiem"]["evidence"]


def test_a_campaign_over_many_prefixes_is_one_alert_naming_every_account() -> None:
    alerts, _ = run(population(3000) + campaign(3000, accounts=90, prefixes=12))
    assert len({a["event"]["id"] for a in alerts}) == 1
    assert {a["rule"]["id"] for a in alerts} == {"extraction_campaign"}  # the building blocks raise none
    assert evidence(alerts[-1])["accounts"] == 90 and len(alerts[-1]["related"]["user"]) == 90
    assert alerts[-1]["modelsiem"]["alert"]["severity"] == "high" and "user" not in alerts[-1]
    # Its queries are counted once, not once per grouping they belong to.
    assert evidence(alerts[-1])["campaign_queries"] <= 3000


def test_the_population_reference_excludes_the_group_itself() -> None:
    # The campaign is most of the traffic: compared with a population that included it, it would look normal.
    alerts, _ = run(population(400) + campaign(4000, accounts=40, prefixes=2))
    assert alerts and evidence(alerts[0])["population_unsure_share"] < 0.3


def test_natural_groups_are_never_flagged_even_when_large() -> None:
    nat = [inference(f"t{i}", i, principal=f"corp-{i % 200}", output={"confidence": 0.95 - (i % 4) * 0.1},
                     principal_fields={"ip": "198.51.100.7", "user_agent": "mail-web/5.2",
                                       "created_at": "2025-12-31T09:00:00Z"}) for i in range(5000)]
    alerts, _ = run(population(3000) + nat)
    assert not alerts


def test_a_model_whose_users_are_all_unsure_does_not_flag_a_group_for_it() -> None:
    alerts, _ = run(population(3000, confidence=0.62) + campaign(2000, accounts=40, prefixes=2))
    assert not alerts


def test_groups_stay_bounded_under_a_flood_of_new_addresses() -> None:
    flood = [inference(f"r{i}", i * 0.01, principal=f"x{i}", output={"confidence": 0.9},
                       principal_fields={"ip": f"{1 + i % 200}.{i // 200 % 250}.{i // 50000}.1"}) for i in range(20000)]
    _, store = run(flood, max_keys=256)
    assert len(store.records["extraction_prefix"]) <= 256


def test_a_signal_delivered_twice_counts_once() -> None:
    engine, store = Engine([PrefixGroupDetector(), CohortGroupDetector()]), MemoryStore()
    signals = []
    for e in sorted(population(3000) + campaign(3000, accounts=90, prefixes=12), key=lambda e: e.timestamp):
        signals += group_signals(engine, store, e)
    campaign_engine, campaign_store = Engine([ExtractionCampaignDetector()]), MemoryStore()
    once = [a for s in signals for a in campaign_engine.settle(s, campaign_store).alerts]
    again = [a for s in signals for a in campaign_engine.settle(s, campaign_store).alerts]
    assert once and not again


def test_each_partition_judges_its_groups_against_its_own_peers() -> None:
    """Groups on another partition are not peers: the campaign alone on a partition has no reference there."""
    def signals(partition_of_bots: int) -> int:
        engine, store, raised = Engine([PrefixGroupDetector()]), MemoryStore(), 0
        for e in sorted(population(3000) + campaign(3000, accounts=90, prefixes=1), key=lambda e: e.timestamp):
            raised += len(group_signals(engine, store, e, partition_of_bots if e.event_id.startswith("s") else 0))
        return raised

    assert signals(partition_of_bots=0) and not signals(partition_of_bots=1)


def test_a_signal_with_non_numeric_evidence_does_not_break_the_campaign() -> None:
    """Anyone who can write to a route topic can send a signal: its evidence is read as numbers or not at all."""
    from stream.signals import Signal

    def signal(seq, users, **evidence):
        return Signal.validate({"timestamp": "2026-01-01T00:00:00Z", "model": {"name": "m"},
                                      "rule": "extraction_prefix", "subject": "203.0.113.0/24", "seq": seq,
                                      "magnitude": 100, "users": users, "evidence": {"group": "prefix", **evidence}})

    engine, store = Engine([ExtractionCampaignDetector()]), MemoryStore()
    hostile = signal(1, ["a", "b"], queries="many", population_unsure_share="{0.__class__}", min_shift=[1])
    first = engine.settle(hostile, store).alerts
    later = engine.settle(signal(2, [f"bot-{i}" for i in range(40)], queries=400, unsure=360), store).alerts
    assert first and later and evidence(later[-1])["accounts"] == 42
    assert evidence(first[0])["population_unsure_share"] == 0 and evidence(first[0])["min_shift"] == 0


def test_campaigns_flagged_apart_are_merged_when_a_group_links_them() -> None:
    """Signals arrive in any order across partitions: prefixes flagged before their cohort are campaigns of
    their own until the cohort, which shares accounts with each, merges them into the earliest."""
    campaign_rule = ExtractionCampaignDetector()
    prefixes = [f"203.0.{p}.0/24" for p in range(3)]
    bots = {prefix: [f"bot-{p}-{i}" for i in range(10)] for p, prefix in enumerate(prefixes)}
    signals = [_signal("extraction_prefix", prefix, 1, bots[prefix], seconds=p) for p, prefix in enumerate(prefixes)]
    signals.append(_signal("extraction_cohort", "c:httpx", 1, [b for group in bots.values() for b in group[:3]], 9))
    signals += [_signal("extraction_prefix", prefix, 2, bots[prefix], seconds=20 + p) for p, prefix in enumerate(prefixes)]
    engine, store = Engine([campaign_rule]), MemoryStore()
    alerts = [a for s in signals for a in engine.settle(s, store).alerts]
    subjects = [a["modelsiem"]["alert"]["subject"] for a in alerts]
    first = f"campaign:extraction_prefix:{prefixes[0]}"
    assert len(set(subjects[:3])) == 3  # three campaigns, as far as anyone could tell
    assert set(subjects[3:]) == {first}  # from the cohort on, one: every later signal updates it
    last = evidence(alerts[-1])
    assert last["accounts"] == 30 and len(alerts[-1]["related"]["user"]) == 30
    assert sorted(last["merged_campaigns"]) == sorted(f"campaign:extraction_prefix:{p}" for p in prefixes[1:])
    assert last["campaign_queries"] == 3 * 160  # each prefix's latest count, once
    campaigns = next(iter(store.records["extraction_campaign"].values()))["state"]["campaigns"]
    assert list(campaigns) == [first]


def _signal(rule: str, subject: str, seq: int, users: list[str], seconds: float = 0.0):
    from datetime import datetime, timezone

    from stream.signals import Signal

    return Signal.validate({"timestamp": datetime.fromtimestamp(1767225600 + seconds, tz=timezone.utc), "model": {"name": "m"}, "rule": rule,
                                  "subject": subject, "seq": seq, "magnitude": 80 * seq, "users": users,
                                  "evidence": {"group": rule.removeprefix("extraction_"), "label": subject,
                                               "queries": 80 * seq, "unsure": 70 * seq}})


def test_a_group_label_forged_on_a_route_topic_reaches_the_signal_clean():
    from detectors.base import partition_value
    from detectors.extraction_groups import GroupTally

    detector = PrefixGroupDetector()
    peers, sybils, findings = detector.new_peers(), detector.new_state(), []
    partials: dict = {}
    events = sorted(next(e for e in PrefixGroupDetector.examples() if e.alerts).events(), key=lambda e: e.timestamp)
    for event in events:
        value = partition_value("ip_prefix", event)
        partial = partials.setdefault(value, detector.new_partial())
        assert detector.fold(partial, event, value)
        seen = detector.tally(partial, "0")
        assert isinstance(seen, GroupTally)
        forged = seen.replace(label="\x1b[2J\u202eevil\r\n" + seen.label)
        state = sybils if seen.value == "203.0.113.0/24" else detector.new_state()
        findings += detector.update(state, forged, peers)
    assert findings and {f.evidence["label"] for f in findings} == {"[2Jevil203.0.113.0/24"}

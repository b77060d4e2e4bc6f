"""Alert lifecycle and exactly-once state application in the engine."""

from __future__ import annotations

import orjson
import pytest

from detectors.base import Finding
from detectors.feedback_surge import FeedbackSurgeDetector
from detectors.query_rate import QueryRateDetector
from detectors.testing import feedback, inference
from stream.alerts import document_id
from stream.engine import Engine, MemoryStore, Position


def run(engine: Engine, events, store=None, positions=None):
    store = store if store is not None else MemoryStore()
    alerts = []
    for i, event in enumerate(events):
        step = engine.process(event, store, positions[i] if positions else None)
        alerts.extend(step.alerts)
        step.save(store)
    return alerts, store


def flood(n: int, start: float = 0.0, prefix: str = "f"):
    return [inference(f"{prefix}{i}", start + i * 0.01) for i in range(n)]


def test_one_alert_updated_as_evidence_grows() -> None:
    alerts, _ = run(Engine([QueryRateDetector()]), flood(3000))
    # Revisions as the evidence doubles, one alert id. The detector makes a finding as its burst grows by a
    # sixteenth, so a revision comes at the first finding past twice the last one.
    bursts = [a["modelsiem"]["evidence"]["burst_queries"] for a in alerts]
    assert bursts[0] == 300 and len(bursts) == 4
    assert all(2 * before <= after <= 2 * before * 17 / 16 + 1 for before, after in zip(bursts, bursts[1:]))
    assert len({a["event"]["id"] for a in alerts}) == 1
    assert [a["modelsiem"]["alert"]["revision"] for a in alerts] == [1, 2, 3, 4]
    assert len({document_id(a) for a in alerts}) == 4


def test_a_new_episode_after_a_quiet_gap_is_a_new_alert() -> None:
    events = flood(300) + flood(300, start=2 * 3600, prefix="g")
    alerts, _ = run(Engine([QueryRateDetector()]), events)
    assert len(alerts) == 2 and alerts[0]["event"]["id"] != alerts[1]["event"]["id"]


def test_replay_is_reproducible() -> None:
    first, _ = run(Engine([QueryRateDetector()]), flood(700))
    second, _ = run(Engine([QueryRateDetector()]), flood(700))
    strip = lambda a: {k: v for k, v in a.items() if k != "event"} | {"id": a["event"]["id"]}  # noqa: E731
    assert [strip(a) for a in first] == [strip(a) for a in second]


def test_redelivered_events_are_not_applied_twice() -> None:
    engine = Engine([QueryRateDetector()])
    events = flood(299)
    positions = [Position("t", 0, i) for i in range(299)]
    alerts, store = run(engine, events, positions=positions)
    assert not alerts
    # After a crash Kafka re-delivers the last 200 events: they must not count again.
    again, store = run(engine, events[99:], store, positions[99:])
    assert not again
    alerts, _ = run(engine, [inference("last", 3.0)], store, [Position("t", 0, 299)])
    assert alerts and alerts[0]["modelsiem"]["evidence"]["queries_in_bucket"] == 300


def test_state_is_saved_only_through_the_step() -> None:
    engine, store = Engine([FeedbackSurgeDetector()]), MemoryStore()
    step = engine.process(feedback("f", 0, principal="p"), store)
    assert store.records == {}
    step.save(store)
    assert list(store.items("feedback_surge")) == [("spam-filter\x1ffp-1", store.get("feedback_surge", "spam-filter\x1ffp-1"))]


def test_events_a_detector_does_not_take_leave_no_state() -> None:
    _, store = run(Engine([FeedbackSurgeDetector()]), flood(10))
    assert store.records == {}


def test_idle_keys_expire_after_the_detectors_ttl() -> None:
    engine = Engine([QueryRateDetector()])
    ttl = QueryRateDetector.state_ttl
    _, store = run(engine, [inference("a", 0, principal="idle"), inference("b", 10, principal="busy")])
    _, store = run(engine, [inference("c", ttl - 5, principal="busy")], store)
    assert {k for k, _ in store.items("query_rate")} == {"spam-filter\x1fidle", "spam-filter\x1fbusy"}
    _, store = run(engine, [inference("d", ttl + 1, principal="busy")], store)
    assert {k for k, _ in store.items("query_rate")} == {"spam-filter\x1fbusy"}


def test_a_flood_of_new_principals_is_bounded_by_max_keys() -> None:
    engine = Engine([QueryRateDetector()], max_keys=100)
    events = [inference(f"e{i}", i * 0.001, principal=f"never-seen-{i}") for i in range(5000)]
    _, store = run(engine, events)
    keys = [k for k, _ in store.items("query_rate")]
    assert len(keys) == 100 and "spam-filter\x1fnever-seen-4999" in keys  # the most recent survive


def test_recency_is_rebuilt_from_the_store_after_a_restart() -> None:
    _, store = run(Engine([QueryRateDetector()]), [inference("a", 0, principal="old")], positions=[Position("t", 3, 0)])
    fresh = Engine([QueryRateDetector()])  # a restarted worker: empty index, restored store
    ttl = QueryRateDetector.state_ttl
    run(fresh, [inference("b", ttl + 1, principal="new")], store, [Position("t", 3, 1)])
    assert [k for k, _ in store.items("query_rate")] == ["spam-filter\x1fnew"]


def test_state_of_an_older_detector_version_starts_afresh() -> None:
    engine = Engine([QueryRateDetector()])
    _, store = run(engine, flood(10))
    record = store.get("query_rate", "spam-filter\x1fkey-1")
    record["v"], record["state"] = 0, {"shape": "of an old version"}
    alerts, store = run(engine, flood(300, start=1.0, prefix="g"), store)
    assert store.get("query_rate", "spam-filter\x1fkey-1")["v"] == QueryRateDetector.meta.version
    assert alerts  # the flood is still detected, on fresh state


class _ByTenant(QueryRateDetector):
    """A detector with its own key (a plugin may override Detector.key): it must not share the principal's."""

    def key(self, event):
        return f"tenant\x1f{event.principal.tenant}"


def test_detectors_share_the_standard_key_but_one_with_its_own_key_keeps_it() -> None:
    class Twin(QueryRateDetector):
        meta = QueryRateDetector.meta.model_copy(update={"id": "query_rate_twin"})

    class Tenant(_ByTenant):
        meta = QueryRateDetector.meta.model_copy(update={"id": "query_rate_tenant"})

    engine = Engine([QueryRateDetector(), Tenant(), Twin()])
    _, store = run(engine, [inference("a", 0, principal="p", principal_fields={"tenant": "acme"})])
    assert [k for k, _ in store.items("query_rate")] == ["spam-filter\x1fp"]
    assert [k for k, _ in store.items("query_rate_twin")] == ["spam-filter\x1fp"]
    assert [k for k, _ in store.items("query_rate_tenant")] == ["tenant\x1facme"]


def _mixed_events(minutes: int = 20):
    from datetime import datetime, timezone

    from modelsiem.scenarios import simulate
    from stream.decode import decode

    trace = simulate(["query_flood", "distributed_extraction", "boundary_probing", "feedback_poisoning", "nat_users"],
                     minutes=minutes, seed=3, start=datetime(2026, 1, 1, tzinfo=timezone.utc))
    return [decode(orjson.dumps(e)) for e in trace.sorted_events()]


def _fixed_clock():
    from datetime import datetime, timezone

    return datetime(2026, 2, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("lane", ["every detector on one partition", "principal detectors on two partitions"])
def test_batches_raise_what_events_one_by_one_raise(lane: str) -> None:
    """Source positions and a re-delivered stretch included, the batched engine raises the same alerts and
    signals and leaves the same state as the engine fed one event at a time. (A lane's keys live on one
    partition each, as in the worker, where events are partitioned by the key of the lane's detectors.)"""
    from detectors.registry import build

    events = _mixed_events()
    detectors = build()
    if lane.startswith("principal"):
        detectors = [d for d in detectors if d.partition_key == "principal"]
        partition_of = lambda e: sum(e.principal.id.encode()) % 2  # noqa: E731
    else:
        partition_of = lambda e: 0  # noqa: E731
    positions = [Position("t", partition_of(e), i) for i, e in enumerate(events)]
    items = list(zip(events, positions)) + list(zip(events[500:700], positions[500:700]))  # re-delivered

    one, one_store, one_out = Engine(detectors, clock=_fixed_clock), MemoryStore(), []
    for event, position in items:
        step = one.process(event, one_store, position)
        one_out += [("alert", a) for a in step.alerts] + [("signal", s.to_dict()) for s in step.signals]
        step.save(one_store)

    batched, batched_store, batched_out = Engine(detectors, clock=_fixed_clock), MemoryStore(), []
    for start in range(0, len(items), 97):
        for partition in (0, 1):
            chunk = [item for item in items[start:start + 97] if item[1].partition == partition]
            step = batched.process_batch(chunk, batched_store, partition)
            batched_out += [("alert", a) for a in step.alerts] + [("signal", s.to_dict()) for s in step.signals]
            step.save(batched_store)

    assert any(kind == "alert" for kind, _ in one_out)
    key = lambda out: orjson.dumps(out, option=orjson.OPT_SORT_KEYS, default=str)  # noqa: E731
    assert sorted(map(key, batched_out)) == sorted(map(key, one_out))
    assert orjson.dumps(batched_store.records, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        one_store.records, option=orjson.OPT_SORT_KEYS)


def test_a_detector_failure_is_reported_and_the_batch_goes_on() -> None:
    class Fragile(QueryRateDetector):
        def update(self, state, event):
            if event.event_id == "f3":
                raise ValueError("a bug")
            return super().update(state, event)

    engine, store, failed = Engine([Fragile()]), MemoryStore(), []
    step = engine.process_batch([(e, None) for e in flood(400)], store, failed=lambda i, exc: failed.append((i, exc)))
    assert [(i, str(exc)) for i, exc in failed] == [(3, "a bug")]
    assert [a["modelsiem"]["evidence"]["burst_queries"] for a in step.alerts] == [300]  # 399 counted, not 400


def test_a_building_block_signals_numpy_numbers_and_fails_on_its_event_for_what_json_cannot_carry() -> None:
    import numpy as np

    from tests.seen_digest import PrefixSeenDetector

    class Evidence(PrefixSeenDetector):
        def update(self, state, event, peers):
            value = {"odd": 1j} if event.event_id == "e1" else {"share": np.float64(0.5), "n": np.int64(3),
                                                                 "even": np.bool_(False)}
            return (Finding(subject="s", severity="medium", risk_score=47, summary="x", magnitude=1,
                            evidence=value, users=(event.principal,)),)

    events = [inference(f"e{i}", i, principal_fields={"ip": "203.0.113.9"}, output={"confidence": 0.9})
              for i in range(3)]
    failed = []
    step = Engine([Evidence()]).process_batch([(e, None) for e in events], MemoryStore(),
                                              failed=lambda i, exc: failed.append((i, type(exc).__name__)))
    assert failed == [(1, "TypeError")]
    assert [orjson.loads(s.to_json())["evidence"] for s in step.signals] == [{"share": 0.5, "n": 3, "even": False}] * 2


def test_numpy_numbers_in_evidence_are_plain_numbers_in_the_alert() -> None:
    from dataclasses import replace

    import numpy as np

    class NumpyEvidence(QueryRateDetector):
        def update(self, state, event):
            return [replace(f, evidence={**f.evidence, "share": np.float32(0.25), "counts": [np.int64(3), 4],
                                         "even": np.bool_(True)})
                    for f in super().update(state, event)]

    alerts, _ = run(Engine([NumpyEvidence()]), flood(400))
    evidence = orjson.loads(orjson.dumps(alerts[0]))["modelsiem"]["evidence"]
    assert evidence["share"] == 0.25 and evidence["counts"] == [3, 4] and evidence["even"] is True


def test_a_batch_with_more_new_keys_than_max_keys_stays_within_the_bound() -> None:
    engine, store = Engine([QueryRateDetector()], max_keys=100), MemoryStore()
    for start in range(0, 5000, 500):
        batch = [(inference(f"e{i}", i * 0.001, principal=f"never-seen-{i}"), None) for i in range(start, start + 500)]
        engine.process_batch(batch, store).save(store)
    keys = [k for k, _ in store.items("query_rate")]
    assert len(keys) == 100 and "spam-filter\x1fnever-seen-4999" in keys


def test_evidence_json_cannot_carry_fails_on_its_event_not_at_publishing() -> None:
    class OddEvidence(QueryRateDetector):
        def update(self, state, event):  # a finding on every event, growing, with odd evidence on three
            odd = {"f301": {"a", "b"}, "f302": 2**70, "f303": [object()]}.get(event.event_id)
            return [Finding(subject="s", severity="low", risk_score=21, summary="x",
                            magnitude=int(event.event_id[1:]) + 1, evidence={"extra": odd})]

    store, failed = MemoryStore(), []
    step = Engine([OddEvidence()], growth=1.0001).process_batch(
        [(e, None) for e in flood(400)], store, failed=lambda i, exc: failed.append((i, str(exc))))
    assert failed == [(301, "evidence extra: set is not a JSON text, number or boolean"),
                      (302, "evidence extra: an integer beyond 64 bits"),
                      (303, "evidence extra: object is not a JSON text, number or boolean")]
    assert step.alerts and all(orjson.dumps(alert) for alert in step.alerts)


def test_a_route_applying_digests_signals_as_the_engine_digesting_the_events_in_place() -> None:
    """What the worker's route agent does (digests, read back from their JSON, with their source positions)
    raises the signals replay raises from the events themselves; a re-delivered digest is applied once."""
    import msgspec

    from detectors.base import partition_value
    from detectors.extraction_groups import PrefixGroupDetector
    from tests.seen_digest import PrefixSeenDetector

    detector = PrefixSeenDetector()
    # The attack, and an event that says nothing of what was asked or answered: it is not routed.
    attack = [*next(e for e in PrefixGroupDetector.examples() if e.alerts).events(),
              inference("bare", 3600, principal_fields={"ip": "203.0.113.1"})]
    in_place = Engine([PrefixSeenDetector()]).process_batch([(e, None) for e in attack], MemoryStore())
    routed = []
    for offset, event in enumerate(attack):
        value = partition_value("ip_prefix", event)
        seen = detector.digest(event, value) if value else None
        if seen is not None:
            routed.append((msgspec.json.decode(seen.to_json(), type=detector.digest_type),
                           Position("events", 0, offset)))
    route, store = Engine([PrefixSeenDetector()]), MemoryStore()
    first = route.process_batch(routed[:300], store)
    first.save(store)
    again = route.process_batch(routed[200:], store)  # after a crash: the last 100 re-delivered
    assert in_place.signals and len(routed) == len(attack) - 1
    assert [s.to_json() for s in first.signals + again.signals] == [s.to_json() for s in in_place.signals]


def test_a_route_learning_from_tallies_counts_each_event_once() -> None:
    """Tallies an ingest engine makes of the events it folds (at their positions, read back from JSON) raise
    on a route the signals of one engine folding in place; tallies sent twice, and the tallies of a
    re-delivered stretch after a crash, add nothing."""
    import copy

    import msgspec

    from detectors.extraction_groups import PrefixGroupDetector, PrefixTally

    events = sorted(next(e for e in PrefixGroupDetector.examples() if e.alerts).events(), key=lambda e: e.timestamp)
    batches = [list(enumerate(events))[i:i + 40] for i in range(0, len(events), 40)]

    def settled(engine: Engine, store: MemoryStore, tallies: list) -> list[bytes]:
        step = engine.process_batch([(each, None) for each in tallies], store)
        step.save(store)
        return [signal.to_json() for signal in step.signals]

    in_place, store, expected = Engine([PrefixGroupDetector()]), MemoryStore(), []
    for batch in batches:
        in_place.process_batch([(e, None) for _, e in batch], store).save(store)
        expected += settled(in_place, store, in_place.tallies(store))

    ingest, route = Engine([PrefixGroupDetector()]), Engine([PrefixGroupDetector()], folds=False)
    ingested, routed, got = MemoryStore(), MemoryStore(), []
    checkpoint = None
    for index, batch in enumerate(batches):
        if index == len(batches) // 2:
            checkpoint = copy.deepcopy(ingested.records)
        ingest.process_batch([(e, Position("events", 0, offset)) for offset, e in batch], ingested).save(ingested)
        sent = [msgspec.json.decode(t.to_json(), type=PrefixTally) for t in ingest.tallies(ingested)]
        got += settled(route, routed, sent + sent)
    assert expected and got == expected
    # A crash: the ingest restarts from its checkpoint, and the events since are delivered and tallied again.
    ingest, ingested.records = Engine([PrefixGroupDetector()]), checkpoint
    for batch in batches[len(batches) // 2:]:
        ingest.process_batch([(e, Position("events", 0, offset)) for offset, e in batch], ingested).save(ingested)
        assert settled(route, routed, ingest.tallies(ingested)) == []
    group = routed.records["extraction_prefix"]["spam-filter\x1f203.0.113.0/24"]["state"]
    assert group["n"] == sum(1 for e in events if e.principal.ip and e.principal.ip.startswith("203.0.113."))



"""Several workers raise the same alerts as one replay of the same events."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta, timezone

import time

import orjson

from connectors.kafka import ensure_topics, publish_events
from detectors.registry import build
from modelsiem.scenarios import simulate
from stream.engine import Engine
from stream.replay import replay
from tests.integration.conftest import read_topic, stable_members, wait_until, worker_done

SCENARIOS = ["query_flood", "feedback_poisoning"]


def _trace():
    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=20)
    return simulate(SCENARIOS, minutes=20, principals=30, seed=5, start=start).sorted_events()


def _subjects(alerts: list[dict]) -> dict[tuple[str, str], set[str]]:
    """(rule, subject) -> the alert ids raised for it."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for alert in alerts:
        out[(alert["rule"]["id"], alert["modelsiem"]["alert"]["subject"])].add(alert["event"]["id"])
    return out


def _expected(events: list[dict]) -> dict[tuple[str, str], set[str]]:
    alerts: list[dict] = []
    replay([(i, orjson.dumps(e)) for i, e in enumerate(events)], Engine(build()), alerts.append)
    return _subjects(alerts)


def _wait_done(s, workers) -> list[dict]:
    def alive():
        for w in workers:
            w.assert_running()

    wait_until(lambda: worker_done(s), 240, "the workers to consume every event", alive)
    return [orjson.loads(m.value()) for m in read_topic(s, s.topics.alerts)]


def _assert_same_alerts(produced: list[dict], expected: dict[tuple[str, str], set[str]]) -> None:
    got = _subjects(produced)
    assert set(got) == set(expected), "the workers alerted on other subjects than the replay"
    # One alert per subject and episode, however the partitions moved: no duplicate alert.
    assert all(len(ids) == 1 for ids in got.values()), {k: v for k, v in got.items() if len(v) > 1}


def test_two_workers_raise_the_alerts_of_one_replay(isolated, spawn):
    s = isolated.settings
    ensure_topics(s)
    events = _trace()
    workers = [spawn("worker"), spawn("worker")]
    # Both in the group before the events arrive: a rebalance while events flow can leave faust
    # with a gap in its acknowledgements (faust-streaming issue 606), which this test is not about.
    wait_until(lambda: stable_members(s, s.app_id) == 2, 120, "both workers to join the group",
               lambda: [w.assert_running() for w in workers])
    publish_events(s, events)
    _assert_same_alerts(_wait_done(s, workers), _expected(events))


def test_a_worker_joining_and_one_leaving_mid_run_lose_and_duplicate_nothing(isolated, spawn):
    s = isolated.settings
    ensure_topics(s)
    events = _trace()
    size = len(events) // 8 + 1
    chunks = [events[i : i + size] for i in range(0, len(events), size)]
    first = spawn("worker")
    wait_until(lambda: stable_members(s, s.app_id) == 1, 120, "the first worker to join", first.assert_running)
    joined = left = None
    for n, chunk in enumerate(chunks):
        publish_events(s, chunk)
        if n == 2:
            joined = spawn("worker")  # joins while events flow: partitions move to it
            # Both must share the partitions before the first leaves, or this only tests a hand-over.
            wait_until(lambda: stable_members(s, s.app_id) == 2, 120, "the second worker to join",
                       lambda: [w.assert_running() for w in (first, joined)])
        if n == 5:
            first.stop()  # leaves while events flow: its partitions move back
            left = first
        time.sleep(2)
    assert joined is not None and left is not None
    _assert_same_alerts(_wait_done(s, [joined]), _expected(events))

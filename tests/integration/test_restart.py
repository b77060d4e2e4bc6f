"""Detector state survives a worker killed with SIGKILL and restarted."""

from __future__ import annotations

import orjson

from connectors.kafka import ensure_topics, publish_events
from detectors.query_rate import QueryRateDetector
from detectors.testing import inference
from tests.integration.conftest import committed_all, read_topic, wait_until

THRESHOLD = QueryRateDetector.Params().min_rate  # a new key alerts at this many queries in one bucket


def _events(start: int, count: int) -> list[dict]:
    # All within one 60 s bucket of event time, far from any bucket edge.
    return [
        inference(f"e{i}", 3600 + 10 + i * 0.05, principal="killed-worker-key").model_dump(mode="json")
        for i in range(start, start + count)
    ]


def test_worker_killed_and_restarted_keeps_detector_state(isolated, spawn):
    s = isolated.settings
    ensure_topics(s)
    event_topics = [s.topics.inference, s.topics.feedback]

    worker = spawn("worker")
    publish_events(s, _events(0, THRESHOLD - 50))
    wait_until(lambda: committed_all(s, s.app_id, event_topics), 120, "the worker to commit the first events",
               worker.assert_running)
    worker.kill()

    worker = spawn("worker")
    # Wait until the restarted worker consumes (one event of another key) before the rest arrive.
    publish_events(s, [inference("probe", 3610, principal="another-key").model_dump(mode="json")])
    wait_until(lambda: committed_all(s, s.app_id, event_topics), 120, "the restarted worker to start",
               worker.assert_running)
    publish_events(s, _events(THRESHOLD - 50, 49))
    wait_until(lambda: committed_all(s, s.app_id, event_topics), 120, "the restarted worker to catch up",
               worker.assert_running)
    # One query short of the threshold: only a worker that forgot or double-counted would alert now.
    assert read_topic(s, s.topics.alerts, timeout=2) == []

    publish_events(s, _events(THRESHOLD - 1, 1))
    alerts = wait_until(lambda: read_topic(s, s.topics.alerts), 120, "the alert", worker.assert_running)
    assert len(alerts) == 1
    alert = orjson.loads(alerts[0].value())
    assert alert["modelsiem"]["evidence"]["queries_in_bucket"] == THRESHOLD
    assert alert["user"]["name"] == "killed-worker-key"

"""Detector state survives a worker killed with SIGKILL and restarted."""

from __future__ import annotations

import signal
import time

import orjson

from connectors.kafka import ensure_topics, publish_events
from detectors.query_rate import QueryRateDetector
from detectors.testing import inference
from tests.integration.conftest import committed_all, read_topic, wait_until, worker_done

THRESHOLD = QueryRateDetector.Params().min_rate  # a new key alerts at this many queries in one bucket


def _events(start: int, count: int) -> list[dict]:
    # All within one 60 s bucket of event time, far from any bucket edge.
    return [
        inference(f"e{i}", 3600 + 10 + i * 0.05, principal="killed-worker-key").to_dict()
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
    publish_events(s, _events(THRESHOLD - 50, 50))
    # The alert must come from the last event: a worker that forgot the first events would not alert
    # at all, one that counted some twice would alert on an earlier event.
    try:
        alerts = wait_until(lambda: read_topic(s, s.topics.alerts), 180, "the alert", worker.assert_running)
    except AssertionError as exc:  # say which way it failed: state lost (all consumed) or the worker stalled
        consumed = committed_all(s, s.app_id, event_topics)
        worker.proc.send_signal(signal.SIGUSR1)  # faust's worker then logs every thread's and task's stack
        time.sleep(3)
        raise AssertionError(f"{exc}; the restarted worker {'committed' if consumed else 'did not commit'} "
                             f"every event; its stacks:\n{worker.log_tail(1500)}") from exc
    first = orjson.loads(alerts[0].value())
    last_event = _events(THRESHOLD - 1, 1)[0]
    assert first["@timestamp"][:23] == last_event["timestamp"][:23]
    assert first["modelsiem"]["evidence"]["queries_in_bucket"] == THRESHOLD
    assert first["user"]["name"] == "killed-worker-key"
    # And the restarted worker commits through to the end: nothing it was handed stays unacknowledged
    # (faust can skip a message after a rejoin; the worker reads such holes back, see stream.skipped).
    wait_until(lambda: worker_done(s), 120, "the restarted worker to commit every event", worker.assert_running)
    assert len(read_topic(s, s.topics.alerts)) == 1

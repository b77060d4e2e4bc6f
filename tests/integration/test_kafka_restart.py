"""The worker rides out a Kafka restart mid-run: it reconnects and goes on, its detector state intact.

This test stops and restarts the shared local Kafka (``modelsiem stack down/up --only kafka``):
the outage is kept short and Kafka is always brought back, even when the test fails.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, TopicPartition

from connectors.kafka import ensure_topics, publish_events
from detectors.query_rate import QueryRateDetector
from detectors.registry import build
from detectors.testing import inference
from modelsiem.settings import Settings
from stream.alerts import document_id
from stream.engine import Engine
from stream.replay import replay
from tests.integration.conftest import read_topic, wait_until, worker_done

THRESHOLD = QueryRateDetector.Params().min_rate  # a new key alerts at this many queries in one bucket
BEFORE = THRESHOLD - 50  # published before the restart: below the threshold, so no alert yet
OUTAGE_SECONDS = 10  # Kafka stays down this long, plus its restart (others share the stack: keep it short)
PRINCIPAL = "kafka-restart-key"


def _events(start: int, count: int) -> list[dict]:
    # All within one 60 s bucket of event time, far from any bucket edge.
    return [
        inference(f"e{i}", 3600 + 10 + i * 0.05, principal=PRINCIPAL).to_dict()
        for i in range(start, start + count)
    ]


def _stack(command: str) -> None:
    """``modelsiem stack <command> --only kafka``, as an operator would run it."""
    done = subprocess.run([sys.executable, "-m", "modelsiem", "stack", command, "--only", "kafka"],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, f"stack {command} --only kafka failed:\n{done.stdout}{done.stderr}"


def _quiet(predicate: Callable[[], Any]) -> Callable[[], Any]:
    """``predicate``, with a Kafka error (a partition without its leader yet, just after the restart) as "not yet"."""

    def attempt() -> Any:
        try:
            return predicate()
        except KafkaException:
            return None

    return attempt


def _serving(s: Settings) -> bool:
    """Whether the broker answers for every partition of the test's topics again, not just for metadata."""
    consumer = Consumer({**s.kafka.client_config(), "group.id": f"probe-{s.app_id}", "enable.auto.commit": False})
    try:
        t = s.topics
        for topic in (t.inference, t.feedback, t.alerts, t.deadletter):
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
                consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        return True
    finally:
        consumer.close()


def _offline_alerts(events: list[dict]) -> list[dict]:
    """What the detectors raise over the whole stream with no Kafka in the way: the reference."""
    alerts: list[dict] = []
    replay(((n, orjson.dumps(e)) for n, e in enumerate(events)), Engine(build()), alerts.append)
    return alerts


def test_worker_survives_a_kafka_restart_mid_run(isolated, spawn):
    s = isolated.settings
    ensure_topics(s)
    expected = _offline_alerts(_events(0, THRESHOLD))
    assert len(expected) == 1 and expected[0]["rule"]["id"] == "query_rate"  # the test's own premise

    worker = spawn("worker")
    publish_events(s, _events(0, BEFORE))
    wait_until(lambda: worker_done(s), 180, "the worker to commit the first events", worker.assert_running)
    assert read_topic(s, s.topics.alerts) == [], "alerted below the threshold"

    stopped = time.monotonic()
    try:
        _stack("down")
        # The worker must keep running while the broker is gone, not exit for a supervisor to restart.
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline:
            worker.assert_running()
            time.sleep(1)
    finally:
        _stack("up")  # waits until Kafka answers metadata requests; a no-op if it is already running
    outage = time.monotonic() - stopped
    # Partitions come back some seconds after the broker answers: until then reads fail with NOT_LEADER.
    wait_until(_quiet(lambda: _serving(s)), 120, "Kafka to serve the test's partitions again", worker.assert_running)
    worker.assert_running()

    publish_events(s, _events(BEFORE, THRESHOLD - BEFORE))
    # The alert must come from the last event: a worker that lost the first events' state would not
    # alert at all, one that counted some of them twice (re-consumed after the restart) on an earlier one.
    alerts = wait_until(_quiet(lambda: read_topic(s, s.topics.alerts)), 240,
                        f"the alert (Kafka was stopped for {outage:.0f} s)", worker.assert_running)
    first = orjson.loads(alerts[0].value())
    last_event = _events(THRESHOLD - 1, 1)[0]
    assert first["@timestamp"][:23] == last_event["timestamp"][:23]
    assert first["modelsiem"]["evidence"]["queries_in_bucket"] == THRESHOLD
    assert first["user"]["name"] == PRINCIPAL

    # Once everything is consumed, the alert is there exactly once (no revision raised twice,
    # no re-sent duplicate) and is the one an uninterrupted run raises; nothing was dead-lettered.
    wait_until(_quiet(lambda: worker_done(s)), 180, "the worker to consume every event", worker.assert_running)
    produced = [orjson.loads(m.value()) for m in read_topic(s, s.topics.alerts)]
    assert [document_id(a) for a in produced] == [document_id(a) for a in expected]
    assert read_topic(s, s.topics.deadletter) == []
    worker.assert_running()

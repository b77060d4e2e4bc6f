"""Events published in Kafka transactions: the commit markers leave offsets without events, which are not lost ones."""

from __future__ import annotations

import uuid

import orjson
from confluent_kafka import Consumer, Producer, TopicPartition

from connectors.kafka import ensure_topics
from detectors.query_rate import QueryRateDetector
from detectors.testing import inference
from tests.integration.conftest import read_topic, wait_until

THRESHOLD = QueryRateDetector.Params().min_rate  # a new key alerts at this many queries in one bucket
TRANSACTIONS = 10


def test_events_from_a_transactional_producer_are_processed_without_stalling(isolated, spawn):
    s = isolated.settings
    ensure_topics(s)
    worker = spawn("worker")
    producer = Producer({**s.kafka.client_config(), "transactional.id": f"platform-{uuid.uuid4().hex}"})
    producer.init_transactions(30)
    events = [inference(f"e{i}", 3600 + 10 + i * 0.05, principal="tx-key").to_dict()
              for i in range(THRESHOLD)]
    per = THRESHOLD // TRANSACTIONS
    for start in range(0, THRESHOLD, per):
        producer.begin_transaction()
        for event in events[start:start + per]:
            producer.produce(s.topics.inference, key=b"tx-key", value=orjson.dumps(event))
        producer.commit_transaction(30)  # a commit marker takes the next offset of the partition

    # Every event counted once, without waiting on the markers: the alert comes from the last event,
    # and the worker commits past it. (Not past the last marker: no event follows it to be acknowledged.)
    alerts = wait_until(lambda: read_topic(s, s.topics.alerts), 60, "the alert", worker.assert_running)
    first = orjson.loads(alerts[0].value())
    assert first["@timestamp"][:23] == events[-1]["timestamp"][:23]
    assert first["modelsiem"]["evidence"]["queries_in_bucket"] == THRESHOLD
    stored = read_topic(s, s.topics.inference)
    assert len(stored) == THRESHOLD
    last = max(m.offset() for m in stored)
    assert last >= THRESHOLD + TRANSACTIONS - 2  # the markers did take offsets
    part = TopicPartition(s.topics.inference, stored[0].partition())
    wait_until(lambda: _committed(s, part) > last, 60, "the worker to commit past the last event", worker.assert_running)
    assert len(read_topic(s, s.topics.alerts)) == 1
    # Told apart from messages faust skipped: no warning of lost messages for gaps that held none.
    log = worker.log_path.read_text(errors="replace")
    assert "skipped by the consumer" not in log
    assert "hold no message (transaction markers or compaction)" in log


def _committed(settings, part: TopicPartition) -> int:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": settings.app_id, "enable.auto.commit": False})
    try:
        return consumer.committed([part], timeout=10)[0].offset
    finally:
        consumer.close()

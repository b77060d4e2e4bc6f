"""The whole path on the real stack: Kafka events -> faust detectors -> ECS alerts in Elasticsearch."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson
from confluent_kafka import Producer

from connectors.kafka import DLQ_OFFSET, DLQ_PARTITION, DLQ_REASON, DLQ_TOPIC, ensure_topics
from modelsiem.scenarios import simulate
from stream.alerts import document_id
from tests.ecs_check import assert_ecs_alert
from tests.integration.conftest import es_alerts, read_topic, wait_until, worker_done

GOOD = {"event_id": "ok", "timestamp": "2026-01-01T00:00:00Z", "model": {"name": "m"}, "principal": {"id": "p"}}
MALFORMED: list[tuple[bytes, str]] = [
    (b"this is not json", "not valid JSON"),
    (orjson.dumps({k: v for k, v in GOOD.items() if k != "principal"}), "principal: required"),
    (orjson.dumps({**GOOD, "output": {"confidence": "very"}}), "output.confidence"),
    (orjson.dumps({**GOOD, "input": {"embedding": [0.5] * 5000}}), "input.embedding"),
    (b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}', "exceeds the 1048576-byte limit"),
]


def test_attacks_become_ecs_alerts_and_bad_messages_are_dead_lettered(isolated, spawn, ecs_fields, ecs_allowed):
    s = isolated.settings
    t = s.topics
    # The platform allows large messages on this topic, so an oversized event can arrive.
    ensure_topics(s, {t.inference: {"max.message.bytes": str(4 * 1024 * 1024)}})
    worker, sink = spawn("worker"), spawn("sink")

    start = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(minutes=20)
    trace = simulate(["query_flood", "feedback_poisoning", "distributed_extraction"], minutes=20, principals=10,
                     seed=11, start=start)
    events = trace.sorted_events()
    half = len(events) // 2
    producer = Producer({**s.kafka.client_config(), "message.max.bytes": 4 * 1024 * 1024})

    def publish(part: list[dict]) -> None:
        # Without "kind", which the contract makes optional on the event topics: the topic tells it,
        # to the detectors run in place and to those fed through the route topics alike.
        for event in part:
            producer.produce(t.inference if event["kind"] == "inference" else t.feedback,
                             key=event["principal"]["id"].encode(),
                             value=orjson.dumps({k: v for k, v in event.items() if k != "kind"}))

    publish(events[:half])
    # Bad messages in the middle of the stream: they must not stop the good ones after them.
    for raw, _ in MALFORMED:
        producer.produce(t.inference, key=b"bad-key", value=raw)
    publish(events[half:])
    assert producer.flush(30) == 0

    def every_attack_alerted():
        docs = es_alerts(s)
        # The campaign's alert comes last: its accounts are named as its groups' signals arrive.
        named = max((len(d["related"]["user"]) for d in docs if d["rule"]["id"] == "extraction_campaign"), default=0)
        return docs if ({d["rule"]["id"] for d in docs} >= {"query_rate", "feedback_surge", "extraction_campaign"}
                        and named >= 0.9 * len(truth["distributed_extraction"])) else None

    def alive():
        worker.assert_running()
        sink.assert_running()

    truth = {entry.scenario: set(entry.principals) for entry in trace.truth}
    docs = wait_until(every_attack_alerted, 240, "alerts of every attack in Elasticsearch", alive)

    for doc in docs:
        doc_id = doc.pop("_id")
        doc.pop("_version")
        assert doc_id == document_id(doc)
        assert doc["event"]["ingested"] >= doc["event"]["created"]
        assert_ecs_alert(doc, ecs_fields, ecs_allowed)

    flood = [d for d in docs if d["rule"]["id"] == "query_rate"]
    assert {d["user"]["name"] for d in flood} == truth["query_flood"]
    assert flood[0]["threat"]["technique"]["subtechnique"]["id"] == ["AML.T0024.002"]
    poisoning = [d for d in docs if d["rule"]["id"] == "feedback_surge"]
    assert poisoning[0]["related"]["hash"] == ["fp-campaign-pharma-0042"]
    assert set(poisoning[0]["related"]["user"]) <= truth["feedback_poisoning"]
    assert poisoning[0]["threat"]["technique"]["id"] == ["AML.T0020"]
    # The distributed extraction, flagged by group on the route topics and merged by model from their
    # signals: one alert naming nearly all its accounts and only them. Its prefixes may be flagged before
    # the cohort that links them (signals cross partitions in no set order), each an alert until merged:
    # at most 5 alerts for the campaign, and the one that merged them lists the others.
    campaign = [d for d in docs if d["rule"]["id"] == "extraction_campaign"]
    ids = {d["event"]["id"] for d in campaign}
    assert len(ids) <= 5
    assert {u for d in campaign for u in d["related"]["user"]} <= truth["distributed_extraction"]
    merged = max(campaign, key=lambda d: len(d["related"]["user"]))
    others = {d["modelsiem"]["alert"]["subject"] for d in campaign} - {merged["modelsiem"]["alert"]["subject"]}
    assert others <= set(merged["modelsiem"]["evidence"].get("merged_campaigns", []))

    dead = wait_until(lambda: (m := read_topic(s, t.deadletter)) and len(m) >= len(MALFORMED) and m,
                      60, "the dead-lettered messages", alive)
    assert len(dead) == len(MALFORMED)
    by_value = {m.value(): dict(m.headers()) for m in dead}
    for raw, reason in MALFORMED:
        headers = by_value[raw]  # original bytes, unchanged
        assert reason in headers[DLQ_REASON].decode()
        assert headers[DLQ_TOPIC].decode() == t.inference
        assert int(headers[DLQ_PARTITION]) >= 0 and int(headers[DLQ_OFFSET]) >= 0
    assert all(m.key() == b"bad-key" for m in dead)

    # Once the worker is done, each alert revision it produced is in Elasticsearch exactly once.
    wait_until(lambda: worker_done(s), 120, "the worker to consume every event", alive)
    produced = {document_id(orjson.loads(m.value())) for m in read_topic(s, t.alerts)}
    wait_until(lambda: {d["_id"] for d in es_alerts(s)} >= produced, 60, "every produced revision indexed", alive)
    indexed = [d["_id"] for d in es_alerts(s)]
    assert len(indexed) == len(set(indexed)) and set(indexed) == produced

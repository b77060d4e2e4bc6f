"""The Elasticsearch sink: idempotent delivery, rejected documents dead-lettered with the reason."""

from __future__ import annotations

import copy

import orjson

from connectors.elasticsearch_sink import Sink
from connectors.kafka import DLQ_REASON, DLQ_STAGE, ensure_topics, producer
from stream.alerts import document_id
from tests.integration.conftest import es_alerts, read_topic


def _drain(sink: Sink, expected: int) -> dict[str, int]:
    seen = {"delivered": 0, "duplicates": 0, "rejected": 0}
    for _ in range(60):
        result = sink.run_once()
        seen["delivered"] += result.delivered
        seen["duplicates"] += result.duplicates
        seen["rejected"] += len(result.rejected)
        if sum(seen.values()) >= expected:
            break
    return seen


def test_sink_delivers_once_and_dead_letters_rejections(isolated, example_alerts):
    s = isolated.settings
    ensure_topics(s)
    good = example_alerts
    bad_ip = copy.deepcopy(good[0])
    bad_ip["modelsiem"]["alert"]["revision"] = 999
    bad_ip["related"]["ip"] = ["not-an-ip"]
    prod = producer(s)
    for doc in good[:2] + [bad_ip] + good[2:]:
        prod.produce(s.topics.alerts, key=doc["event"]["id"].encode(), value=orjson.dumps(doc))
    prod.produce(s.topics.alerts, key=b"x", value=b"{broken")
    assert prod.flush(30) == 0
    total = len(good) + 2

    first = Sink(s)
    first.setup()
    assert _drain(first, total) == {"delivered": len(good), "duplicates": 0, "rejected": 2}
    first.consumer.close()

    indexed = es_alerts(s)
    assert sorted(d["_id"] for d in indexed) == sorted(document_id(d) for d in good)
    # The latest-state index holds each alert once, at its highest revision.
    latest = {d["_id"]: d for d in es_alerts(s, s.elasticsearch.latest_index)}
    highest: dict[str, int] = {}
    for d in good:
        highest[d["event"]["id"]] = max(highest.get(d["event"]["id"], 0), d["modelsiem"]["alert"]["revision"])
    assert {k: v["modelsiem"]["alert"]["revision"] for k, v in latest.items()} == highest
    assert all(v["_version"] == v["modelsiem"]["alert"]["revision"] for v in latest.values())
    dead = read_topic(s, s.topics.deadletter)
    reasons = sorted(dict(m.headers())[DLQ_REASON].decode() for m in dead)
    assert any("mapper_parsing_exception" in r or "document_parsing_exception" in r for r in reasons), reasons
    assert any("not an alert document: invalid JSON" in r for r in reasons), reasons
    assert {dict(m.headers())[DLQ_STAGE] for m in dead} == {b"elasticsearch"}
    assert orjson.dumps(bad_ip) in {m.value() for m in dead}

    # A second consumer group re-reads everything: Elasticsearch answers 409 and nothing is duplicated.
    s2 = s.model_copy(update={"sink": s.sink.model_copy(update={"group": s.sink.group + "-again"})})
    again = Sink(s2)
    again.setup()
    assert _drain(again, total) == {"delivered": 0, "duplicates": len(good), "rejected": 2}
    again.consumer.close()
    assert len(es_alerts(s)) == len(good)

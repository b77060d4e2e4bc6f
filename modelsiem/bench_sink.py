"""Benchmark of the Elasticsearch sink alone, against a plain streaming_bulk loop on the same data.

Both read the same alert documents from the same Kafka topic (each with its own
consumer group) and write them into their own data stream, in one run, so that
the figures are comparable. The plain loop has none of the sink's guarantees
(it commits nothing, validates nothing, dead-letters nothing, keeps no latest
state); the sink runs with all of them on.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from typing import Any

import orjson
from confluent_kafka import Consumer
from elasticsearch import helpers

from connectors.elasticsearch_sink import Sink, client, install
from connectors.kafka import ensure_topics, producer
from detectors.registry import build
from detectors.testing import inference
from modelsiem.settings import Settings
from stream.engine import Engine, MemoryStore


def _sample_alert() -> dict[str, Any]:
    engine, store = Engine(build(["query_rate"])), MemoryStore()
    for i in range(400):
        step = engine.process(inference(f"e{i}", i * 0.01), store)
        step.save(store)
        if step.alerts:
            return step.alerts[0]
    raise RuntimeError("the sample flood raised no alert")


def _preload(settings: Settings, n: int) -> None:
    template = _sample_alert()
    prod = producer(settings)
    for i in range(n):
        doc = copy.deepcopy(template)
        doc["event"]["id"] = str(uuid.UUID(int=i + 1))
        while True:
            try:
                prod.produce(settings.topics.alerts, key=doc["event"]["id"].encode(), value=orjson.dumps(doc))
                break
            except BufferError:
                prod.poll(0.5)
        prod.poll(0)
    if prod.flush(120):
        raise RuntimeError("could not preload the alerts topic")


def _plain_loop(settings: Settings, target: str, n: int) -> float:
    es = client(settings.elasticsearch)
    install(es, target)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"bench-plain-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.topics.alerts])

    def actions():  # type: ignore[no-untyped-def]
        seen = 0
        while seen < n:
            for msg in consumer.consume(500, timeout=1.0):
                if msg.error():
                    continue
                seen += 1
                yield {"_op_type": "create", "_index": target, "_source": orjson.loads(msg.value())}

    start = time.perf_counter()
    for ok, _ in helpers.streaming_bulk(es, actions(), chunk_size=500, raise_on_error=False):
        assert ok
    elapsed = time.perf_counter() - start
    consumer.close()
    return elapsed


def _sink(settings: Settings, n: int) -> float:
    sink = Sink(settings)
    sink.setup()
    runner = threading.Thread(target=sink.run)
    start = time.perf_counter()
    runner.start()
    while sum(sink.totals.values()) < n and runner.is_alive():
        time.sleep(0.02)
    elapsed = time.perf_counter() - start
    sink.stop.set()
    runner.join()
    if sink.totals["delivered"] != n:
        raise RuntimeError(f"the sink delivered {sink.totals}, expected {n} new documents")
    return elapsed


def bench_sink(settings: Settings, docs: int = 50_000) -> dict[str, Any]:
    """Preload ``docs`` alerts into a fresh topic, then time both writers; returns docs/s for each."""
    tag = uuid.uuid4().hex[:8]
    topics = settings.topics.model_copy(update={"alerts": f"bench-{tag}.alerts",
                                                "deadletter": f"bench-{tag}.deadletter"})
    latest = f"modelsiem-bench-latest-{tag}" if settings.elasticsearch.latest_index else ""
    es_settings = settings.elasticsearch.model_copy(update={
        "data_stream": f"logs-modelsiem.bench-sink{tag}", "latest_index": latest})
    bench = settings.model_copy(update={"topics": topics, "elasticsearch": es_settings,
                                        "sink": settings.sink.model_copy(update={"group": f"bench-sink-{tag}"})})
    ensure_topics(bench)
    _preload(bench, docs)
    plain = _plain_loop(bench, f"logs-modelsiem.bench-plain{tag}", docs)
    ours = _sink(bench, docs)
    return {
        "docs": docs,
        "plain_streaming_bulk_docs_per_s": round(docs / plain, 1),
        "sink_docs_per_s": round(docs / ours, 1),
        "sink_to_plain": round(plain / ours, 3),
        "batch_max_docs": bench.sink.batch_max_docs,
        "latest_index": bool(es_settings.latest_index),
    }

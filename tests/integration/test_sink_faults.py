"""The sink under Elasticsearch faults: every alert ends up in the SIEM exactly once."""

from __future__ import annotations

import copy
import threading
import time
import uuid

import orjson
import pytest

from connectors.elasticsearch_sink import Sink, client
from connectors.kafka import ensure_topics, producer
from modelsiem import stack
from stream.alerts import document_id
from tests.integration.conftest import es_alerts, wait_until


@pytest.fixture
def alert_docs(example_alerts):
    """Distinct, valid alert documents: an example alert under fresh alert ids."""

    def make(n: int) -> list[dict]:
        docs = []
        for i in range(n):
            doc = copy.deepcopy(example_alerts[i % len(example_alerts)])
            doc["event"]["id"] = str(uuid.uuid4())
            docs.append(doc)
        return docs

    return make


def _publish(settings, docs) -> None:
    prod = producer(settings)
    for doc in docs:
        prod.produce(settings.topics.alerts, key=doc["event"]["id"].encode(), value=orjson.dumps(doc))
    assert prod.flush(30) == 0


def _indexed_ids(settings) -> list[str]:
    return [d["_id"] for d in es_alerts(settings)]


def test_elasticsearch_down_for_30_seconds_loses_and_duplicates_nothing(isolated, spawn, alert_docs):
    s = isolated.settings
    ensure_topics(s)
    docs = alert_docs(300)
    sink = spawn("sink")
    _publish(s, docs[:100])
    wait_until(lambda: len(_indexed_ids(s)) == 100, 120, "the first 100 alerts", sink.assert_running)

    stack.down(s, only="elasticsearch", echo=lambda _: None)
    try:
        _publish(s, docs[100:])
        time.sleep(30)
        sink.assert_running()  # backing off, not dead
    finally:
        stack.up(s, only="elasticsearch", echo=lambda _: None)

    wait_until(lambda: len(_indexed_ids(s)) >= 300, 180, "the alerts held back while Elasticsearch was down",
               sink.assert_running)
    ids = _indexed_ids(s)
    assert sorted(ids) == sorted(document_id(d) for d in docs)


def test_sink_killed_mid_batch_and_restarted_loses_and_duplicates_nothing(isolated, spawn, alert_docs):
    s = isolated.settings
    ensure_topics(s)
    docs = alert_docs(5000)
    _publish(s, docs)
    isolated.env["MODELSIEM_SINK__BATCH_MAX_DOCS"] = "50"  # many small batches: a kill lands mid-way
    sink = spawn("sink")
    wait_until(lambda: 0 < len(_indexed_ids(s)) < len(docs), 120, "the sink to be part-way through",
               sink.assert_running)
    sink.kill()
    partial = len(_indexed_ids(s))

    sink = spawn("sink")
    wait_until(lambda: len(_indexed_ids(s)) >= len(docs), 180, "every alert after the restart", sink.assert_running)
    ids = _indexed_ids(s)
    assert partial < len(docs)
    assert len(ids) == len(set(ids)) == len(docs)
    assert set(ids) == {document_id(d) for d in docs}


def test_sink_backs_off_on_429_and_finishes(isolated, alert_docs):
    s = isolated.settings
    ensure_topics(s)
    es = client(s.elasticsearch)
    docs = alert_docs(60)
    sink = Sink(s)
    sink.setup()
    _publish(s, docs[:10])
    while len(_indexed_ids(s)) < 10:
        sink.run_once()

    # A flood-stage block: Elasticsearch answers each write with 429, as when its disk is full.
    es.indices.put_settings(index=s.elasticsearch.data_stream, settings={"index.blocks.read_only_allow_delete": True})
    _publish(s, docs[10:])
    results = []
    worker = threading.Thread(target=lambda: results.append(sink.run_once()))
    try:
        worker.start()
        time.sleep(8)
        assert worker.is_alive(), "the sink gave up instead of backing off"
        assert len(_indexed_ids(s)) == 10
    finally:
        es.indices.put_settings(index=s.elasticsearch.data_stream,
                                settings={"index.blocks.read_only_allow_delete": None})
    worker.join(120)
    assert not worker.is_alive()
    while len(_indexed_ids(s)) < len(docs):
        results.append(sink.run_once())
    sink.consumer.close()
    assert sorted(_indexed_ids(s)) == sorted(document_id(d) for d in docs)
    assert sum(r.delivered for r in results) == 50 and not any(r.rejected for r in results)

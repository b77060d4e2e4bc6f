"""The Elasticsearch sink: alerts from Kafka into the SIEM, each exactly once.

Delivery contract:

- read at least once: offsets are committed only after Elasticsearch
  acknowledged every document of the batch (or the document went to the
  dead-letter topic);
- write idempotently: each alert revision has a deterministic ``_id`` and is
  written with ``create``, so a re-delivered one answers 409, which counts as
  delivered;
- back off, never crash: 429, 5xx and connection failures are retried with
  capped, jittered exponential backoff while the consumer's partitions are
  paused (no unbounded buffer, no lost group membership);
- documents Elasticsearch rejects for their content go to the dead-letter topic
  with Elasticsearch's reason, and the documents around them are indexed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from elasticsearch import ApiError, BadRequestError, Elasticsearch, TransportError
from tenacity import Retrying, retry_if_exception_type, wait_random_exponential

from connectors.es_template import index_template, template_name
from connectors.kafka import deadletter_headers, producer
from modelsiem.settings import ElasticsearchSettings, Settings
from stream.alerts import document_id

log = logging.getLogger("modelsiem.sink")


class _Retry(Exception):
    """Some documents of the batch must be sent again."""


def client(es: ElasticsearchSettings) -> Elasticsearch:
    """A client with modelsiem's auth settings; it retries nothing itself, the sink does."""
    kwargs: dict[str, Any] = {"request_timeout": 30, "max_retries": 0, "retry_on_timeout": False}
    if es.api_key:
        kwargs["api_key"] = es.api_key.get_secret_value()
    elif es.username:
        kwargs["basic_auth"] = (es.username, es.password.get_secret_value() if es.password else "")
    if es.ca_file:
        kwargs["ca_certs"] = str(es.ca_file)
    return Elasticsearch(es.url, **kwargs)


def install(es: Elasticsearch, target: str) -> str:
    """Install the template and make sure ``target`` can be written; return what it is.

    Prefers a data stream with ECS's own field types, and falls back step by
    step on clusters that lack them (minimal distributions): basic field types,
    then a plain index of the same name. The data stream is created up front
    where the cluster offers the API; where it does not (405), the first write
    creates it from the template.
    """
    for data_stream, basic in ((True, False), (True, True), (False, True)):
        try:
            es.indices.put_index_template(
                name=template_name(target), **index_template(target, data_stream, basic_types=basic)
            )
            break
        except BadRequestError as exc:
            log.warning("template (data_stream=%s, basic types=%s) refused: %s", data_stream, basic, exc.message)
    else:
        raise RuntimeError(f"Elasticsearch refused every variant of the {target} template; see the log")
    exists = es.indices.exists(index=target)
    if not data_stream:
        if not exists:
            es.indices.create(index=target)
        return "index"
    if not exists:
        try:
            es.indices.create_data_stream(name=target)
        except ApiError as exc:
            if exc.status_code not in (400, 405):  # 400: created meanwhile; 405: created on first write
                raise
    return "data stream" + (" (basic field types)" if basic else "")


@dataclass
class BatchResult:
    delivered: int = 0
    duplicates: int = 0
    rejected: list[tuple[Message, str]] = field(default_factory=list)


class AlertWriter:
    """Writes one batch of alert messages, retrying until each is delivered or rejected."""

    def __init__(self, es: Elasticsearch, target: str, max_wait: float, sleep: Callable[[float], None]) -> None:
        self.es, self.target, self.max_wait, self.sleep = es, target, max_wait, sleep

    def write(self, messages: list[Message]) -> BatchResult:
        result = BatchResult()
        pending: dict[str, tuple[Message, dict[str, Any]]] = {}
        ingested = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for msg in messages:
            try:
                doc = orjson.loads(msg.value() or b"")
                doc["event"]["ingested"] = ingested
                pending[document_id(doc)] = (msg, doc)
            except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
                result.rejected.append((msg, f"not an alert document: {type(exc).__name__}"))

        retrying = Retrying(
            wait=wait_random_exponential(multiplier=0.5, max=self.max_wait),
            retry=retry_if_exception_type((_Retry, TransportError)),
            sleep=self.sleep,
            before_sleep=lambda state: log.warning(
                "elasticsearch not accepting writes (%s); %d documents wait, attempt %d",
                state.outcome.exception() if state.outcome else "?", len(pending), state.attempt_number,
            ),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                self._bulk(pending, result)
        return result

    def _bulk(self, pending: dict[str, tuple[Message, dict[str, Any]]], result: BatchResult) -> None:
        if not pending:
            return
        operations: list[Any] = []
        for doc_id, (_, doc) in pending.items():
            operations.append({"create": {"_index": self.target, "_id": doc_id}})
            operations.append(doc)
        try:
            response = self.es.bulk(operations=operations)
        except ApiError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise _Retry(f"bulk request answered {exc.status_code}") from exc
            raise
        for item in response["items"]:
            outcome = item["create"]
            status, doc_id = outcome["status"], outcome["_id"]
            if status in (200, 201):
                result.delivered += 1
            elif status == 409:
                result.duplicates += 1
            elif status == 429 or status >= 500:
                continue  # stays pending
            else:
                error = outcome.get("error", {})
                result.rejected.append((pending[doc_id][0], f"{error.get('type')}: {error.get('reason')}"[:1000]))
            del pending[doc_id]
        if pending:
            raise _Retry(f"{len(pending)} documents answered 429 or 5xx")


class Sink:
    """The consumer loop: batches bounded by count, bytes and time."""

    def __init__(self, settings: Settings, stop: threading.Event | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.es = client(settings.elasticsearch)
        self.consumer = Consumer({
            **settings.kafka.client_config(),
            "group.id": settings.sink.group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "max.poll.interval.ms": 600_000,
        })
        self.deadletter: Producer = producer(settings)
        self.mode = ""
        self.totals = {"delivered": 0, "duplicates": 0, "rejected": 0}

    def setup(self) -> str:
        self.mode = install(self.es, self.settings.elasticsearch.data_stream)
        self.consumer.subscribe([self.settings.topics.alerts])
        return self.mode

    def _paused_sleep(self, seconds: float) -> None:
        """Backpressure: stop fetching while Elasticsearch recovers, but stay in the group."""
        assignment = self.consumer.assignment()
        self.consumer.pause(assignment)
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not self.stop.is_set():
                self.consumer.poll(min(0.5, max(deadline - time.monotonic(), 0)))
        finally:
            self.consumer.resume(assignment)

    def _batch(self) -> list[Message]:
        s = self.settings.sink
        batch: list[Message] = []
        size = 0
        deadline = time.monotonic() + s.batch_max_seconds
        while len(batch) < s.batch_max_docs and size < s.batch_max_bytes and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for msg in self.consumer.consume(num_messages=s.batch_max_docs - len(batch), timeout=left):
                if msg.error():
                    if msg.error().code() != KafkaError._PARTITION_EOF:
                        log.error("kafka: %s", msg.error())
                    continue
                batch.append(msg)
                size += len(msg.value() or b"")
        return batch

    def run_once(self) -> BatchResult:
        """Deliver one batch and commit it; returns what happened to it."""
        batch = self._batch()
        if not batch:
            return BatchResult()
        writer = AlertWriter(self.es, self.settings.elasticsearch.data_stream,
                             self.settings.sink.retry_max_seconds, self._paused_sleep)
        result = writer.write(batch)
        for msg, reason in result.rejected:
            log.error("alert rejected, dead-lettered: %s", reason)
            self.deadletter.produce(
                self.settings.topics.deadletter, key=msg.key(), value=msg.value(),
                headers=deadletter_headers(reason, msg.topic(), msg.partition(), msg.offset(), "elasticsearch"),
            )
        if result.rejected and self.deadletter.flush(30):
            raise RuntimeError("dead-letter topic unreachable; offsets not committed")
        offsets: dict[tuple[str, int], int] = {}
        for msg in batch:
            offsets[(msg.topic(), msg.partition())] = max(offsets.get((msg.topic(), msg.partition()), -1), msg.offset())
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o + 1) for (t, p), o in offsets.items()], asynchronous=False
            )
        except KafkaException as exc:  # partitions moved away: their new owner re-delivers, 409s absorb it
            log.warning("offset commit failed: %s", exc)
        for name in ("delivered", "duplicates", "rejected"):
            self.totals[name] += len(result.rejected) if name == "rejected" else getattr(result, name)
        return result

    def run(self) -> None:
        log.info("sink writing to %s %s", self.mode or self.setup(), self.settings.elasticsearch.data_stream)
        try:
            while not self.stop.is_set():
                self.run_once()
        finally:
            self.consumer.close()
            self.deadletter.flush(30)

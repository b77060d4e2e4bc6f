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
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from elasticsearch import ApiError, BadRequestError, Elasticsearch, TransportError
from pydantic import ValidationError
from tenacity import Retrying, retry_if_exception_type, wait_random_exponential

from connectors.es_template import index_template, template_name
from connectors.kafka import deadletter_headers, producer
from modelsiem.settings import ElasticsearchSettings, Settings
from stream.alert_schema import AlertDocument
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


def install_latest(es: Elasticsearch, index: str, basic: bool) -> None:
    """The latest-state index: one document per alert, its highest revision."""
    es.indices.put_index_template(name=template_name(index), **index_template(index, False, basic_types=basic))
    if not es.indices.exists(index=index):
        try:
            es.indices.create(index=index)
        except BadRequestError as exc:
            if exc.error != "resource_already_exists_exception":
                raise


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


@dataclass(slots=True)
class _Op:
    """One bulk action: an alert revision into the data stream, or into the latest-state index."""

    msg: Message
    action: dict[str, Any]
    doc: dict[str, Any]
    primary: bool  # the data-stream write, which decides delivered or duplicate


def _reason(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors[:5])


class AlertWriter:
    """Writes batches of alert messages, retrying until each is delivered or rejected.

    ``sleep`` waits between attempts and returns True to give up (the sink is stopping):
    the batch is then not committed, and is delivered again after the restart.
    """

    def __init__(self, es: Elasticsearch, target: str, latest: str | None, max_wait: float,
                 sleep: Callable[[float], bool | None]) -> None:
        self.es, self.target, self.latest, self.max_wait = es, target, latest, max_wait
        self.sleep = sleep
        self._give_up = False

    def prepare(self, messages: list[Message]) -> tuple[list[_Op], BatchResult]:
        """Validate and turn messages into bulk actions; what is not an alert is rejected here."""
        result = BatchResult()
        ops: list[_Op] = []
        ingested = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        for msg in messages:
            try:
                doc = orjson.loads(msg.value() or b"")
                # Whoever can write to the alerts topic must not be able to write anything else to the SIEM.
                AlertDocument.model_validate(doc)
            except orjson.JSONDecodeError as exc:
                result.rejected.append((msg, f"not an alert document: invalid JSON ({exc})"[:1000]))
                continue
            except ValidationError as exc:
                result.rejected.append((msg, f"not an alert document: {_reason(exc)}"[:1000]))
                continue
            doc["event"]["ingested"] = ingested
            ops.append(_Op(msg, {"create": {"_index": self.target, "_id": document_id(doc)}}, doc, True))
            if self.latest:
                # External versioning keeps the highest revision, whatever order revisions arrive in.
                revision = doc["modelsiem"]["alert"]["revision"]
                action = {"_index": self.latest, "_id": doc["event"]["id"], "version": revision,
                          "version_type": "external"}
                ops.append(_Op(msg, {"index": action}, doc, False))
        return ops, result

    def write(self, messages: list[Message]) -> BatchResult:
        ops, result = self.prepare(messages)
        return self.send(ops, result)

    def _sleep(self, seconds: float) -> None:
        self._give_up = bool(self.sleep(seconds))

    def send(self, pending: list[_Op], result: BatchResult) -> BatchResult:
        """Send the actions until each is acknowledged or rejected."""
        self._give_up = False
        retrying = Retrying(
            wait=wait_random_exponential(multiplier=0.5, max=self.max_wait),
            retry=retry_if_exception_type((_Retry, TransportError)),
            stop=lambda _: self._give_up,
            sleep=self._sleep,
            before_sleep=lambda state: log.warning(
                "elasticsearch not accepting writes (%s); %d actions wait, attempt %d",
                state.outcome.exception() if state.outcome else "?", len(pending), state.attempt_number,
            ),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                pending = self._bulk(pending, result)
                if pending:
                    raise _Retry(f"{len(pending)} actions answered 429 or 5xx")
        return result

    def _bulk(self, ops: list[_Op], result: BatchResult) -> list[_Op]:
        """Send ``ops``; return those to send again."""
        if not ops:
            return ops
        # Serialised here with orjson: the client's own serialiser (the standard library's) costs as
        # much as the indexing on a small cluster.
        body = b"".join(orjson.dumps(op.action) + b"\n" + orjson.dumps(op.doc) + b"\n" for op in ops)
        try:
            response = self.es.bulk(operations=body)
        except ApiError as exc:
            if exc.status_code == 429 or exc.status_code >= 500:
                raise _Retry(f"bulk request answered {exc.status_code}") from exc
            raise
        retry: list[_Op] = []
        rejected: set[int] = {id(m) for m, _ in result.rejected}
        for op, item in zip(ops, response["items"], strict=True):
            outcome = next(iter(item.values()))
            status = outcome["status"]
            if status == 429 or status >= 500:
                retry.append(op)
            elif status >= 400 and status != 409:
                if id(op.msg) not in rejected:  # one dead-letter record per message
                    rejected.add(id(op.msg))
                    error = outcome.get("error", {})
                    result.rejected.append((op.msg, f"{error.get('type')}: {error.get('reason')}"[:1000]))
            elif op.primary:
                # 409 on create: this revision is already indexed. On the latest index: a newer one is.
                if status == 409:
                    result.duplicates += 1
                else:
                    result.delivered += 1
        return retry


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
        if self.settings.elasticsearch.latest_index:
            install_latest(self.es, self.settings.elasticsearch.latest_index, basic="basic" in self.mode)
        self.consumer.subscribe([self.settings.topics.alerts])
        return self.mode

    def _writer(self, sleep: Callable[[float], bool | None]) -> AlertWriter:
        es = self.settings.elasticsearch
        return AlertWriter(self.es, es.data_stream, es.latest_index, self.settings.sink.retry_max_seconds, sleep)

    def _hold(self, until: Callable[[], bool]) -> None:
        """Backpressure: stop fetching until ``until()``, but keep polling to stay in the group."""
        assignment = self.consumer.assignment()
        self.consumer.pause(assignment)
        try:
            while not until():
                msg = self.consumer.poll(0.2)
                if msg is not None and not msg.error():  # fetched before the pause: fetch it again later
                    self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
        finally:
            self.consumer.resume(assignment)

    def _paused_sleep(self, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        self._hold(lambda: time.monotonic() >= deadline or self.stop.is_set())
        return self.stop.is_set()

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

    def _complete(self, batch: list[Message], result: BatchResult) -> None:
        """Dead-letter the rejected, then commit the whole batch."""
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

    def run_once(self) -> BatchResult:
        """Deliver one batch and commit it; returns what happened to it."""
        batch = self._batch()
        if not batch:
            return BatchResult()
        try:
            result = self._writer(self._paused_sleep).write(batch)
        except (_Retry, TransportError):
            if self.stop.is_set():  # gave up mid-retry at shutdown: not committed, delivered after restart
                return BatchResult()
            raise
        self._complete(batch, result)
        return result

    def run(self) -> None:
        """Deliver until stopped, one bulk request in flight while the next batch is read and validated."""
        log.info("sink writing to %s %s", self.mode or self.setup(), self.settings.elasticsearch.data_stream)
        writer = self._writer(self.stop.wait)
        inflight: tuple[list[Message], Future[BatchResult]] | None = None
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="bulk") as pool:
                while not self.stop.is_set():
                    batch = self._batch()
                    ops, result = writer.prepare(batch)
                    if inflight is not None:
                        self._finish(*inflight)
                    inflight = (batch, pool.submit(writer.send, ops, result)) if batch else None
                if inflight is not None:
                    self._finish(*inflight)
        finally:
            self.consumer.close()
            self.deadletter.flush(30)

    def _finish(self, batch: list[Message], future: Future[BatchResult]) -> None:
        # A healthy cluster answers well within a second; only a longer wait pauses the partitions.
        wait([future], timeout=1.0)
        if not future.done():
            self._hold(future.done)
        try:
            result = future.result()
        except (_Retry, TransportError):
            if self.stop.is_set():  # gave up mid-retry at shutdown: not committed, delivered after restart
                return
            raise
        self._complete(batch, result)

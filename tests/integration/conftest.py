"""Integration fixtures: the real local stack, isolated topics per test, worker and sink processes.

These tests need `modelsiem stack up` (``make test`` and ``.ci/run`` start it);
without it they fail with that instruction instead of being skipped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from connectors.elasticsearch_sink import client
from modelsiem.settings import Settings, settings_with

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(item.fspath).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack() -> Settings:
    settings = Settings()
    try:
        AdminClient(settings.kafka.client_config()).list_topics(timeout=10)
    except KafkaException as exc:
        pytest.fail(f"Kafka is not reachable at {settings.kafka.bootstrap} ({exc}); run `modelsiem stack up`")
    try:
        client(settings.elasticsearch).cluster.health(timeout="10s")
    except Exception as exc:  # any failure means the same thing here
        pytest.fail(f"Elasticsearch is not reachable at {settings.elasticsearch.url} ({exc}); run `modelsiem stack up`")
    return settings


@dataclass
class Isolated:
    """Settings whose topics, groups and data stream belong to one test alone."""

    settings: Settings
    env: dict[str, str]
    logs: Path


@pytest.fixture
def isolated(stack: Settings, tmp_path: Path) -> Iterator[Isolated]:
    tag = uuid.uuid4().hex[:10]
    env = {
        "MODELSIEM_APP_ID": f"modelsiem-test-{tag}",
        "MODELSIEM_TOPICS__INFERENCE": f"test-{tag}.inference",
        "MODELSIEM_TOPICS__FEEDBACK": f"test-{tag}.feedback",
        "MODELSIEM_TOPICS__ALERTS": f"test-{tag}.alerts",
        "MODELSIEM_TOPICS__DEADLETTER": f"test-{tag}.deadletter",
        "MODELSIEM_TOPICS__QUARANTINE": f"test-{tag}.quarantine",
        "MODELSIEM_TOPICS__PARTITIONS": "2",
        "MODELSIEM_SINK__GROUP": f"sink-{tag}",
        "MODELSIEM_ELASTICSEARCH__DATA_STREAM": f"logs-modelsiem.alerts-test{tag}",
        "MODELSIEM_ELASTICSEARCH__LATEST_INDEX": f"modelsiem-alerts-latest-test{tag}",
        "MODELSIEM_WORKER_DIR": str(tmp_path / "worker"),
    }
    yield Isolated(settings_with(env), {**os.environ, **env}, tmp_path)
    # Every topic of the test goes (events, alerts, the workers' route and changelog topics):
    # thousands of leftovers would slow the broker's every restart.
    admin = AdminClient(stack.kafka.client_config())
    try:
        mine = [name for name in admin.list_topics(timeout=10).topics if tag in name]
        if mine:
            for future in admin.delete_topics(mine, operation_timeout=30).values():
                future.result(30)
    except KafkaException:
        pass  # a broker being restarted by the test: leftovers are harmless


class Process:
    """A `modelsiem` command in a subprocess, its output in a log file shown when a test fails."""

    def __init__(self, command: str, iso: Isolated) -> None:
        self.command = command
        self.log_path = iso.logs / f"{command}-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelsiem", command],
            env=iso.env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
        )

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def assert_running(self) -> None:
        assert self.proc.poll() is None, f"{self.command} exited {self.proc.returncode}:\n{self.log_tail()}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def spawn(isolated: Isolated) -> Iterator[Callable[[str], Process]]:
    procs: list[Process] = []

    def start(command: str) -> Process:
        procs.append(Process(command, isolated))
        return procs[-1]

    yield start
    for p in procs:
        p.stop()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, check: Callable[[], None] = lambda: None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        check()
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(1)


def read_topic(settings: Settings, topic: str, timeout: float = 5.0) -> list[Any]:
    """Every message currently in a topic, from the beginning."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"reader-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics[topic]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in metadata.partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in metadata.partitions])
        messages: list[Any] = []
        deadline = time.monotonic() + timeout
        while sum(ends.values()) > len(messages) and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                if not msg.error():
                    messages.append(msg)
        return messages
    finally:
        consumer.close()


def committed_all(settings: Settings, group: str, topics: list[str]) -> bool:
    """Whether ``group`` has committed every message now in ``topics``."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(t, p) for t in topics for p in consumer.list_topics(t, timeout=10).topics[t].partitions]
        try:
            committed = consumer.committed(tps, timeout=10)
        except KafkaException:  # the group coordinator is still being elected on a fresh broker
            return False
        for tp in committed:
            high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10)[1]
            if high > 0 and tp.offset < high:
                return False
        return True
    finally:
        consumer.close()


def es_alerts(settings: Settings, index: str | None = None) -> list[dict[str, Any]]:
    """Every document in the alert data stream (or in ``index``), with its ``_id``."""
    es = client(settings.elasticsearch)
    target = index or settings.elasticsearch.data_stream
    if not es.indices.exists(index=target):
        return []
    es.indices.refresh(index=target)
    hits = es.search(index=target, size=10_000, query={"match_all": {}}, version=True)["hits"]["hits"]
    return [{"_id": h["_id"], "_version": h.get("_version"), **h["_source"]} for h in hits]


def stable_members(settings: Settings, group: str) -> int:
    """How many members a consumer group has once it is stable (0 while it rebalances)."""
    admin = AdminClient(settings.kafka.client_config())
    try:
        description = admin.describe_consumer_groups([group])[group].result(10)
    except KafkaException:
        return 0
    return len(description.members) if description.state.name == "STABLE" else 0


def worker_done(settings: Settings) -> bool:
    """Whether the worker group has consumed every event, routed ones included."""
    from detectors.registry import build

    routes = [f"{settings.app_id}-route-{key}" for key in {d.partition_key for d in build()} - {"principal"}]
    return committed_all(settings, settings.app_id, [settings.topics.inference, settings.topics.feedback]) and (
        committed_all(settings, settings.app_id, routes)
    )

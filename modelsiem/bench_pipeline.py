"""``modelsiem bench``: throughput and latency of the stream processor on the local stack.

One run, one data set (a realistic mix of inference and feedback events,
preloaded into fresh topics), three consumers of it:

1. the limit: a bare confluent-kafka consumer that only reads and decodes the JSON;
2. a faust agent that does nothing with each event, and one that does nothing
   with batches of events (as the worker takes them);
3. the full worker with every default detector, through to the alerts topic;
   with ``workers`` above 1, also that many workers started together, sharing
   the same events as one consumer group (keys ``workers_eps``, ``workers_to_one``).

Throughput of 2 and 3 is read from the consumer group's committed offsets
(from the first commit to the last, so start-up is not counted; for the worker
the last is the commit that drains its route topics too, where events are
repartitioned for the detectors keyed by something other than the principal). Then the
worker is fed at half its measured rate with events stamped at send time, and
the latency of each alert is its arrival on the alerts topic minus the event
time of the event that raised it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import admin, ensure_topics, producer
from detectors.registry import build
from modelsiem.children import stop
from modelsiem.scenarios import simulate
from modelsiem.settings import Settings, settings_with


def _bench_settings(settings: Settings, tag: str) -> tuple[Settings, dict[str, str]]:
    env = {
        "MODELSIEM_APP_ID": f"bench-{tag}",
        "MODELSIEM_TOPICS__INFERENCE": f"bench-{tag}.inference",
        "MODELSIEM_TOPICS__FEEDBACK": f"bench-{tag}.feedback",
        "MODELSIEM_TOPICS__ALERTS": f"bench-{tag}.alerts",
        "MODELSIEM_TOPICS__DEADLETTER": f"bench-{tag}.deadletter",
        "MODELSIEM_TOPICS__QUARANTINE": f"bench-{tag}.quarantine",
        "MODELSIEM_WORKER_DIR": str(Path(tempfile.mkdtemp(prefix="modelsiem-bench-")) / "worker"),
        "MODELSIEM_LOG_LEVEL": "WARNING",
    }
    return settings_with(env), {**os.environ, **env}


def _mixed_events(total: int, seed: int) -> Iterator[dict[str, Any]]:
    """Copies of one simulated half hour (benign traffic, a flood, a poisoning campaign), shifted in time."""
    base = simulate(["query_flood", "feedback_poisoning"], minutes=30, seed=seed, principals=200,
                    start=datetime(2026, 1, 1, tzinfo=timezone.utc)).sorted_events()
    n = 0
    copy = 0
    while True:
        shift = f"c{copy}-"
        for event in base:
            if n >= total:
                return
            event = {**event, "event_id": shift + event["event_id"],
                     "principal": {**event["principal"], "id": shift + event["principal"]["id"]}}
            yield event
            n += 1
        copy += 1


def _produce(settings: Settings, events: Iterator[dict[str, Any]]) -> int:
    topics = {"inference": settings.topics.inference, "feedback": settings.topics.feedback}
    prod = producer(settings, **{"linger.ms": 50, "batch.num.messages": 10_000})
    count = 0
    for event in events:
        while True:
            try:
                prod.produce(topics[event["kind"]], value=orjson.dumps(event), key=event["principal"]["id"].encode())
                break
            except BufferError:
                prod.poll(0.1)
        count += 1
        if count % 10_000 == 0:
            prod.poll(0)
    if prod.flush(300):
        raise RuntimeError("preloading the event topics failed")
    return count


def _bare(settings: Settings, total: int) -> float:
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"bench-bare-{uuid.uuid4().hex}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([settings.topics.inference, settings.topics.feedback])
    seen = 0
    start = None
    while seen < total:
        for msg in consumer.consume(10_000, timeout=1.0):
            if msg.error():
                continue
            start = start or time.perf_counter()
            orjson.loads(msg.value())
            seen += 1
    elapsed = time.perf_counter() - (start or time.perf_counter())
    consumer.close()
    return total / elapsed


def _committed(settings: Settings, group: str) -> int:
    """Events of the event topics the group has committed."""
    return _lag(settings, group, [settings.topics.inference, settings.topics.feedback])[0]


def _lag(settings: Settings, group: str, topics: list[str]) -> tuple[int, int]:
    """(messages committed, messages not yet committed) of ``group`` over the existing ``topics``."""
    consumer = Consumer({**settings.kafka.client_config(), "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=10).topics
        tps = [TopicPartition(t, p) for t in topics if t in metadata for p in metadata[t].partitions]
        committed = consumer.committed(tps, timeout=10)
        done = sum(max(tp.offset, 0) for tp in committed)
        ends = sum(consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in tps)
        return done, ends - done
    except Exception:  # noqa: BLE001 - the coordinator may not be ready yet: nothing committed
        return 0, 1
    finally:
        consumer.close()


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _run_group(command: list[str], env: dict[str, str], settings: Settings, group: str,
               total: int, timeout: float, internal: Sequence[str] = (), processes: int = 1) -> tuple[float, float]:
    """Time ``processes`` copies of a consumer through ``total`` events by their group's commits.

    Returns (events/s, the largest peak RSS of one process in MB). ``internal`` topics (the
    worker's route topics) must be drained as well before it counts as done.
    """
    # Logs to files, not pipes: a pipe nobody reads fills up and blocks the logging process.
    logs = [tempfile.TemporaryFile() for _ in range(processes)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log) for log in logs]

    def tail(i: int) -> str:
        logs[i].seek(0)
        return logs[i].read()[-2000:].decode(errors="replace")

    try:
        deadline = time.monotonic() + timeout
        first: tuple[float, int] | None = None
        done = 0
        while done < total:
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    raise RuntimeError(f"{command} exited: {tail(i)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command} processed {done} of {total} events in {timeout:.0f} s: {tail(0)}")
            time.sleep(0.5)
            done = _committed(settings, group)
            if done and first is None:
                first = (time.monotonic(), done)
            if done >= total and internal and _lag(settings, group, list(internal))[1]:
                done = total - 1  # events still on their way through the route topics
        assert first is not None
        elapsed = time.monotonic() - first[0]
        rss = max(_peak_rss_mb(proc.pid) for proc in procs)
        return ((total - first[1]) / elapsed if elapsed > 0 else float("nan")), rss
    finally:
        stop(procs)
        for log in logs:
            log.close()


# Quiet principals of the latency run: a population that repeats, as API callers do. (Every event from a
# never-seen key costs a new state record per detector; `modelsiem bench-memory` measures that case.)
QUIET_KEYS = 2_000


def _latency(settings: Settings, env: dict[str, str], rate: float, seconds: float) -> tuple[float, float, int]:
    """Feed the worker at ``rate`` events/s for ``seconds``; return p50 and p99 event-to-alert latency (ms)."""
    proc = subprocess.Popen([sys.executable, "-m", "modelsiem", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    consumer = Consumer({**settings.kafka.client_config(), "group.id": f"bench-lat-{uuid.uuid4().hex}",
                         "auto.offset.reset": "latest", "enable.auto.commit": False})
    consumer.subscribe([settings.topics.alerts])
    prod = producer(settings, **{"linger.ms": 5})
    rng = np.random.default_rng(0)
    try:
        # Time only the steady state: wait until the worker has committed a first event (start-up,
        # partition assignment and table recovery take seconds, and a backlog built meanwhile would count).
        prod.produce(settings.topics.inference, key=b"warm-up", value=orjson.dumps(
            {"event_id": "warm-up", "timestamp": datetime.now(timezone.utc).isoformat(),
             "model": {"name": "bench"}, "principal": {"id": "warm-up"}}))
        prod.flush(10)
        deadline = time.monotonic() + 180
        while _committed(settings, settings.app_id) < 1:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the worker did not start consuming within 180 s")
            time.sleep(0.5)
        while not consumer.assignment():
            consumer.poll(0.2)
        latencies: list[float] = []
        start = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - start) < seconds:
            target = int(elapsed * rate)
            while sent < target:
                # Half the events are a run of floods, 400 queries per key (300 within a minute raise an
                # alert); the other half come from a population of quiet keys.
                who = f"flood-{sent // 800}" if sent % 2 else f"quiet-{int(rng.integers(0, QUIET_KEYS))}"
                now = datetime.now(timezone.utc).isoformat()
                event = {"event_id": f"l{sent}", "timestamp": now, "model": {"name": "bench"},
                         "principal": {"id": who}}
                prod.produce(settings.topics.inference, value=orjson.dumps(event), key=who.encode())
                sent += 1
            prod.poll(0)
            for msg in consumer.consume(1000, timeout=0.01):
                if not msg.error():
                    _, arrived_ms = msg.timestamp()
                    alert = orjson.loads(msg.value())
                    event_ms = datetime.fromisoformat(alert["@timestamp"].replace("Z", "+00:00")).timestamp() * 1000
                    latencies.append(arrived_ms - event_ms)
        drain_until = time.monotonic() + 10
        while time.monotonic() < drain_until:
            for msg in consumer.consume(1000, timeout=0.2):
                if not msg.error():
                    alert = orjson.loads(msg.value())
                    event_ms = datetime.fromisoformat(alert["@timestamp"].replace("Z", "+00:00")).timestamp() * 1000
                    latencies.append(msg.timestamp()[1] - event_ms)
        if not latencies:
            raise RuntimeError("no alert arrived during the latency run")
        return float(np.percentile(latencies, 50)), float(np.percentile(latencies, 99)), len(latencies)
    finally:
        consumer.close()
        prod.flush(10)
        stop([proc])


def _routes(settings: Settings) -> list[str]:
    return [f"{settings.app_id}-route-{key}" for key in {d.partition_key for d in build()} - {"principal"}]


def drop_topics(settings: Settings, prefix: str) -> int:
    """Delete every topic whose name starts with ``prefix``; how many there were.

    A benchmark's topics (events, routes, changelogs: about forty a run) would otherwise stay on the
    cluster, and every faust worker's metadata refreshes decode all topics: the next runs would be slower.
    """
    client = admin(settings)
    names = [name for name in client.list_topics(timeout=30).topics if name.startswith(prefix)]
    for future in client.delete_topics(names, operation_timeout=60).values() if names else ():
        future.result()
    return len(names)


def bench(settings: Settings, events: int = 1_000_000, seed: int = 1, latency_seconds: float = 30.0,
          workers: int = 1) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    try:
        return _bench(settings, tag, events, seed, latency_seconds, workers)
    finally:
        drop_topics(settings, f"bench-{tag}")


def _bench(settings: Settings, tag: str, events: int, seed: int, latency_seconds: float,
           workers: int) -> dict[str, Any]:
    bench_settings, env = _bench_settings(settings, tag)
    ensure_topics(bench_settings)
    total = _produce(bench_settings, _mixed_events(events, seed))
    bare = _bare(bench_settings, total)
    noop, _ = _run_group([sys.executable, "-m", "modelsiem.bench_noop"], env, bench_settings,
                         f"{bench_settings.app_id}-noop", total, timeout=3600)
    noop_batch, _ = _run_group([sys.executable, "-m", "modelsiem.bench_noop", "batch"], env, bench_settings,
                               f"{bench_settings.app_id}-noop-batch", total, timeout=3600)
    worker = [sys.executable, "-m", "modelsiem", "worker"]
    pipeline, rss = _run_group(worker, env, bench_settings, bench_settings.app_id, total, timeout=3600,
                               internal=_routes(bench_settings))
    scale_out: dict[str, Any] = {}
    if workers > 1:
        # The same events again, for a group of its own (own route and changelog topics), started together.
        group_env = {**env, "MODELSIEM_APP_ID": f"bench-{tag}-x{workers}"}
        group_settings = settings_with(group_env)
        together, _ = _run_group(worker, group_env, group_settings, group_settings.app_id, total, timeout=3600,
                                 internal=_routes(group_settings), processes=workers)
        scale_out = {"workers": workers, "workers_eps": round(together), "workers_to_one": round(together / pipeline, 3)}
    # The latency run uses its own topics, so that the backlog above does not count.
    lat_settings, lat_env = _bench_settings(settings, tag + "-lat")
    ensure_topics(lat_settings)
    p50, p99, alerts = _latency(lat_settings, lat_env, pipeline / 2, latency_seconds)
    return {
        "events": total,
        "partitions": bench_settings.topics.partitions,
        "bare_eps": round(bare),
        "noop_eps": round(noop),
        "noop_batch_eps": round(noop_batch),
        "pipeline_eps": round(pipeline),
        "pipeline_to_bare": round(pipeline / bare, 3),
        "pipeline_to_noop": round(pipeline / noop, 3),
        "pipeline_to_noop_batch": round(pipeline / noop_batch, 3),
        "peak_rss_mb": round(rss, 1),
        "latency_rate_eps": round(pipeline / 2),
        "latency_alerts": alerts,
        "p50_ms": round(p50, 1),
        "p99_ms": round(p99, 1),
        **scale_out,
        "cpu": os.cpu_count(),
    }

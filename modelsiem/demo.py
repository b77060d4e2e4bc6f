"""The demo: the whole path on the local stack, from simulated attack to alerts in Elasticsearch."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from modelsiem.children import stop
from modelsiem.settings import Settings

_RULES = ("query_rate", "feedback_surge")


def _spawn(command: str, log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / f"demo-{command}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "modelsiem", command], stdout=log, stderr=subprocess.STDOUT)


def _rules_seen(settings: Settings, since: str) -> set[str]:
    from connectors.elasticsearch_sink import client

    es = client(settings.elasticsearch)
    target = settings.elasticsearch.data_stream
    if not es.indices.exists(index=target):
        return set()
    es.indices.refresh(index=target)
    response = es.search(
        index=target, size=0,
        query={"bool": {"filter": [{"term": {"event.kind": "alert"}}, {"range": {"event.created": {"gte": since}}}]}},
        aggs={"rules": {"terms": {"field": "rule.id"}}},
    )
    return {b["key"] for b in response["aggregations"]["rules"]["buckets"]}


def run_demo(settings: Settings, console: Console, timeout: float) -> str:
    """Run the demo; return when it started (ISO 8601), so that its alerts can be told from earlier ones."""
    from connectors.kafka import ensure_topics, publish_events
    from modelsiem import stack
    from modelsiem.scenarios import simulate

    stack.up(settings, echo=console.print)
    ensure_topics(settings)
    log_dir = settings.stack.dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    procs = [_spawn("worker", log_dir), _spawn("sink", log_dir)]
    try:
        trace = simulate(["query_flood", "feedback_poisoning"], seed=int(time.time()))
        events = trace.sorted_events()
        # Each run has its own accounts and reported items: a second demo on the same stack must not
        # read as the first one's accounts sending their half hour again, nor grow the first one's
        # campaign alert (which is re-sent only when its evidence has grown enough).
        run = format(int(time.time()) % 0xFFFFFF, "06x")
        for event in events:
            event["principal"] = {**event["principal"], "id": f"{event['principal']['id']}-{run}"}
            if event.get("item", {}).get("fingerprint"):
                event["item"] = {**event["item"], "fingerprint": f"{event['item']['fingerprint']}-{run}"}
        console.print(f"publishing {len(events)} simulated events (a query flood and a feedback-poisoning "
                      "campaign among benign traffic)", highlight=False)
        publish_events(settings, events)
        deadline = time.monotonic() + timeout
        with console.status("waiting for the alerts to reach Elasticsearch"):
            while not set(_RULES) <= (seen := _rules_seen(settings, started)):
                for proc in procs:
                    if proc.poll() is not None:
                        raise RuntimeError(f"{proc.args[-1]} exited with {proc.returncode}; see {log_dir}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {sorted(seen)} alerted within {timeout:.0f} s; logs in {log_dir}")
                time.sleep(2)
    finally:
        stop(procs)
    console.print(f"both attacks alerted; worker and sink logs in {log_dir}; "
                  "the stack keeps running (`modelsiem stack down` stops it)", highlight=False)
    return started

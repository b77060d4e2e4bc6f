"""Offline replay: the detectors over a JSON-lines file, no Kafka or Elasticsearch.

A line that is not a valid event is reported with its line number and skipped;
the replay goes on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from detectors.base import AnyEvent
from stream.decode import Rejected, decode
from stream.engine import Engine, MemoryStore

# Events applied as one engine batch, and folded between two tallies. A worker's batches are larger
# (stream.app.BATCH_MAX) and it tallies every MODELSIEM_TALLY_INTERVAL instead.
BATCH = 500


@dataclass
class ReplayReport:
    events: int = 0
    alerts: int = 0
    quarantined: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def replay(
    lines: Iterable[tuple[int, bytes]],
    engine: Engine,
    on_alert: Callable[[dict[str, Any]], None],
    on_quarantine: Callable[[dict[str, Any]], None] = lambda record: None,
    store: MemoryStore | None = None,
    batch: int = BATCH,
) -> ReplayReport:
    """Decode each ``(line number, raw)`` in order and process the events in batches of ``batch``.

    Every alert revision goes to ``on_alert``, every quarantine record to ``on_quarantine``.
    """
    store = store if store is not None else MemoryStore()
    report = ReplayReport()
    pending: list[AnyEvent] = []

    def flush() -> None:
        step = engine.settle_batch(pending, store)
        for alert in step.alerts:
            on_alert(alert)
        for record in step.quarantine:
            on_quarantine(record)
        report.alerts += len(step.alerts)
        report.quarantined += len(step.quarantine)
        pending.clear()

    for number, raw in lines:
        event = decode(raw)
        if isinstance(event, Rejected):
            report.rejected.append((number, event.reason))
            continue
        report.events += 1
        pending.append(event)
        if len(pending) >= batch:
            flush()
    flush()
    return report

"""Findings as Elastic Common Schema alert documents.

``@timestamp`` is the event time of the event that raised or updated the alert,
so a replay reproduces it; wall-clock time goes in ``event.created`` (and
``event.ingested`` at indexing). Everything that is not ECS lives under the one
custom namespace ``modelsiem``.

Every string that came from an event is cleaned here: control characters are
removed and the length bounded, so that what an attacker puts in a principal id
or a label reaches the analyst as inert, readable data. Nothing from an event is
ever used as a field name: evidence keys are checked against a strict pattern.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from datetime import datetime, timezone
from typing import Any

from detectors.base import SEVERITY_NUMBER, AnyEvent, DetectorMeta, Finding, PartitionKey
from stream.events import CONTRACT_VERSION, plain_number

ECS_VERSION = "9.5.0-dev"
DATASET = "modelsiem.alerts"
_NAMESPACE = uuid.UUID("6f1c1a52-3f0e-4b8e-9a59-2f0c4d7e8a10")
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
# related.* names every account of a campaign (a few thousand at most); lists
# inside the evidence and sample ids stay short.
_MAX_RELATED = 5000
_MAX_LIST = 100
_SUBJECT_NOUN: dict[PartitionKey, str] = {
    "principal": "principal", "fingerprint": "item", "origin": "origin", "model": "model",
    "ip_prefix": "network", "cohort": "cohort", "tenant": "tenant",
}


def clean(value: str, limit: int = 256) -> str:
    """Remove control and format characters and bound the length.

    >>> clean("evil\\x1b[31m\\nkey\\u202e" + "x" * 300, limit=12)
    'evil[31mkey…'
    """
    if value.isprintable() and len(value) <= limit:
        return value
    kept = "".join(c for c in value if unicodedata.category(c)[0] != "C")
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def quote(value: str, limit: int = 64) -> str:
    """An event-supplied value as it appears inside a sentence."""
    return "'" + clean(value, limit).replace("'", "’") + "'"


def alert_id(meta: DetectorMeta, model: str, subject: str, episode_start: float) -> str:
    """Deterministic: the same detector, model, subject and episode always give the same id."""
    return str(uuid.uuid5(_NAMESPACE, f"{meta.id}\x1f{model}\x1f{subject}\x1f{episode_start:.6f}"))


def document_id(alert: dict[str, Any]) -> str:
    """One document per revision of an alert, so that re-delivering one is idempotent."""
    return f"{alert['event']['id']}:{alert['modelsiem']['alert']['revision']}"


def _iso(ts: datetime | float) -> str:
    if isinstance(ts, float | int):
        ts = datetime.fromtimestamp(ts, tz=timezone.utc)
    return ts.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _strings(values: tuple[str, ...], limit: int = 256, most: int = _MAX_RELATED) -> list[str]:
    return list(dict.fromkeys(clean(v, limit) for v in values[:most]))


def _evidence(evidence: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in evidence.items():
        if not _KEY.match(key):
            raise ValueError(f"evidence key {key!r} is not a plain snake_case name")
        values = value[:_MAX_LIST] if isinstance(value, list | tuple) else None
        out[key] = _value(key, value) if values is None else [_value(key, v) for v in values]
    return out


def _value(key: str, value: Any) -> Any:
    """An evidence value as the alert carries it: text cleaned, numpy's numbers and booleans as plain ones.

    Anything else JSON cannot carry is refused here, where the engine reports the error on the event
    that raised the finding (and the batch goes on), rather than when the worker publishes the alert,
    which would stop the partition.
    """
    if isinstance(value, str):
        return clean(value)
    if value is not None and not isinstance(value, bool | int | float):
        try:
            value = plain_number(value)  # the same conversion signals get
        except TypeError:
            raise ValueError(f"evidence {key}: {type(value).__name__} is not a JSON text, number or boolean") from None
    if isinstance(value, int) and not isinstance(value, bool) and not -(2**63) <= value < 2**64:
        raise ValueError(f"evidence {key}: an integer beyond 64 bits")
    return value


def build_alert(
    meta: DetectorMeta,
    partition_key: PartitionKey,
    finding: Finding,
    event: AnyEvent,
    *,
    episode_start: float,
    revision: int,
    created: datetime,
) -> dict[str, Any]:
    """The ECS document of one revision of an alert."""
    model = event.model
    the_id = alert_id(meta, model.name, finding.subject, episode_start)
    technique: dict[str, Any] = {
        "id": [meta.technique.id],
        "name": [meta.technique.name],
        "reference": [meta.technique.reference],
    }
    if meta.subtechnique:
        technique["subtechnique"] = {
            "id": [meta.subtechnique.id],
            "name": [meta.subtechnique.name],
            "reference": [meta.subtechnique.reference],
        }
    noun = _SUBJECT_NOUN[partition_key]
    message = clean(
        f"{meta.name}: {noun} {quote(finding.subject)} {finding.summary} (model {quote(model.name)}).",
        limit=1024,
    )
    doc: dict[str, Any] = {
        "@timestamp": _iso(event.timestamp),
        "ecs": {"version": ECS_VERSION},
        "message": message,
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection"],
            "type": ["info"],
            "id": the_id,
            "severity": SEVERITY_NUMBER[finding.severity],
            "risk_score": float(finding.risk_score),
            "created": _iso(created),
            "start": _iso(episode_start),
            "end": _iso(event.timestamp),
            "dataset": DATASET,
            "module": "modelsiem",
            "provider": "modelsiem",
            "action": meta.id,
        },
        "rule": {
            "id": meta.id,
            "uuid": str(uuid.uuid5(_NAMESPACE, meta.id)),
            "name": meta.name,
            "description": meta.description,
            "version": str(meta.version),
            "ruleset": "modelsiem",
            "category": "AI model security",
            "reference": [str(r) for r in meta.references],
        },
        "threat": {
            "framework": "MITRE ATLAS",
            "tactic": {"id": [meta.tactic.id], "name": [meta.tactic.name], "reference": [meta.tactic.reference]},
            "technique": technique,
        },
        "related": {
            "user": _strings(finding.users),
            "ip": _strings(finding.ips, 64),
            "hash": _strings(finding.hashes),
        },
        "service": {"name": clean(model.name)},
        "modelsiem": {
            "contract_version": CONTRACT_VERSION,
            "alert": {
                "revision": revision,
                "severity": finding.severity,
                "subject": clean(finding.subject),
                "subject_kind": partition_key,
            },
            "detector": {"id": meta.id, "version": meta.version},
            "model": {"name": clean(model.name)},
            "evidence": _evidence(finding.evidence),
            "sample_event_ids": _strings(finding.event_ids, most=_MAX_LIST),
        },
    }
    if model.version:
        doc["service"]["version"] = doc["modelsiem"]["model"]["version"] = clean(model.version)
    if finding.user is not None:
        doc["user"] = {"name": clean(finding.user), "id": clean(finding.user)}
    return doc

"""The index template of the alert data stream, owned and versioned by modelsiem.

Mappings are explicit and ``dynamic: false``: a field that is not listed here
is kept in ``_source`` but never added to the mapping, so values an attacker
chooses can never create fields in the SIEM (mapping explosion). Detector
evidence is one ``flattened`` field for the same reason.

The ECS types ``match_only_text`` and ``constant_keyword`` come from modules
that minimal distributions lack; :func:`index_template` can fall back to
``text`` and ``keyword``, which hold the same values.
"""

from __future__ import annotations

from typing import Any

TEMPLATE_VERSION = 1
# Above the 500 that Elastic reserves for its own logs-*-* templates.
TEMPLATE_PRIORITY = 600

_K: dict[str, Any] = {"type": "keyword", "ignore_above": 1024}
_DATE = {"type": "date"}
_TEXT_KW = {"type": "keyword", "ignore_above": 1024, "fields": {"text": {"type": "match_only_text"}}}
_FALLBACK = {"match_only_text": "text", "constant_keyword": "keyword"}


def _obj(**props: Any) -> dict[str, Any]:
    return {"properties": props}


MAPPINGS: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "@timestamp": _DATE,
        "message": {"type": "match_only_text"},
        "ecs": _obj(version=_K),
        "event": _obj(
            kind=_K, category=_K, type=_K, id=_K, action=_K, dataset=_K, module=_K, provider=_K,
            severity={"type": "long"}, risk_score={"type": "float"},
            created=_DATE, ingested=_DATE, start=_DATE, end=_DATE,
        ),
        "rule": _obj(
            id=_K, uuid=_K, name=_K, description=_K, version=_K, ruleset=_K, category=_K, reference=_K,
        ),
        "threat": _obj(
            framework=_K,
            tactic=_obj(id=_K, name=_K, reference=_K),
            technique=_obj(
                id=_K, name=_TEXT_KW, reference=_K,
                subtechnique=_obj(id=_K, name=_TEXT_KW, reference=_K),
            ),
        ),
        "related": _obj(user=_K, ip={"type": "ip"}, hash=_K),
        "user": _obj(name=_K, id=_K),
        "service": _obj(name=_K, version=_K),
        "data_stream": _obj(type={"type": "constant_keyword"}, dataset={"type": "constant_keyword"},
                            namespace={"type": "constant_keyword"}),
        "modelsiem": _obj(
            contract_version=_K,
            alert=_obj(revision={"type": "long"}, severity=_K, subject=_K, subject_kind=_K),
            detector=_obj(id=_K, version={"type": "long"}),
            model=_obj(name=_K, version=_K),
            evidence={"type": "flattened", "ignore_above": 1024},
            sample_event_ids=_K,
        ),
    },
}


def template_name(target: str) -> str:
    """One template per target, so that two deployments on one cluster never overwrite each other's."""
    return f"modelsiem_{target}"


def _basic(mapping: Any) -> Any:
    if isinstance(mapping, dict):
        return {k: _FALLBACK.get(v, v) if isinstance(v, str) else _basic(v) for k, v in mapping.items()}
    return mapping


def index_template(pattern: str, data_stream: bool, basic_types: bool = False) -> dict[str, Any]:
    """The composable template body for ``pattern``.

    ``data_stream`` where the cluster supports them; ``basic_types`` where it
    lacks the ECS-preferred field types.
    """
    body: dict[str, Any] = {
        "index_patterns": [pattern],
        "priority": TEMPLATE_PRIORITY,
        "version": TEMPLATE_VERSION,
        "_meta": {"managed_by": "modelsiem", "description": "modelsiem ECS alerts"},
        "template": {
            "settings": {"index": {"auto_expand_replicas": "0-1", "mapping": {"total_fields": {"limit": 1000}}}},
            "mappings": _basic(MAPPINGS) if basic_types else MAPPINGS,
        },
    }
    if data_stream:
        body["data_stream"] = {}
    return body

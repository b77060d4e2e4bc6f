"""Checks an alert document against the ECS reference in ../shared/ecs and the alert schema."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from stream.alert_schema import AlertDocument

_STRING_TYPES = {"keyword", "constant_keyword", "wildcard", "match_only_text", "text"}


def leaves(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted field name -> value; the flattened evidence counts as one field."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and name != "modelsiem.evidence":
            out.update(leaves(value, name + "."))
        else:
            out[name] = value
    return out


def _check_type(field: str, ecs_type: str, value: Any) -> None:
    for v in value if isinstance(value, list) else [value]:
        if ecs_type in _STRING_TYPES:
            assert isinstance(v, str), field
        elif ecs_type == "date":
            assert datetime.fromisoformat(v.replace("Z", "+00:00")).tzinfo is not None, field
        elif ecs_type == "ip":
            ipaddress.ip_address(v)
        elif ecs_type == "long":
            assert isinstance(v, int) and not isinstance(v, bool), field
        elif ecs_type == "float":
            assert isinstance(v, float | int), field
        else:
            raise AssertionError(f"{field}: no check for ECS type {ecs_type}")


def assert_ecs_alert(alert: dict[str, Any], fields: dict[str, str], allowed: dict[str, list[str]]) -> None:
    AlertDocument.model_validate(alert)
    for field, value in leaves(alert).items():
        if field.startswith("modelsiem."):
            continue
        assert field in fields, f"{field} is not an ECS field"
        _check_type(field, fields[field], value)
    event = alert["event"]
    assert event["kind"] == "alert" and event["kind"] in allowed["event.kind"]
    assert set(event["category"]) <= set(allowed["event.category"])
    assert set(event["type"]) <= set(allowed["event.type"])
    assert event["severity"] in (21, 47, 73, 99) and 0 <= event["risk_score"] <= 100
    assert alert["threat"]["framework"] == "MITRE ATLAS"
    assert alert["threat"]["technique"]["id"][0].startswith("AML.T")
    assert alert["related"]["user"] and alert["service"]["name"] and alert["message"]

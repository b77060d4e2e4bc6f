"""Shared fixtures: paths, the ECS reference, alert documents from the detectors' own examples."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
ECS_DIR = ROOT.parent / "shared" / "ecs"


@pytest.fixture(scope="session")
def ecs_fields() -> dict[str, str]:
    """ECS field name -> type, from the reference beside the project."""
    path = ECS_DIR / "fields.csv"
    assert path.exists(), f"the ECS reference is missing: {path}"
    with path.open() as fh:
        return {row["Field"]: row["Type"] for row in csv.DictReader(fh)}


@pytest.fixture(scope="session")
def ecs_allowed() -> dict[str, list[str]]:
    return json.loads((ECS_DIR / "allowed_values.json").read_text())["allowed_values"]


@pytest.fixture(scope="session")
def example_alerts() -> list[dict[str, Any]]:
    """Every alert revision the installed detectors raise on their positive examples."""
    from detectors.registry import build
    from stream.engine import Engine, MemoryStore

    alerts: list[dict[str, Any]] = []
    for detector in build():
        engine, store = Engine([detector]), MemoryStore()
        for example in detector.examples():
            for event in example.events():
                step = engine.process(event, store)
                alerts.extend(step.alerts)
                step.save(store)
    from stream.alerts import document_id

    assert alerts
    assert len({document_id(a) for a in alerts}) == len(alerts)
    return alerts

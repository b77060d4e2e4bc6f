"""The alert document as a typed model: its JSON Schema is what consumers validate against.

:func:`stream.alerts.build_alert` builds the documents; the test suite checks
each one against this model and against the ECS reference.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from detectors.base import PartitionKey


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Ecs(_Doc):
    version: str


class AlertEvent(_Doc):
    kind: Literal["alert"]
    category: list[Literal["intrusion_detection"]]
    type: list[Literal["info"]]
    id: str = Field(description="Alert id: stable across the revisions of one alert.")
    severity: Literal[21, 47, 73, 99]
    risk_score: float = Field(ge=0, le=100)
    created: AwareDatetime
    ingested: AwareDatetime | None = Field(default=None, description="Set by the sink at indexing.")
    start: AwareDatetime
    end: AwareDatetime
    dataset: Literal["modelsiem.alerts"]
    module: Literal["modelsiem"]
    provider: Literal["modelsiem"]
    action: str


class Rule(_Doc):
    id: str
    uuid: str
    name: str
    description: str
    version: str
    ruleset: Literal["modelsiem"]
    category: str
    reference: list[str]


class AtlasEntries(_Doc):
    id: list[str]
    name: list[str]
    reference: list[str]


class Technique(AtlasEntries):
    subtechnique: AtlasEntries | None = None


class Threat(_Doc):
    framework: Literal["MITRE ATLAS"]
    tactic: AtlasEntries
    technique: Technique


class Related(_Doc):
    user: list[str]
    ip: list[str]
    hash: list[str]


class User(_Doc):
    name: str
    id: str


class Service(_Doc):
    name: str
    version: str | None = None


class AlertState(_Doc):
    revision: int = Field(ge=1, description="Increases each time the alert is updated.")
    severity: Literal["low", "medium", "high", "critical"]
    subject: str
    subject_kind: PartitionKey


class DetectorRef(_Doc):
    id: str
    version: int


class ModelRef(_Doc):
    name: str
    version: str | None = None


class Custom(_Doc):
    contract_version: str
    alert: AlertState
    detector: DetectorRef
    model: ModelRef
    evidence: dict[str, Any]
    sample_event_ids: list[str]


class AlertDocument(_Doc):
    """One revision of a modelsiem alert, in the Elastic Common Schema."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    timestamp: AwareDatetime = Field(alias="@timestamp", description="Event time of the event that raised it.")
    ecs: Ecs
    message: str
    event: AlertEvent
    rule: Rule
    threat: Threat
    related: Related
    user: User | None = None
    service: Service
    modelsiem: Custom

"""The scenario registry, the trace and its ground truth."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel

Event = dict[str, Any]


class Truth(BaseModel):
    """What one scenario put in the trace."""

    scenario: str
    label: Literal["attack", "benign"]
    technique: str | None = None
    principals: list[str]
    fingerprints: list[str] = []
    start: str
    end: str


@dataclass
class Trace:
    events: list[Event] = field(default_factory=list)
    truth: list[Truth] = field(default_factory=list)

    def sorted_events(self) -> list[Event]:
        return sorted(self.events, key=lambda e: (e["timestamp"], e["event_id"]))


@dataclass(frozen=True)
class Window:
    start: datetime
    minutes: int

    @property
    def seconds(self) -> int:
        return self.minutes * 60

    def at(self, seconds: float) -> str:
        return (self.start + timedelta(seconds=float(seconds))).isoformat().replace("+00:00", "Z")


ScenarioFn = Callable[[np.random.Generator, Window, Trace], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    label: Literal["attack", "benign"]
    run: ScenarioFn

    @property
    def description(self) -> str:
        return (self.run.__doc__ or "").strip().splitlines()[0]


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, label: Literal["attack", "benign"]) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register a scenario function under ``name``; its docstring's first line describes it."""

    def register(fn: ScenarioFn) -> ScenarioFn:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} registered twice")
        SCENARIOS[name] = Scenario(name, label, fn)
        return fn

    return register


def simulate(names: list[str], *, minutes: int = 30, seed: int = 7,
             start: datetime | None = None, principals: int = 40) -> Trace:
    """Benign background traffic over ``minutes`` plus the named scenarios."""
    from modelsiem.scenarios.traffic import benign

    unknown = set(names) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s) {sorted(unknown)}; known: {sorted(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    if start is None:
        start = datetime.now(timezone.utc).replace(second=0, microsecond=0) - timedelta(minutes=minutes)
    window = Window(start, minutes)
    trace = Trace()
    benign(rng, window, trace, principals)
    for name in names:
        SCENARIOS[name].run(rng, window, trace)
    return trace

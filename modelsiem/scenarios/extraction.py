"""Model extraction and probing scenarios (ATLAS AML.T0024, AML.T0043)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from modelsiem.scenarios.base import Trace, Truth, Window, scenario
from modelsiem.scenarios.traffic import inference, make_principal


@scenario("query_flood", "attack")
def query_flood(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """One aged key that suddenly queries at ~40/s for five minutes, late in the window."""
    who = make_principal(rng, "integration-7731", window.start - timedelta(days=400))
    for t in np.sort(rng.uniform(0, window.seconds, int(window.seconds / 20))):  # its usual ~3/min
        trace.events.append(inference(rng, window.at(t), who, f"usual:{t}"))
    start = window.seconds * 0.6
    for i, t in enumerate(np.sort(start + rng.uniform(0, 300, 12_000))):
        trace.events.append(inference(rng, window.at(t), who, f"probe:{i}"))
    trace.truth.append(Truth(scenario="query_flood", label="attack", technique="AML.T0024",
                             principals=[who["id"]], start=window.at(start), end=window.at(start + 300)))

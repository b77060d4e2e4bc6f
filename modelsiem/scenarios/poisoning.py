"""Feedback-poisoning scenarios (ATLAS AML.T0020)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from modelsiem.scenarios.base import Trace, Truth, Window, scenario
from modelsiem.scenarios.traffic import event_id, feedback, make_principal


@scenario("feedback_poisoning", "attack")
def feedback_poisoning(rng: np.random.Generator, window: Window, trace: Trace, accounts: int = 200) -> None:
    """Fresh burner accounts on one /24 mass-report a confident spam campaign as not spam."""
    start = window.seconds * 0.5
    created = window.start - timedelta(hours=6)
    burners = [make_principal(rng, f"acct-{event_id(rng)[:10]}", created + timedelta(seconds=int(rng.integers(0, 600))),
                              prefix="203.0.113") for _ in range(accounts)]
    fingerprint = "fp-campaign-pharma-0042"
    for t, who in zip(np.sort(start + rng.uniform(0, 600, accounts)), burners, strict=True):
        trace.events.append(feedback(rng, window.at(t), who, fingerprint, "spam", "ham",
                                     float(rng.uniform(0.97, 0.999)), "deals-pharma.example"))
    trace.truth.append(Truth(scenario="feedback_poisoning", label="attack", technique="AML.T0020",
                             principals=[b["id"] for b in burners], fingerprints=[fingerprint],
                             start=window.at(start), end=window.at(start + 600)))

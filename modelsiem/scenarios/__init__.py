"""Labelled traffic: benign background plus named attack and benign scenarios, with ground truth.

Every scenario is a function registered with :func:`scenario`; it draws
events from a seeded numpy generator into a :class:`Trace` and, for what it
adds, a :class:`Truth` entry: which principals (and item fingerprints) take
part, in which window, and whether it is an attack (that must be detected) or
a benign pattern (that must not alert). ``modelsiem evaluate`` scores the
detectors against that truth.
"""

from __future__ import annotations

from modelsiem.scenarios.base import SCENARIOS, Scenario, Trace, Truth, Window, scenario, simulate

# Importing a scenario module registers its scenarios.
from modelsiem.scenarios import benign_patterns, extraction, poisoning  # noqa: E402,F401  isort: skip

__all__ = ["SCENARIOS", "Scenario", "Trace", "Truth", "Window", "scenario", "simulate"]

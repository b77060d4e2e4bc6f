"""Feedback-poisoning scenarios (ATLAS AML.T0020), and the organic corrections they must not be confused with.

Each scenario is a builder with keyword parameters (campaign size, pace, account
ages, IP layout, model confidence) so that tests and backtests can vary what the
registered scenario does with its defaults:

- ``feedback_poisoning``: a burst. Fresh burner accounts, created together on
  shared infrastructure, report one confidently classified spam campaign as not
  spam within minutes (the Gmail attack Google described).
- ``feedback_poisoning_slow``: a few reports an hour over hours, from a mix of
  fresh and aged accounts on scattered addresses, all on one campaign.
- ``organic_corrections`` (benign): long-standing, diverse users move a
  legitimate newsletter, misclassified as spam with moderate confidence, back to
  the inbox; most of them within the first hour after it was delivered.

The slow campaign runs over hours whatever the simulated window: simulate at
least ``--minutes 720`` to surround it with benign traffic.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from modelsiem.scenarios.base import Trace, Truth, Window, scenario
from modelsiem.scenarios.traffic import event_id, feedback, make_principal

_DAY = 86400.0
_BOT_AGENT = "python-requests/2.32"


def _account(rng: np.random.Generator, window: Window, age_seconds: float, prefix: str | None = None) -> dict[str, Any]:
    return make_principal(rng, f"acct-{event_id(rng)[:10]}", window.start - timedelta(seconds=float(age_seconds)),
                          prefix=prefix)


def _prefixes(rng: np.random.Generator, count: int) -> list[str]:
    return [".".join(str(int(x)) for x in rng.integers(1, 223, 3)) for _ in range(count)]


def burst_campaign(rng: np.random.Generator, window: Window, trace: Trace, *, accounts: int = 200,
                   minutes: float = 10.0, prefixes: int = 1, age_hours: float = 6.0,
                   creation_minutes: float = 10.0, confidence: tuple[float, float] = (0.97, 0.999),
                   start_fraction: float = 0.5, fingerprint: str = "fp-campaign-pharma-0042",
                   origin: str = "deals-pharma.example", name: str = "feedback_poisoning") -> None:
    """Burner accounts created together on ``prefixes`` /24 networks report one spam item as ham within ``minutes``."""
    start = window.seconds * start_fraction
    nets = ["203.0.113"] if prefixes == 1 else _prefixes(rng, prefixes)
    burners = []
    for _ in range(accounts):
        age = age_hours * 3600 + start + float(rng.uniform(0, creation_minutes * 60))
        who = _account(rng, window, age, prefix=nets[int(rng.integers(0, len(nets)))])
        who["user_agent"] = _BOT_AGENT
        burners.append(who)
    low, high = confidence
    for t, who in zip(np.sort(start + rng.uniform(0, minutes * 60, accounts)), burners, strict=True):
        trace.events.append(feedback(rng, window.at(t), who, fingerprint, "spam", "ham",
                                     float(rng.uniform(low, high)), origin))
    trace.truth.append(Truth(scenario=name, label="attack", technique="AML.T0020",
                             principals=[b["id"] for b in burners], fingerprints=[fingerprint],
                             start=window.at(start), end=window.at(start + minutes * 60)))


def slow_campaign(rng: np.random.Generator, window: Window, trace: Trace, *, reports: int = 60,
                  hours: float = 12.0, fresh_share: float = 0.5, fresh_days: tuple[float, float] = (0.5, 10.0),
                  aged_days: tuple[float, float] = (60.0, 1500.0), confidence: tuple[float, float] = (0.95, 0.995),
                  start_fraction: float = 0.1, fingerprint: str = "fp-campaign-loans-7781",
                  origin: str = "fastcash-loans.example", name: str = "feedback_poisoning_slow") -> None:
    """``reports`` reports over ``hours``, each from its own account: ``fresh_share`` of them new, the rest aged."""
    start = window.seconds * start_fraction
    item_confidence = float(rng.uniform(*confidence))
    accounts = []
    for t in np.sort(start + rng.uniform(0, hours * 3600, reports)):
        fresh = rng.random() < fresh_share
        age = float(rng.uniform(*(fresh_days if fresh else aged_days))) * _DAY
        # An account's age is counted at its report, so it is created `age` before it.
        who = _account(rng, window, age - t)
        accounts.append(who)
        spread = float(np.clip(item_confidence + rng.normal(0, 0.005), 0.5, 0.9999))
        trace.events.append(feedback(rng, window.at(t), who, fingerprint, "spam", "ham", spread, origin))
    trace.truth.append(Truth(scenario=name, label="attack", technique="AML.T0020",
                             principals=[a["id"] for a in accounts], fingerprints=[fingerprint],
                             start=window.at(start), end=window.at(start + hours * 3600)))


def organic_corrections(rng: np.random.Generator, window: Window, trace: Trace, *, reporters: int = 200,
                        hours: float = 3.0, confidence: tuple[float, float] = (0.55, 0.78),
                        new_user_share: float = 0.02, shared_network_share: float = 0.05,
                        start_fraction: float = 0.3, fingerprint: str = "fp-newsletter-weekly-0193",
                        origin: str = "news.cityclub.example", name: str = "organic_corrections") -> None:
    """Long-standing users correct a newsletter the model put in spam; corrections fade over ``hours``.

    ``new_user_share`` of them joined in the last two weeks and ``shared_network_share``
    sit behind a few shared networks (an office, a carrier NAT), as real users do.
    """
    start = window.seconds * start_fraction
    item_confidence = float(rng.uniform(*confidence))
    offices = _prefixes(rng, 3)
    users = []
    # Most recipients open a newsletter soon after delivery: exponential delays, cut at `hours`.
    delays = np.sort(np.minimum(rng.exponential(hours * 3600 / 4, reporters), hours * 3600))
    for t in start + delays:
        new = rng.random() < new_user_share
        age = float(rng.uniform(1, 14) if new else rng.uniform(90, 3000)) * _DAY
        office = offices[int(rng.integers(0, len(offices)))] if rng.random() < shared_network_share else None
        who = _account(rng, window, age - t, prefix=office)
        users.append(who)
        spread = float(np.clip(item_confidence + rng.normal(0, 0.02), 0.5, 0.9999))
        trace.events.append(feedback(rng, window.at(t), who, fingerprint, "spam", "ham", spread, origin))
    trace.truth.append(Truth(scenario=name, label="benign", principals=[u["id"] for u in users],
                             fingerprints=[fingerprint], start=window.at(start),
                             end=window.at(start + hours * 3600)))


@scenario("feedback_poisoning", "attack")
def feedback_poisoning(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """Fresh burner accounts on one /24 mass-report a confident spam campaign as not spam."""
    burst_campaign(rng, window, trace)


@scenario("feedback_poisoning_slow", "attack")
def feedback_poisoning_slow(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """Fresh and aged accounts on scattered addresses report one spam campaign as not spam, a few an hour."""
    slow_campaign(rng, window, trace)


@scenario("organic_corrections", "benign")
def organic_corrections_scenario(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """Long-standing, diverse users correct a newsletter the model marked as spam with moderate confidence."""
    organic_corrections(rng, window, trace)

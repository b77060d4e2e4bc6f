"""Realistic benign traffic with attack scenarios mixed in, with ground truth.

Each scenario is a function that draws events from a seeded numpy generator,
so a trace is reproducible from its seed. The ground truth names, per attack
scenario, the principals involved and the attack window.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np

Event = dict[str, Any]
MODEL = {"name": "spam-filter", "version": "2026.11"}
_AGENTS = ("mail-web/5.2", "mail-ios/17.4", "mail-android/14.1", "python-requests/2.32")


@dataclass
class Trace:
    events: list[Event] = field(default_factory=list)
    truth: list[dict[str, Any]] = field(default_factory=list)

    def sorted_events(self) -> list[Event]:
        return sorted(self.events, key=lambda e: (e["timestamp"], e["event_id"]))


@dataclass(frozen=True)
class Window:
    start: datetime
    minutes: int

    def at(self, seconds: float) -> str:
        return (self.start + timedelta(seconds=float(seconds))).isoformat().replace("+00:00", "Z")


def _eid(rng: np.random.Generator) -> str:
    return rng.bytes(12).hex()


def _hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _inference(rng: np.random.Generator, when: str, principal: dict[str, Any], text: str) -> Event:
    confidence = float(np.clip(rng.beta(8, 1.5), 0.5, 1.0))
    label = "spam" if rng.random() < 0.3 else "ham"
    return {
        "kind": "inference",
        "event_id": _eid(rng),
        "timestamp": when,
        "model": MODEL,
        "principal": principal,
        "input": {"hash": _hash(text), "tokens": int(rng.integers(20, 400))},
        "output": {"label": label, "confidence": round(confidence, 4)},
        "latency_ms": round(float(rng.gamma(4, 5)), 2),
    }


def _feedback(rng: np.random.Generator, when: str, principal: dict[str, Any], fingerprint: str,
              predicted: str, reported: str, confidence: float, origin: str) -> Event:
    return {
        "kind": "feedback",
        "event_id": _eid(rng),
        "timestamp": when,
        "model": MODEL,
        "principal": principal,
        "item": {"id": _eid(rng), "fingerprint": fingerprint, "origin": origin},
        "predicted_label": predicted,
        "reported_label": reported,
        "confidence": round(confidence, 4),
    }


def _principal(rng: np.random.Generator, name: str, created: datetime, prefix: str | None = None) -> dict[str, Any]:
    ip = f"{prefix or '.'.join(str(int(x)) for x in rng.integers(1, 223, 3))}.{int(rng.integers(1, 254))}"
    return {
        "id": name,
        "tenant": "acme-mail",
        "ip": ip,
        "user_agent": str(rng.choice(_AGENTS)),
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }


def benign(rng: np.random.Generator, window: Window, trace: Trace, principals: int = 40) -> None:
    """Ordinary use: each principal queries at its own steady rate and rarely disputes a verdict."""
    seconds = window.minutes * 60
    for n in range(principals):
        who = _principal(rng, f"user-{n:04d}", window.start - timedelta(days=int(rng.integers(30, 2000))))
        rate = float(rng.uniform(0.5, 12.0)) / 60.0  # queries per second
        for t in np.sort(rng.uniform(0, seconds, rng.poisson(rate * seconds))):
            trace.events.append(_inference(rng, window.at(t), who, f"{who['id']}:{t}"))
        for t in rng.uniform(0, seconds, rng.poisson(seconds / 1800)):
            spam = rng.random() < 0.5
            trace.events.append(_feedback(
                rng, window.at(t), who, f"fp-{int(rng.integers(0, 10**6)):06d}",
                "spam" if spam else "ham", "ham" if spam else "spam", float(rng.uniform(0.5, 0.95)),
                f"sender{int(rng.integers(0, 5000))}.example"))


def query_flood(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """One aged key that suddenly queries at ~40/s for five minutes, late in the window."""
    who = _principal(rng, "integration-7731", window.start - timedelta(days=400))
    seconds = window.minutes * 60
    for t in np.sort(rng.uniform(0, seconds, int(seconds / 20))):  # its usual ~3/min
        trace.events.append(_inference(rng, window.at(t), who, f"usual:{t}"))
    start = seconds * 0.6
    times = np.sort(start + rng.uniform(0, 300, 12_000))
    for i, t in enumerate(times):
        trace.events.append(_inference(rng, window.at(t), who, f"probe:{i}"))
    trace.truth.append({"scenario": "query_flood", "technique": "AML.T0024", "principals": [who["id"]],
                        "start": window.at(start), "end": window.at(start + 300)})


def feedback_poisoning(rng: np.random.Generator, window: Window, trace: Trace, accounts: int = 200) -> None:
    """Fresh burner accounts on one /24 mass-report a confident spam campaign as not spam."""
    seconds = window.minutes * 60
    start = seconds * 0.5
    created = window.start - timedelta(hours=6)
    burners = [_principal(rng, f"acct-{_eid(rng)[:10]}", created + timedelta(seconds=int(rng.integers(0, 600))),
                          prefix="203.0.113") for _ in range(accounts)]
    for t, who in zip(np.sort(start + rng.uniform(0, 600, accounts)), burners, strict=True):
        trace.events.append(_feedback(rng, window.at(t), who, "fp-campaign-pharma-0042", "spam", "ham",
                                      float(rng.uniform(0.97, 0.999)), "deals-pharma.example"))
    trace.truth.append({"scenario": "feedback_poisoning", "technique": "AML.T0020",
                        "principals": [b["id"] for b in burners],
                        "start": window.at(start), "end": window.at(start + 600)})


SCENARIOS: dict[str, Callable[[np.random.Generator, Window, Trace], None]] = {
    "query_flood": query_flood,
    "feedback_poisoning": feedback_poisoning,
}


def simulate(scenarios: list[str], *, minutes: int = 30, seed: int = 7,
             start: datetime | None = None, principals: int = 40) -> Trace:
    """Benign traffic over ``minutes`` plus the named attack scenarios."""
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        raise ValueError(f"unknown scenario(s) {sorted(unknown)}; known: {sorted(SCENARIOS)}")
    rng = np.random.default_rng(seed)
    if start is None:
        now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
        start = now - timedelta(minutes=minutes)
    window = Window(start, minutes)
    trace = Trace()
    benign(rng, window, trace, principals)
    for name in scenarios:
        SCENARIOS[name](rng, window, trace)
    return trace


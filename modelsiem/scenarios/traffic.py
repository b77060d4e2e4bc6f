"""Building blocks of simulated traffic: principals, inference and feedback events, benign background."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from modelsiem.scenarios.base import Event, Trace, Window

MODEL = {"name": "spam-filter", "version": "2026.11"}
_AGENTS = ("mail-web/5.2", "mail-ios/17.4", "mail-android/14.1", "python-requests/2.32")


def event_id(rng: np.random.Generator) -> str:
    return rng.bytes(12).hex()


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def inference(rng: np.random.Generator, when: str, principal: dict[str, Any], text: str, *,
              embedding: list[float] | None = None, scores: dict[str, float] | None = None) -> Event:
    """One inference call; ``scores`` (label -> probability) replace the drawn answer, ``embedding`` is sent as is."""
    if scores is None:
        confidence = float(np.clip(rng.beta(8, 1.5), 0.5, 1.0))
        label = "spam" if rng.random() < 0.3 else "ham"
        output: dict[str, Any] = {"label": label, "confidence": round(confidence, 4)}
    else:
        label = max(scores, key=scores.__getitem__)
        output = {"label": label, "confidence": round(scores[label], 4),
                  "scores": {k: round(v, 4) for k, v in scores.items()}}
    event = {
        "kind": "inference",
        "event_id": event_id(rng),
        "timestamp": when,
        "model": MODEL,
        "principal": principal,
        "input": {"hash": text_hash(text), "tokens": int(rng.integers(20, 400))},
        "output": output,
        "latency_ms": round(float(rng.gamma(4, 5)), 2),
    }
    if embedding is not None:
        event["input"]["embedding"] = embedding
    return event


def feedback(rng: np.random.Generator, when: str, principal: dict[str, Any], fingerprint: str,
              predicted: str, reported: str, confidence: float, origin: str) -> Event:
    return {
        "kind": "feedback",
        "event_id": event_id(rng),
        "timestamp": when,
        "model": MODEL,
        "principal": principal,
        "item": {"id": event_id(rng), "fingerprint": fingerprint, "origin": origin},
        "predicted_label": predicted,
        "reported_label": reported,
        "confidence": round(confidence, 4),
    }


def make_principal(rng: np.random.Generator, name: str, created: datetime, prefix: str | None = None, *,
                   ip: str | None = None, user_agent: str | None = None) -> dict[str, Any]:
    """An account; ``ip`` and ``user_agent`` pin what is otherwise drawn (a shared NAT address, a scripted client)."""
    if ip is None:
        ip = f"{prefix or '.'.join(str(int(x)) for x in rng.integers(1, 223, 3))}.{int(rng.integers(1, 254))}"
    return {
        "id": name,
        "tenant": "acme-mail",
        "ip": ip,
        "user_agent": user_agent if user_agent is not None else str(rng.choice(_AGENTS)),
        "created_at": created.isoformat().replace("+00:00", "Z"),
    }


def benign(rng: np.random.Generator, window: Window, trace: Trace, principals: int = 40) -> None:
    """Ordinary use: each principal queries at its own steady rate and rarely disputes a verdict."""
    seconds = window.minutes * 60
    for n in range(principals):
        who = make_principal(rng, f"user-{n:04d}", window.start - timedelta(days=int(rng.integers(30, 2000))))
        rate = float(rng.uniform(0.5, 12.0)) / 60.0  # queries per second
        for t in np.sort(rng.uniform(0, seconds, rng.poisson(rate * seconds))):
            trace.events.append(inference(rng, window.at(t), who, f"{who['id']}:{t}"))
        for t in rng.uniform(0, seconds, rng.poisson(seconds / 1800)):
            spam = rng.random() < 0.5
            trace.events.append(feedback(
                rng, window.at(t), who, f"fp-{int(rng.integers(0, 10**6)):06d}",
                "spam" if spam else "ham", "ham" if spam else "spam", float(rng.uniform(0.5, 0.95)),
                f"sender{int(rng.integers(0, 5000))}.example"))



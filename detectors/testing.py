"""Builders of contract events for detector examples and tests.

>>> inference("e1", 90, principal="key-1").timestamp.isoformat()
'2026-01-01T00:01:30+00:00'
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from stream.events import FeedbackEvent, InferenceEvent

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def inference(event_id: str, seconds: float, *, principal: str = "key-1", model: str = "spam-filter",
              **fields: Any) -> InferenceEvent:
    """An inference event ``seconds`` after ``T0``."""
    return InferenceEvent.validate({
        "event_id": event_id, "timestamp": T0 + timedelta(seconds=seconds),
        "model": {"name": model}, "principal": {"id": principal, **fields.pop("principal_fields", {})},
        **fields,
    })


def feedback(event_id: str, seconds: float, *, principal: str, fingerprint: str | None = "fp-1",
             predicted: str = "spam", reported: str = "ham", confidence: float | None = 0.99,
             model: str = "spam-filter", **fields: Any) -> FeedbackEvent:
    """A feedback report ``seconds`` after ``T0``."""
    return FeedbackEvent.validate({
        "event_id": event_id, "timestamp": T0 + timedelta(seconds=seconds),
        "model": {"name": model}, "principal": {"id": principal, **fields.pop("principal_fields", {})},
        "item": {"fingerprint": fingerprint}, "predicted_label": predicted, "reported_label": reported,
        "confidence": confidence, **fields,
    })

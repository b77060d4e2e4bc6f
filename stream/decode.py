"""Turn raw message bytes into a contract event, or a readable reason why not.

The reason goes to the dead-letter topic and to the operator's terminal, so it
names fields and constraints but never repeats the offending value: that value
may be an attacker's, and may be a megabyte long.

>>> decode(b'{"event_id": "e1"}', kind="inference").reason
'invalid inference event: timestamp: Field required; model: Field required; principal: Field required'
>>> decode(b'not json', kind="feedback").reason
'not valid JSON: expected ident at line 1 column 2'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import ValidationError

from stream.events import EVENT_ADAPTER, EVENT_TYPES, MAX_MESSAGE_BYTES, FeedbackEvent, InferenceEvent
from stream.signals import Signal

Kind = Literal["inference", "feedback", "signal"]
# Signals are decoded only where the kind is known (the worker's route topics): a message
# that names its own kind must be a contract event.
_TYPES: dict[str, type[InferenceEvent] | type[FeedbackEvent] | type[Signal]] = {**EVENT_TYPES, "signal": Signal}
_MAX_REASON = 1000


@dataclass(frozen=True, slots=True)
class Rejected:
    """Why a message is not a valid event."""

    reason: str


def decode(raw: bytes, kind: Kind | None = None) -> InferenceEvent | FeedbackEvent | Signal | Rejected:
    """Validate one message; ``kind`` is implied by the topic, or read from the event itself."""
    if len(raw) > MAX_MESSAGE_BYTES:
        return Rejected(f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        if kind is None:
            return EVENT_ADAPTER.validate_json(raw)
        return _TYPES[kind].model_validate_json(raw)
    except ValidationError as exc:
        return Rejected(_describe(exc, kind))


def _describe(exc: ValidationError, kind: Kind | None) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    if errors and errors[0]["type"] == "json_invalid":
        detail = str(errors[0]["msg"]).removeprefix("Invalid JSON: ")
        return _bounded(f"not valid JSON: {detail}")
    parts = []
    for err in errors:
        if err["type"] in ("union_tag_not_found", "union_tag_invalid"):
            parts.append("kind: must be 'inference' or 'feedback'")
            continue
        loc = ".".join(str(p) for p in err["loc"] if p not in ("inference", "feedback"))
        parts.append(f"{loc or 'event'}: {err['msg'].removeprefix('Value error, ')}")
    what = f"invalid {kind} event" if kind else "invalid event"
    return _bounded(f"{what}: " + "; ".join(parts))


def _bounded(text: str) -> str:
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 1] + "…"

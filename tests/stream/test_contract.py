"""Event contract v1 and the decoder that guards it."""

from __future__ import annotations

import orjson
import pytest

from stream.decode import Rejected, decode
from stream.events import MAX_MESSAGE_BYTES, FeedbackEvent, InferenceEvent

INFERENCE = {
    "event_id": "e-1",
    "timestamp": "2026-03-01T12:00:00.250+01:00",
    "model": {"name": "spam-filter", "version": "7"},
    "principal": {"id": "key-1", "tenant": "acme", "ip": "2001:DB8:0::1", "user_agent": "sdk/1",
                  "created_at": "2025-01-01T00:00:00Z"},
    "input": {"hash": "ab12", "embedding": [0.1, 0.2], "tokens": 12},
    "output": {"label": "spam", "confidence": 0.91, "scores": {"spam": 0.91, "ham": 0.09}, "tokens": 1},
    "latency_ms": 12.5,
}
FEEDBACK = {
    "event_id": "f-1",
    "timestamp": "2026-03-01T12:00:00Z",
    "model": {"name": "spam-filter"},
    "principal": {"id": "acct-9"},
    "inference_id": "e-1",
    "item": {"id": "msg-1", "fingerprint": "camp-1", "origin": "deals.example"},
    "predicted_label": "spam",
    "reported_label": "ham",
    "confidence": 0.99,
}


def raw(doc: dict) -> bytes:
    return orjson.dumps(doc)


def test_full_inference_event_parses() -> None:
    event = decode(raw(INFERENCE), "inference")
    assert isinstance(event, InferenceEvent)
    assert event.principal.ip == "2001:db8::1"  # canonical form
    assert event.timestamp.utcoffset().total_seconds() == 3600
    assert event.output.scores == {"spam": 0.91, "ham": 0.09}


def test_feedback_event_parses_and_knows_it_contradicts() -> None:
    event = decode(raw(FEEDBACK), "feedback")
    assert isinstance(event, FeedbackEvent) and event.contradicts_model


def test_unknown_fields_are_ignored() -> None:
    event = decode(raw({**INFERENCE, "surprise": {"deep": 1}, "model": {"name": "m", "arch": "x"}}), "inference")
    assert isinstance(event, InferenceEvent) and "surprise" not in event.to_dict()


def test_kind_selects_the_type_in_mixed_files() -> None:
    assert isinstance(decode(raw({**FEEDBACK, "kind": "feedback"})), FeedbackEvent)
    assert isinstance(decode(raw({**INFERENCE, "kind": "inference"})), InferenceEvent)
    assert "kind: must be" in decode(raw(INFERENCE)).reason


def test_kind_on_a_topic_must_match_the_topic() -> None:
    result = decode(raw({**FEEDBACK, "kind": "feedback"}), "inference")
    assert isinstance(result, Rejected) and result.reason == "invalid inference event: kind: must be 'inference' on this topic"


def test_an_unknown_kind_is_not_repeated() -> None:
    result = decode(raw({**INFERENCE, "kind": "\x1b[31mattacker-kind"}))
    assert isinstance(result, Rejected) and result.reason == "invalid event: kind: must be 'inference' or 'feedback'"


@pytest.mark.parametrize("value", ["0.5", True, None, [0.5]])
def test_numbers_are_json_numbers_not_coerced(value: object) -> None:
    result = decode(raw({**INFERENCE, "output": {"confidence": value}}), "inference")
    if value is None:
        assert isinstance(result, InferenceEvent) and result.output.confidence is None
    else:
        assert isinstance(result, Rejected) and result.reason.startswith("invalid inference event: output.confidence:")


def test_the_published_schema_leaves_kind_optional_and_states_the_bounds() -> None:
    schema = InferenceEvent.json_schema()
    event = schema["$defs"]["InferenceEvent"]
    assert "kind" not in event["required"] and {"event_id", "timestamp", "model", "principal"} <= set(event["required"])
    assert schema["$defs"]["Principal"]["properties"]["id"]["maxLength"] == 256
    assert "required" in FeedbackEvent.json_schema()["$defs"]["FeedbackEvent"]


@pytest.mark.parametrize(
    ("doc", "kind", "reason"),
    [
        ({k: v for k, v in INFERENCE.items() if k != "event_id"}, "inference", "event_id: required"),
        ({**INFERENCE, "timestamp": "2026-03-01T12:00:00"}, "inference", "timestamp: Expected `datetime` with a timezone component"),
        ({**INFERENCE, "timestamp": "yesterday"}, "inference", "timestamp:"),
        ({**INFERENCE, "principal": {"id": ""}}, "inference", "principal.id:"),
        ({**INFERENCE, "principal": {"id": "x" * 257}}, "inference", "principal.id:"),
        ({**INFERENCE, "principal": {"id": "k", "ip": "999.1.1.1"}}, "inference", "principal.ip: not an IPv4"),
        ({**INFERENCE, "output": {"confidence": 1.5}}, "inference", "output.confidence: Expected `float` <= 1.0"),
        ({**INFERENCE, "input": {"embedding": [0.0] * 4097}}, "inference", "input.embedding:"),
        ({**INFERENCE, "input": {"embedding": ["a"]}}, "inference", "input.embedding[0]: Expected `float`"),
        ({k: v for k, v in FEEDBACK.items() if k != "reported_label"}, "feedback", "reported_label: required"),
    ],
)
def test_invalid_events_are_rejected_with_a_readable_reason(doc: dict, kind: str, reason: str) -> None:
    result = decode(raw(doc), kind)  # type: ignore[arg-type]
    assert isinstance(result, Rejected)
    assert reason in result.reason


def test_reason_never_repeats_the_offending_value() -> None:
    secret = "attacker-chosen-\x1b[31m-value"
    result = decode(raw({**INFERENCE, "principal": {"id": "k", "ip": secret}, "timestamp": secret}), "inference")
    assert isinstance(result, Rejected) and "attacker-chosen" not in result.reason


@pytest.mark.parametrize("payload", [b"", b"not json", b"[1, 2]", b"\xff\xfe", b'{"a": 1'])
def test_non_json_and_non_objects_are_rejected(payload: bytes) -> None:
    assert isinstance(decode(payload, "inference"), Rejected)


_VALID = raw({**INFERENCE, "kind": "inference"})[:-1]  # an event's JSON without its closing brace, to append hostile fields to


@pytest.mark.parametrize(("payload", "reason"), [
    (_VALID + b', "x": ' + b"[" * 300_000 + b"]" * 300_000 + b"}", "not valid JSON: nested too deeply"),
    (_VALID + b', "x": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}", "not valid JSON: nested too deeply"),
    (_VALID.replace(b'"key-1"', b'"\xff\xfe"') + b"}", "not valid JSON: a string is not UTF-8"),
    (_VALID + b', "unknown": "\xff\xfe"}', "not valid JSON: a string is not UTF-8"),
    (_VALID.replace(b'"key-1"', b'"\\ud800"') + b"}", "not valid JSON"),
    (_VALID + b', "latency_ms": NaN}', "not valid JSON"),
    (_VALID + b', "latency_ms": 1e400}', "latency_ms: Number out of range"),
    (_VALID + b', "input": {"tokens": 123456789012345678901234567890}}', "input.tokens:"),
])
def test_hostile_json_is_rejected_with_a_reason_never_an_exception(payload: bytes, reason: str) -> None:
    assert len(payload) <= MAX_MESSAGE_BYTES
    for kind in ("inference", None):
        result = decode(payload, kind)  # type: ignore[arg-type]
        assert isinstance(result, Rejected) and reason in result.reason


def test_oversized_message_is_rejected_before_parsing() -> None:
    result = decode(b" " * (MAX_MESSAGE_BYTES + 1), "inference")
    assert isinstance(result, Rejected) and "exceeds" in result.reason


def test_long_user_agent_is_truncated_not_rejected() -> None:
    event = decode(raw({**INFERENCE, "principal": {"id": "k", "user_agent": "A" * 10_000}}), "inference")
    assert isinstance(event, InferenceEvent) and len(event.principal.user_agent) == 512


def test_reason_is_bounded() -> None:
    doc = {**INFERENCE, "output": {"scores": {f"l{i}": 2.0 for i in range(500)}}}
    result = decode(raw(doc), "inference")
    assert isinstance(result, Rejected) and len(result.reason) <= 1000

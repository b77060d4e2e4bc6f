"""One suite of checks run over every installed detector, plugins included."""

from __future__ import annotations

import copy
from collections.abc import Callable

import msgspec
import orjson
import pytest
from pydantic import ValidationError

from typing import get_args

from detectors.base import Detector, Finding, PartitionKey, partition_value
from detectors.registry import available
from detectors.testing import feedback, inference
from stream.alerts import clean
from stream.engine import Engine, MemoryStore

DETECTORS = available()


def _run(detector: Detector, events: list, between: Callable[[dict], dict] = lambda s: s) -> list[Finding]:
    """Findings of a detector over events, keyed as the stream would, with ``between`` applied to state."""
    states: dict[str, dict] = {}
    peers: dict[str, dict] = {}  # by model, for detectors that compare peers (one partition)
    partials: dict[str, dict] = {}  # by key, for detectors that tally (one partition)
    findings: list[Finding] = []
    for event in events:
        key = detector.key(event)
        if key is None:
            continue
        seen = None
        if detector.tallies:  # folded, and the partial's tally sent after every event
            partial = partials[key] = between(partials.get(key) or detector.new_partial())
            if detector.fold(partial, event, partition_value(detector.partition_key, event) or ""):
                seen = detector.tally(partial, "0")
        elif detector.digest_type is not None:
            seen = detector.digest(event, partition_value(detector.partition_key, event) or "")
        if detector.digest_type is not None:  # what the worker routes to the detector, through JSON
            if seen is None:
                continue
            event = msgspec.json.decode(seen.to_json(), type=detector.digest_type)
        state = between(states.get(key) or detector.new_state())
        if detector.compares_peers:
            shared = peers[event.model.name] = between(peers.get(event.model.name) or detector.new_peers())
            findings.extend(detector.update(state, event, shared))  # type: ignore[call-arg]
        else:
            findings.extend(detector.update(state, event))
        states[key] = state
    return findings


def check_metadata(cls: type[Detector]) -> None:
    m = cls.meta
    assert m.technique.id.startswith("AML.T") and m.tactic.id.startswith("AML.TA")
    assert m.references and m.false_positives and m.triage
    assert cls.partition_key in get_args(PartitionKey)


def check_examples_labelled(cls: type[Detector]) -> None:
    examples = cls.examples()
    assert any(e.alerts for e in examples), "needs at least one positive example"
    assert any(not e.alerts for e in examples), "needs at least one negative example"
    assert len({e.name for e in examples}) == len(examples)


def check_examples_behave(cls: type[Detector]) -> None:
    for example in cls.examples():
        findings = _run(cls(), example.events())
        assert bool(findings) == example.alerts, f"{example.name}: {len(findings)} findings"


def check_state_survives_serialization(cls: type[Detector]) -> None:
    """Checkpointing state as JSON after every event changes nothing: restarts are invisible."""
    for example in cls.examples():
        events = example.events()
        direct = _run(cls(), events)
        restored = _run(cls(), events, lambda s: orjson.loads(orjson.dumps(s)))
        assert direct == restored, example.name


def check_deterministic(cls: type[Detector]) -> None:
    for example in cls.examples():
        assert _run(cls(), example.events()) == _run(cls(), example.events()), example.name


def check_events_unchanged(cls: type[Detector]) -> None:
    for example in cls.examples():
        events = example.events()
        before = copy.deepcopy([e.to_dict() for e in events])
        _run(cls(), events)
        assert [e.to_dict() for e in events] == before


def check_unknown_parameter_rejected(cls: type[Detector]) -> None:
    with pytest.raises(ValidationError):
        cls(no_such_parameter=1)


def check_hostile_strings(cls: type[Detector]) -> None:
    """Control characters and bidi overrides in every attacker-chosen string never reach an alert."""
    nasty = "\x1b[2J\u202eevil\r\n\x00" + "\u0645" * 200
    events = [
        inference(f"i{i}", i * 0.01, principal=nasty, principal_fields={"user_agent": nasty * 10})
        for i in range(1000)
    ] + [
        feedback(f"f{i}", i, principal=f"{nasty}{i}", fingerprint=nasty, predicted=nasty[:100], reported="ham")
        for i in range(100)
    ] + [  # natural peers, then a cohort on one network getting unsure answers (a distributed extraction)
        inference(f"n{i}", 20 + i * 0.01, principal=f"user-{i}", output={"confidence": 0.97},
                  principal_fields={"ip": f"10.{i % 250}.{i // 250}.1",
                                    "created_at": f"2025-0{1 + i % 9}-1{i % 10}T00:00:00Z"}) for i in range(600)
    ] + [
        inference(f"s{i}", 30 + i * 0.01, principal=f"{nasty}{i % 20}", output={"confidence": 0.55},
                  principal_fields={"ip": f"203.0.113.{i % 20}", "user_agent": nasty * 10,
                                    "created_at": "2026-01-01T00:00:00Z"}) for i in range(300)
    ]
    # A detector that takes signals gets them from the installed building blocks, as in the stream.
    feeders = [d() for d in DETECTORS.values() if d.meta.building_block] if "signal" in cls.meta.event_kinds else []
    engine, store = Engine([cls(), *feeders]), MemoryStore()
    raised = 0
    for event in sorted(events, key=lambda e: e.timestamp):
        pending: list = [event]
        while pending:  # the event, then the signals and tallies it leads to
            step = engine.process_batch([(each, None) for each in pending], store)
            step.save(store)
            raised += len(step.alerts) + len(step.signals)
            for alert in step.alerts:
                text = orjson.dumps(alert).decode()
                assert "\\u001b" not in text and "\u202e" not in text and "\\u0000" not in text
                assert alert["message"] == clean(alert["message"], 1024)
            pending = [*step.signals, *engine.tallies(store)]
    assert raised, "the hostile traffic is an attack: it must still be detected"


CHECKS = [
    check_metadata,
    check_examples_labelled,
    check_examples_behave,
    check_state_survives_serialization,
    check_deterministic,
    check_events_unchanged,
    check_unknown_parameter_rejected,
    check_hostile_strings,
]


@pytest.mark.parametrize(
    ("cls", "check"),
    [(cls, check) for cls in DETECTORS.values() for check in CHECKS],
    ids=[f"{det_id}:{check.__name__}" for det_id in DETECTORS for check in CHECKS],
)
def test_detector(cls: type[Detector], check: Callable[[type[Detector]], None]) -> None:
    check(cls)


@pytest.mark.parametrize("cls", [c for c in DETECTORS.values() if c.digest_type], ids=lambda c: c.meta.id)
def test_digests_travel_unchanged(cls: type[Detector]) -> None:
    """A digest (or tally) read back from its JSON, as a route agent reads it, is the one the worker sent."""
    detector, sent = cls(), 0
    for example in cls.examples():
        for event in example.events():
            value = partition_value(cls.partition_key, event)
            if cls.tallies:
                partial = detector.new_partial()
                seen = detector.tally(partial, "3") if value and detector.fold(partial, event, value) else None
            else:
                seen = detector.digest(event, value) if value else None
            if seen is not None:
                assert msgspec.json.decode(seen.to_json(), type=cls.digest_type) == seen
                assert seen.rule == cls.meta.id
                sent += 1
    assert sent


def test_builtin_detectors_are_installed() -> None:
    assert {"query_rate", "feedback_surge"} <= set(DETECTORS)


def test_a_detector_learns_from_digests_only_of_its_own_tag_and_as_a_building_block() -> None:
    from detectors.extraction_groups import PrefixGroupDetector, PrefixTally
    from detectors.query_rate import QueryRateDetector

    with pytest.raises(TypeError, match="tagged with its id 'extraction_renamed'"):
        type("Renamed", (PrefixGroupDetector,), {"meta": PrefixGroupDetector.meta.model_copy(
            update={"id": "extraction_renamed"})})
    with pytest.raises(TypeError, match="only a building block"):
        type("Alerting", (QueryRateDetector,), {"digest_type": PrefixTally})
    with pytest.raises(TypeError, match="needs the digest_type of its tallies"):
        type("Untallied", (PrefixGroupDetector,), {"digest_type": None})

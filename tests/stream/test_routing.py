"""Routed messages carry each event's source position and its JSON as it arrived, in the current format and in
the older ones; a message of another shape on a route topic is rejected with a reason, never allowed to stop the
route agent."""

from __future__ import annotations

import orjson
from aiokafka.partitioner import DefaultPartitioner

from detectors.extraction_campaign import ExtractionCampaignDetector
from detectors.extraction_groups import CohortGroupDetector, CohortTally, PrefixGroupDetector, PrefixTally
from detectors.feedback_drift import FeedbackDriftDetector
from detectors.testing import feedback, inference
import pytest

from stream.app import _routes_by_kind, _taker
from stream.decode import Rejected, decode, digest_decoder
from stream.engine import Position
from stream.routing import letter, route_partition, routed_item, routed_messages, unpack
from stream.signals import Signal
from stream.skipped import Raw
from tests.seen_digest import PrefixSeenDetector


def test_a_routed_message_yields_its_events_as_they_arrived_with_their_source_positions():
    events = [b'{"a": 1}', '{"b": "\u00e9 \\" ]"}'.encode(), b' {"c": [1, {"d": null}]} ']
    items = [routed_item(Position("inf", 1, 41), "inference", events[0]),
             routed_item(Position('i"nf', 0, 7), "feedback", events[1]),
             routed_item(None, "signal", events[2])]
    [message] = routed_messages(items, 1024)
    assert orjson.loads(message)[1][:4] == ['i"nf', 0, 7, "feedback"]
    assert unpack(Raw("app-route-model", 3, 900, b"k", message)) == [
        (Position("inf", 1, 41), "inference", events[0]), (Position('i"nf', 0, 7), "feedback", events[1]),
        (None, "signal", events[2].strip())]  # whitespace around an event is JSON's, not the event's


def test_a_routed_message_from_an_older_worker_with_events_as_text_yields_the_same():
    body = orjson.dumps([["inf", 1, 41, "inference", '{"a": 1}'], ["fb", 0, 7, "feedback", '{"b": "\\u00e9"}']])
    got = unpack(Raw("app-route-model", 3, 900, b"k", body))
    assert got == [(Position("inf", 1, 41), "inference", b'{"a": 1}'),
                   (Position("fb", 0, 7), "feedback", '{"b": "\\u00e9"}'.encode())]


def test_a_single_event_from_an_older_worker_uses_its_source_header_or_its_own_position():
    with_header = Raw("route", 2, 5, None, b'{"a": 1}', [("modelsiem.source", b"events\x1f1\x1f99")])
    assert unpack(with_header) == [(Position("events", 1, 99), None, b'{"a": 1}')]
    assert unpack(Raw("route", 2, 5, None, b'{"a": 1}')) == [(Position("route", 2, 5), None, b'{"a": 1}')]


@pytest.mark.parametrize("value, headers, reason", [
    (b"not json", [], "not valid JSON"),
    (b'[["inf", 1, 41, "inference"]]', [], "item 0 is not"),
    (b'[["inf", 1, 41, "inference", "{\\ud800}"]]', [], "routed message is not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, [], "routed message"),
    (b'[["inf", 1, 41, "inference", ' + b"[" * 100_000 + b"]" * 100_000 + b"]]", [], "not valid JSON"),
    (b'{"a": 1}', [], None),
    (b'[["inf", 1, 41, "inference", "{}"], ["inf", 1, 42, "bogus-kind", "{}"]]', [], "item 1"),
    (b'[["inf", "1", 41, "inference", "{}"]]', [], "item 0"),
    (b'[["inf", true, 41, "inference", "{}"]]', [], "item 0"),
    (b'[["inf", 1, -41, "inference", "{}"]]', [], "item 0"),
    (b'[[null, 1, null, "signal", "{}"]]', [], "item 0 is not [topic, partition, offset, kind, event]: its position"),
    (b'[7]', [], "item 0"),
    (b'{"a": 1}', [("modelsiem.source", b"events\x1fone\x1f99")], "malformed modelsiem.source header"),
])
def test_a_message_of_another_shape_on_a_route_topic_is_rejected_with_a_reason(value, headers, reason):
    got = unpack(Raw("app-route-model", 3, 900, b"k", value, headers))
    if reason is None:  # one event per message, as the oldest workers routed it: the decoder judges the event
        assert got == [(Position("app-route-model", 3, 900), None, value)]
    else:
        assert isinstance(got, Rejected) and reason in got.reason


def test_a_routed_event_is_dead_lettered_as_its_own_text_at_its_source_position():
    routed = Raw("app-route-model", 3, 900, b"k", b"[...]")
    dead = letter(routed, Position("inf", 1, 41), b'{"a": 1}')
    assert (dead.topic, dead.partition, dead.offset, dead.value) == ("inf", 1, 41, b'{"a": 1}')
    # A signal has no source position: where it was read.
    signal = letter(routed, None, b'{"rule": "r"}')
    assert (signal.topic, signal.partition, signal.offset, signal.value) == ("app-route-model", 3, 900, b'{"rule": "r"}')


def test_routed_messages_are_split_by_size_and_a_large_event_travels_alone():
    items = [routed_item(Position("t", 0, n), "inference", b'"%s"' % (b"x" * size))
             for n, size in enumerate([400, 400, 300, 2000, 100])]
    messages = [orjson.loads(m) for m in routed_messages(items, 1000)]
    assert [[item[2] for item in message] for message in messages] == [[0, 1], [2], [3], [4]]


def test_a_route_takes_the_event_kinds_of_its_detectors_and_asks_those_with_their_own_key():
    class OnlyVip(FeedbackDriftDetector):
        def key(self, event):
            return event.model.name if event.principal.id == "vip" else None

    standard = _taker([FeedbackDriftDetector()])
    assert standard(feedback("f", 0, principal="p")) and not standard(inference("i", 0))
    custom = _taker([OnlyVip()])
    assert custom(feedback("f", 0, principal="vip")) and not custom(feedback("f", 0, principal="other"))


def test_a_routed_signal_has_no_source_position_and_decodes_as_a_signal():
    signal = Signal.validate({"timestamp": "2026-01-01T00:00:00Z", "model": {"name": "m"},
                                    "rule": "extraction_prefix", "subject": "203.0.113.0/24", "seq": 3,
                                    "magnitude": 90, "users": ["a"]})
    [message] = routed_messages([routed_item(None, "signal", signal.to_json())], 1024)
    [(position, kind, value)] = unpack(Raw("app-route-model", 0, 5, b"k", message))
    assert position is None and kind == "signal" and decode(value, kind) == signal
    # On the event topics a signal is not an event: the contract knows only inference and feedback.
    assert isinstance(decode(signal.to_json().decode().encode()), Rejected)


def test_the_campaign_route_takes_signals_and_no_inference_events():
    takes = _taker([FeedbackDriftDetector(), ExtractionCampaignDetector()])
    signal = Signal.validate({"timestamp": "2026-01-01T00:00:00Z", "model": {"name": "m"},
                                    "rule": "extraction_prefix", "subject": "s", "seq": 1, "magnitude": 1})
    assert takes(signal) and takes(feedback("f", 0, principal="p")) and not takes(inference("i", 0))


def test_routed_events_go_to_the_partition_kafkas_default_partitioner_gives_their_key():
    keys = ["spam-filter\x1f203.0.113.0/24", "spam-filter\x1fc:bc3aef3e468bae95", "m\x1ffp-1", "é\x1f" + "x" * 300]
    for key in keys:
        assert route_partition(key, 12) == DefaultPartitioner()(key.encode(), list(range(12)), [])
    assert len({route_partition(f"m\x1f10.{i}.0.0/24", 4) for i in range(100)}) == 4


def test_routes_are_resolved_by_event_kind_once():
    class OnlyVip(FeedbackDriftDetector):
        def key(self, event):
            return event.model.name if event.principal.id == "vip" else None

    by_kind = _routes_by_kind({"model": [FeedbackDriftDetector(), ExtractionCampaignDetector()],
                               "tenant": [OnlyVip()]})
    # Inference events: no detector of the model route takes them, and the tenant route's only detector is asked.
    [(key, value_of_key, ask, digesters)] = by_kind["inference"]
    assert key == "tenant" and ask(inference("i", 0, principal="vip")) and not ask(inference("i", 0))
    assert value_of_key(inference("i", 0, principal_fields={"tenant": "acme"})) == "acme" and digesters is None
    # Feedback and signals go to the model route by their kind alone; feedback is also put to the tenant route.
    assert [(key, ask is None) for key, _, ask, _ in by_kind["feedback"]] == [("model", True), ("tenant", False)]
    assert [(key, ask is None) for key, _, ask, _ in by_kind["signal"]] == [("model", True), ("tenant", False)]


def test_routes_of_detectors_that_learn_from_digests_carry_digests_and_of_those_that_tally_nothing():
    by_kind = _routes_by_kind({"ip_prefix": [PrefixSeenDetector(), PrefixGroupDetector()],
                               "cohort": [CohortGroupDetector()], "model": [ExtractionCampaignDetector()]})
    # The detectors that tally get tallies from the ingest: the cohort route takes no event at all.
    assert [(key, [d.meta.id for d in digesters]) for key, _, _, digesters in by_kind["inference"]] == [
        ("ip_prefix", ["prefix_seen"])]
    assert [(key, digesters) for key, _, _, digesters in by_kind["signal"]] == [("model", None)]


def test_a_tally_travels_in_a_routed_message_and_is_validated_by_the_route_it_reaches():
    detector = PrefixGroupDetector()
    event = inference("i1", 0, principal="p\u202e", principal_fields={"ip": "203.0.113.9"}, output={"confidence": 0.6})
    partial = detector.new_partial()
    assert detector.fold(partial, event, "203.0.113.0/24")
    seen = detector.tally(partial, "2")
    [message] = routed_messages([routed_item(None, "digest", seen.to_json())], 1024)
    [(position, kind, value)] = unpack(Raw("app-route-ip_prefix", 0, 5, None, message))
    assert position is None and kind == "digest"
    assert digest_decoder([PrefixTally])(value) == seen
    # Another route's detectors, or none that digests, reject it with a reason naming no value of it.
    assert digest_decoder([CohortTally])(value).reason == "invalid digest event: [0]: names no detector of this route"
    assert digest_decoder([])(value).reason == "invalid digest event: no detector of this route learns from digests"
    # A hostile writer's tally: an account past the identifier bound, a negative count.
    forged = value.replace('"p\u202e"'.encode(), b'"' + b"x" * 300 + b'"')
    assert forged != value
    assert digest_decoder([PrefixTally])(forged).reason.startswith("invalid digest event: [8][0]: Expected `str` of length")
    negative = orjson.dumps([*orjson.loads(value)[:6], -1, *orjson.loads(value)[7:]])
    assert digest_decoder([PrefixTally])(negative).reason == "invalid digest event: [6]: Expected `int` >= 0"

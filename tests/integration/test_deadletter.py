"""What goes wrong inside a running worker goes to the dead-letter topic, one record per event, and the worker goes on.

The detectors that fail are plugins, installed the way any detector is (an entry point of a distribution on the
worker's path), so this also runs the plugin mechanism end to end.
"""

from __future__ import annotations

import textwrap

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from connectors.kafka import DLQ_OFFSET, DLQ_REASON, DLQ_STAGE, DLQ_TOPIC, ensure_topics, publish_events
from detectors.query_rate import QueryRateDetector
from detectors.testing import feedback, inference
from tests.integration.conftest import committed_all, read_topic, wait_until

PLUGIN = '''
from detectors.extraction_groups import GroupTally, PrefixGroupDetector
from detectors.feedback_surge import FeedbackSurgeDetector
from detectors.query_rate import QueryRateDetector
from stream.digests import Digest


class FailsInline(QueryRateDetector):
    meta = QueryRateDetector.meta.model_copy(update={"id": "fails_inline"})

    def update(self, state, event):
        if event.principal.id == "explode":
            raise RuntimeError("inline detector bug")
        return super().update(state, event)


class FailsRouted(FeedbackSurgeDetector):
    meta = FeedbackSurgeDetector.meta.model_copy(update={"id": "fails_routed"})

    def update(self, state, event):
        if event.principal.id == "explode":
            raise RuntimeError("routed detector bug")
        return super().update(state, event)


class FailsDigestDigest(Digest, tag="fails_digest"):
    principal: str


class FailsDigest(PrefixGroupDetector):
    meta = PrefixGroupDetector.meta.model_copy(update={"id": "fails_digest"})
    digest_type = FailsDigestDigest
    tallies = False

    def digest(self, event, value):
        if event.principal.id == "explode-digest":
            raise RuntimeError("digest bug")
        return FailsDigestDigest(value=value, timestamp=event.timestamp, model=event.model,
                                 principal=event.principal.id)

    def update(self, state, seen, peers=None):
        if seen.principal == "explode-route":
            raise RuntimeError("digest route bug")
        return ()


class FailsTallyTally(GroupTally, tag="fails_tally"):
    pass


class FailsTally(PrefixGroupDetector):
    meta = PrefixGroupDetector.meta.model_copy(update={"id": "fails_tally"})
    digest_type = FailsTallyTally

    def fold(self, partial, event, value):
        if event.principal.id == "explode-fold":
            raise RuntimeError("fold bug")
        return super().fold(partial, event, value)

    def update(self, state, seen, peers=None):
        if "explode-tally" in seen.members:
            raise RuntimeError("tally route bug")
        return super().update(state, seen, peers)
'''


def _install_plugin(isolated) -> None:
    site = isolated.logs / "plugins"
    info = site / "failing_detectors-1.0.dist-info"
    info.mkdir(parents=True)
    (site / "failing_detectors.py").write_text(PLUGIN)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: failing-detectors\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent("""\
        [modelsiem.detectors]
        fails_inline = failing_detectors:FailsInline
        fails_routed = failing_detectors:FailsRouted
        fails_digest = failing_detectors:FailsDigest
        fails_tally = failing_detectors:FailsTally
        """))
    env = isolated.env
    env["PYTHONPATH"] = str(site) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["MODELSIEM_DETECTORS"] = '["query_rate", "fails_inline", "fails_routed", "fails_digest", "fails_tally"]'


def test_detector_failures_and_bad_routed_messages_are_dead_lettered_one_by_one(isolated, spawn):
    s = isolated.settings
    t = s.topics
    ensure_topics(s)
    _install_plugin(isolated)
    worker = spawn("worker")
    route, prefix_route = f"{s.app_id}-route-fingerprint", f"{s.app_id}-route-ip_prefix"
    wait_until(lambda: route in AdminClient(s.kafka.client_config()).list_topics(timeout=10).topics, 120,
               "the worker's route topic", worker.assert_running)

    inline_bug = inference("boom-1", 10, principal="explode").to_dict()
    routed_bug = feedback("boom-2", 11, principal="explode").to_dict()
    fine = [feedback(f"ok-{i}", 12 + i, principal=f"user-{i}").to_dict() for i in range(3)]
    # A digest plugin failing where it digests (at ingest), and where it learns from the digest (its route).
    answered = {"principal_fields": {"ip": "203.0.113.9"}, "output": {"confidence": 0.6}}
    digest_bug = inference("boom-3", 12, principal="explode-digest", **answered).to_dict()
    digest_route_bug = inference("boom-4", 13, principal="explode-route", **answered).to_dict()
    # A tally plugin failing where it folds (at ingest), and where it learns from the tally (its route).
    fold_bug = inference("boom-5", 14, principal="explode-fold", **answered).to_dict()
    tally_route_bug = inference("boom-6", 15, principal="explode-tally", **answered).to_dict()
    publish_events(s, [inline_bug, routed_bug, *fine, digest_bug, digest_route_bug, fold_bug, tally_route_bug])
    # What another writer may put on a route topic: not a routed message at all, and a routed event the
    # contract rejects.
    not_routed = b"this is not a routed message"
    invalid_event = b'{"event_id": 7}'
    forged = orjson.dumps([[t.feedback, 0, 12345, "feedback", invalid_event.decode()]])
    producer = Producer(s.kafka.client_config())
    producer.produce(route, value=not_routed, partition=0)
    producer.produce(route, value=forged, partition=1)
    assert producer.flush(30) == 0
    # After all that, a flood from one key: the worker must still raise its alert.
    threshold = QueryRateDetector.Params().min_rate
    publish_events(s, [inference(f"f{i}", 3600 + 10 + i * 0.05, principal="flooder").to_dict()
                       for i in range(threshold)])

    dead = wait_until(lambda: (m := read_topic(s, t.deadletter)) and len(m) >= 8 and m, 180,
                      "eight dead-letter records", worker.assert_running)
    records = {m.value(): {k: v.decode() for k, v in m.headers()} for m in dead}
    assert len(dead) == 8 and len(records) == 8, [m.value()[:80] for m in dead]

    inline = records[orjson.dumps(inline_bug)]
    assert inline[DLQ_STAGE] == "engine" and "RuntimeError: inline detector bug" in inline[DLQ_REASON]
    assert inline[DLQ_TOPIC] == t.inference
    # A routed event is dead-lettered as its own text at the place it first entered Kafka, not as the routed
    # message (which holds other events, applied) at its place on the route topic.
    routed = records[orjson.dumps(routed_bug)]
    assert routed[DLQ_STAGE] == "engine" and "RuntimeError: routed detector bug" in routed[DLQ_REASON]
    assert routed[DLQ_TOPIC] == t.feedback and int(routed[DLQ_OFFSET]) >= 0
    garbage = records[not_routed]
    assert garbage[DLQ_STAGE] == "route" and "not valid JSON" in garbage[DLQ_REASON] and garbage[DLQ_TOPIC] == route
    rejected = records[invalid_event]
    assert rejected[DLQ_STAGE] == "route" and "event_id: Expected `str`, got `int`" in rejected[DLQ_REASON]
    assert (rejected[DLQ_TOPIC], rejected[DLQ_OFFSET]) == (t.feedback, "12345")
    undigested = records[orjson.dumps(digest_bug)]
    assert undigested[DLQ_STAGE] == "engine" and "RuntimeError: digest bug" in undigested[DLQ_REASON]
    assert undigested[DLQ_TOPIC] == t.inference
    # What failed on its route is the digest, dead-lettered at the place its event entered Kafka.
    [(digest, where)] = [(v, h) for v, h in records.items() if b"explode-route" in v and b"fails_digest" in v]
    assert orjson.loads(digest)[:2] == ["fails_digest", "203.0.113.0/24"]
    assert where[DLQ_STAGE] == "engine" and "RuntimeError: digest route bug" in where[DLQ_REASON]
    assert where[DLQ_TOPIC] == t.inference and int(where[DLQ_OFFSET]) >= 0
    unfolded = records[orjson.dumps(fold_bug)]
    assert unfolded[DLQ_STAGE] == "engine" and "RuntimeError: fold bug" in unfolded[DLQ_REASON]
    # What failed on its route is the tally, which came from no one place: dead-lettered where it was read.
    [(tally, where)] = [(v, h) for v, h in records.items() if b"explode-tally" in v and b"fails_tally" in v]
    assert orjson.loads(tally)[:2] == ["fails_tally", "203.0.113.0/24"]
    assert where[DLQ_STAGE] == "engine" and "RuntimeError: tally route bug" in where[DLQ_REASON]
    assert where[DLQ_TOPIC] == prefix_route and int(where[DLQ_OFFSET]) >= 0

    alerts = wait_until(lambda: read_topic(s, t.alerts), 120, "the flood's alert", worker.assert_running)
    assert {orjson.loads(m.value())["user"]["name"] for m in alerts} == {"flooder"}
    # Both agents went past what they dead-lettered: every event and routed message is committed.
    wait_until(lambda: committed_all(s, s.app_id, [t.inference, t.feedback, route, prefix_route]), 120,
               "the worker to commit every message", worker.assert_running)

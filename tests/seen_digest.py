"""A building block that learns from a digest of each event (not from tallies), for the tests of that path."""

from __future__ import annotations

from detectors.base import Finding, State
from detectors.extraction_groups import PrefixGroupDetector
from detectors.sketches import answer_margin, content_of
from stream.digests import Digest
from stream.events import Ident


class SeenDigest(Digest, tag="prefix_seen"):
    principal: Ident
    event_id: Ident
    margin: float


class PrefixSeenDetector(PrefixGroupDetector):
    """Counts a prefix's answered queries from their digests; a finding every 50th."""

    meta = PrefixGroupDetector.meta.model_copy(update={"id": "prefix_seen"})
    tallies = False
    digest_type = SeenDigest

    def new_state(self) -> State:
        return {"n": 0}

    def digest(self, event, value):
        if not content_of(event) or answer_margin(event) is None:
            return None
        return SeenDigest(value=value, timestamp=event.timestamp, model=event.model, principal=event.principal.id,
                          event_id=event.event_id, margin=answer_margin(event))

    def update(self, state, seen, peers=None):
        state["n"] += 1
        peers["n"] += 1
        if state["n"] % 50:
            return ()
        return (Finding(subject=seen.value, severity="medium", risk_score=47, summary=f"{state['n']} queries",
                        magnitude=state["n"], evidence={"queries": state["n"]}, users=(seen.principal,)),)

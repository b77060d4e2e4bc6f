"""Runs of near-duplicate queries answered at the decision boundary (black-box evasion).

Keyed by principal. Decision-based evasion attacks (boundary attacks,
HopSkipJump) and stateful-detection evasions find an adversarial example by
asking many slightly perturbed copies of one input and reading where the answer
flips: their queries are near-duplicates of the previous few and their answers
have almost no margin between the top two classes. Natural traffic rarely
repeats an input, and rarely sits on the boundary.

Each query is a probe when

- its embedding is within ``near_duplicate`` relative distance of one of the
  last ``recent`` queries (or its ``input.hash`` repeats one of theirs) and the
  answer's margin is below ``low_margin``; or
- the event carries no embedding and the margin is below ``edge_margin``: with
  nothing to compare inputs by, only answers squarely on the boundary count.

A finding is raised when ``min_probes`` of the last ``window`` queries are
probes. The margin is top score minus runner-up (from ``output.scores``, else
``2 * confidence - 1``). Queries that carry no content at all fall back to their
rate (see :func:`detectors.sketches.opaque_burst`).

>>> from detectors.testing import inference
>>> det = BoundaryProbingDetector()
>>> state = det.new_state()
>>> def probe(i):
...     x = 1.0 + i * 1e-4
...     return inference(f"p{i}", i, input={"embedding": [x, 1.0, 1.0, 1.0]},
...                      output={"scores": {"spam": 0.51, "ham": 0.49}})
>>> findings = [f for i in range(30) for f in det.update(state, probe(i))]
>>> findings[0].evidence["probes_in_window"], findings[0].severity
(24, 'medium')
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from detectors.atlas import ATTACK_STAGING, BLACK_BOX_OPTIMIZATION, CRAFT_ADVERSARIAL_DATA
from detectors.base import AnyEvent, Detector, DetectorMeta, Example, Finding, State
from detectors.sketches import add_sample, answer_margin, any_within, content_of, opaque_burst, project
from detectors.testing import inference
from stream.events import InferenceEvent

__all__ = ["BoundaryProbingDetector"]

_SAMPLES = 10


class BoundaryProbingDetector(Detector):
    meta = DetectorMeta(
        id="boundary_probing",
        name="Near-duplicate queries probing the decision boundary",
        version=1,
        description=(
            "A principal sent a long run of near-duplicate queries whose answers sat on the "
            "decision boundary: the query pattern of decision-based black-box evasion attacks "
            "(boundary attack, HopSkipJump) searching for an adversarial example."
        ),
        tactic=ATTACK_STAGING,
        technique=CRAFT_ADVERSARIAL_DATA,
        subtechnique=BLACK_BOX_OPTIMIZATION,
        severity="medium",
        risk_score=47,
        event_kinds=frozenset({"inference"}),
        references=(
            "https://atlas.mitre.org/techniques/AML.T0043.001",
            "https://arxiv.org/abs/1907.05587",
            "https://arxiv.org/abs/1904.02144",
            "https://arxiv.org/abs/1712.04248",
        ),
        false_positives=(
            "A developer testing the model's robustness or calibration on purpose.",
            "A client retrying the same borderline input after timeouts (exact repeats of one hash).",
        ),
        triage=(
            "Look at the sample events: are the inputs minor edits of one another, and do the "
            "labels flip between them? Check whether the principal is a known red team, and "
            "what input the run converged on (it may be the adversarial example)."
        ),
    )
    partition_key = "principal"
    state_ttl = 6 * 3600.0

    class Params(Detector.Params):
        window: int = Field(default=40, ge=4, le=60, description="Most recent queries looked at.")
        min_probes: int = Field(default=24, ge=2, description="Probes among them that raise a finding.")
        recent: int = Field(default=4, ge=1, le=16, description="Previous queries a new one is compared with.")
        near_duplicate: float = Field(default=0.1, gt=0.0, description="Relative embedding distance of a near-duplicate.")
        low_margin: float = Field(default=0.25, gt=0.0, le=1.0)
        edge_margin: float = Field(default=0.05, gt=0.0, le=1.0)
        high_probes: int = Field(default=200, ge=1, description="Probes in the episode that make it high severity.")
        opaque_burst: int = Field(default=500, ge=1, description="Content-less queries in a minute that still alert.")

    def new_state(self) -> State:
        return {"mask": 0, "seen": 0, "hits": 0, "vectors": [], "hashes": [], "probes": 0, "ids": []}

    def update(self, state: State, event: AnyEvent) -> Iterable[Finding]:
        assert isinstance(event, InferenceEvent)
        p = self.params
        if not content_of(event):
            count = opaque_burst(state, event.epoch, p.opaque_burst)
            return (self._finding(event, state, "low", count, opaque=True),) if count else ()
        probe = self._is_probe(state, event)
        full = (1 << p.window) - 1
        dropped = (state["mask"] >> (p.window - 1)) & 1 if state["seen"] >= p.window else 0
        state["mask"] = ((state["mask"] << 1) | probe) & full
        state["seen"] = min(state["seen"] + 1, p.window)
        state["hits"] += probe - dropped
        if state["hits"] == 0:  # the run is over: the next one is a new run
            state["probes"], state["ids"] = 0, []
        if not probe:
            return ()
        add_sample(state["ids"], event.event_id, _SAMPLES)
        if state["hits"] < p.min_probes:
            return ()
        state["probes"] += 1 if state["probes"] else state["hits"]
        severity = "high" if state["probes"] >= p.high_probes else "medium"
        return (self._finding(event, state, severity, state["probes"]),)

    def _is_probe(self, state: State, event: InferenceEvent) -> int:
        p = self.params
        margin = answer_margin(event)
        vector = project(event)
        digest = event.input.hash
        # Nearness matters only for a low-margin answer, and most answers are not: the search is skipped for them.
        near = margin is not None and margin < p.low_margin and (
            (bool(digest) and digest in state["hashes"])
            or (vector is not None and any_within(vector, state["vectors"], p.near_duplicate)))
        if vector is not None:
            _push(state["vectors"], vector, p.recent)
        if digest:
            _push(state["hashes"], digest, p.recent)
        if margin is None:
            return 0
        if near:
            return 1
        return int(vector is None and margin < p.edge_margin)

    def _finding(self, event: InferenceEvent, state: State, severity: str, magnitude: int,
                 opaque: bool = False) -> Finding:
        p = self.params
        principal = event.principal.id
        summary = (
            f"sent {magnitude} queries in a minute that carry no input or answer to judge"
            if opaque else
            f"sent {state['hits']} near-duplicate or boundary queries among its last {state['seen']} "
            f"({state['probes']} in this run)"
        )
        return Finding(
            subject=principal,
            severity=severity,  # type: ignore[arg-type]
            risk_score={"low": 21, "medium": 47, "high": 73}[severity],
            summary=summary,
            magnitude=magnitude,
            evidence={
                "probes_in_window": state["hits"],
                "window_queries": state["seen"],
                "min_probes": p.min_probes,
                "probes_in_run": state["probes"],
                "near_duplicate_distance": p.near_duplicate,
                "low_margin": p.low_margin,
                "edge_margin": p.edge_margin,
                "opaque_queries_per_minute": magnitude if opaque else 0,
            },
            users=(principal,),
            ips=(event.principal.ip,) if event.principal.ip else (),
            event_ids=tuple(state["ids"]) or (event.event_id,),
            user=principal,
        )

    @classmethod
    def examples(cls) -> list[Example]:
        def walk(n: int, start: float = 0.0) -> list[AnyEvent]:
            return [inference(f"w{i}", start + i, input={"embedding": [1.0 + i * 1e-3, 2.0, -1.0, 0.5]},
                              output={"scores": {"spam": 0.52 - (i % 2) * 0.04, "ham": 0.48 + (i % 2) * 0.04}})
                    for i in range(n)]

        def natural(n: int) -> list[AnyEvent]:
            return [inference(f"n{i}", i * 7, input={"embedding": [((i * 7919) % 13) - 6.0, ((i * 104729) % 11) - 5.0,
                                                                   (i % 5) - 2.0, 1.0], "hash": f"h{i}"},
                              output={"scores": {"spam": 0.97, "ham": 0.03} if i % 3 else {"spam": 0.1, "ham": 0.9}})
                    for i in range(n)]

        return [
            Example("near-duplicate walk along the boundary", True, lambda: natural(30) + walk(60, start=1000)),
            Example("blind probing: answers on the boundary, no embedding", True,
                    lambda: [inference(f"b{i}", i, output={"confidence": 0.51}) for i in range(40)]),
            Example("natural confident traffic", False, lambda: natural(400)),
            Example("a few unsure answers among natural ones", False,
                    lambda: natural(100) + [inference(f"u{i}", 800 + i, output={"confidence": 0.52}) for i in range(10)]),
            Example("retries of one input answered confidently", False,
                    lambda: [inference(f"r{i}", i, input={"hash": "same"}, output={"confidence": 0.99})
                             for i in range(100)]),
        ]


def _push(values: list, value: object, limit: int) -> None:
    """Append to a list that keeps only its ``limit`` newest values."""
    values.append(value)
    if len(values) > limit:
        del values[0]

"""A rise in the share of a model's feedback that contradicts its confident predictions (drift).

Keyed by model. Each feedback report is a 0/1 observation: 1 when it disputes
a prediction made with at least ``min_confidence``. A Page-Hinkley test (as in
``river.drift.PageHinkley`` with ``mode="up"`` and no forgetting) watches their
mean: the cumulative sum of ``x - mean - delta`` minus its running minimum
alarms above ``threshold``. This catches what the per-item campaign detector
cannot: a campaign spread over many fingerprints (content rotated per report),
and a model whose verdicts users suddenly reject.

Three departures from river, and why:

- the state is a plain dict (river's detector is an object, and detector state
  must survive JSON checkpointing after every event);
- the mean starts from ``prior_rate`` worth ``prior_weight`` reports, so that a
  campaign arriving first (after a restart, or on a new model) is still a rise
  rather than the baseline; its memory is capped at ``memory`` reports, so that
  the baseline follows a model whose feedback legitimately changes;
- after an alarm only the cumulative sum restarts, not the mean: a campaign
  that goes on alarms again instead of becoming the new normal.

With ``prior_weight=0`` and an unbounded ``memory`` it alarms on the same report
as river's ``PageHinkley(mode="up", min_instances=1, alpha=1)`` (see the tests).

A drift names the items that dominate the latest confident disputes and their
reporters (all the latest disputes' reporters when no item dominates, as when a
campaign rotates its content): the model key keeps no more than that. It stays
at low severity: it says the feedback that will retrain the model has changed,
not who changed it.

>>> from detectors.testing import feedback
>>> det = FeedbackDriftDetector()
>>> state = det.new_state()
>>> usual = [feedback(f"u{i}", i * 60, principal=f"user-{i}", fingerprint=f"fp-{i}",
...                   confidence=0.9 if i % 4 == 0 else 0.6) for i in range(400)]
>>> campaign = [feedback(f"c{i}", 24000 + i, principal=f"burner-{i}", fingerprint="fp-pharma")
...             for i in range(60)]
>>> [f for e in usual for f in det.update(state, e)]
[]
>>> alarms = [f for e in campaign for f in det.update(state, e)]
>>> alarms[0].evidence["confident_disputes_since_change"], alarms[0].hashes, alarms[0].severity
(33, ('fp-pharma',), 'low')
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from pydantic import Field

from detectors.atlas import ERODE_MODEL_INTEGRITY, IMPACT
from detectors.base import AnyEvent, Detector, DetectorMeta, Example, Finding, State
from detectors.testing import feedback
from stream.events import FeedbackEvent

__all__ = ["FeedbackDriftDetector"]

# Recent reports kept to describe an alarm: their dispute share and dominant items.
_RECENT = 32
_MAX_HASHES = 4


class FeedbackDriftDetector(Detector):
    meta = DetectorMeta(
        id="feedback_drift",
        name="Rise in feedback contradicting confident predictions",
        version=1,
        description=(
            "The share of a model's feedback that disputes predictions it made with high "
            "confidence rose (Page-Hinkley test): the feedback that will retrain the model is "
            "being pushed against its verdicts, by a campaign spread over many items or by a "
            "sudden loss of quality."
        ),
        tactic=IMPACT,
        technique=ERODE_MODEL_INTEGRITY,
        severity="low",
        risk_score=21,
        event_kinds=frozenset({"feedback"}),
        references=(
            "https://atlas.mitre.org/techniques/AML.T0031",
            "https://riverml.xyz/latest/api/drift/PageHinkley/",
            "https://doi.org/10.1093/biomet/41.1-2.100",
        ),
        false_positives=(
            "A new model version that is confidently wrong on a class of items users care about.",
            "A popular legitimate sender misclassified with high confidence (its corrections "
            "dominate the feedback for a while).",
        ),
        triage=(
            "Check whether a per-item poisoning alert (feedback_surge) names the same items; if not, "
            "look at the recent disputes: many items with few reports each from new accounts is a "
            "campaign rotating its content, disputes of one sender by long-standing users is a "
            "quality problem. Hold retraining until it is explained."
        ),
    )
    partition_key = "model"
    # A model's baseline is worth keeping across a quiet week.
    state_ttl = 7 * 86400.0

    class Params(Detector.Params):
        min_confidence: float = Field(default=0.8, ge=0.0, le=1.0,
                                      description="A dispute counts only against a prediction this confident.")
        delta: float = Field(default=0.1, ge=0.0, le=1.0, description="Rise in the share tolerated per report.")
        threshold: float = Field(default=20.0, gt=0.0, description="Page-Hinkley alarm threshold (lambda).")
        prior_rate: float = Field(default=0.25, ge=0.0, le=1.0, description="Share assumed before any feedback.")
        prior_weight: int = Field(default=50, ge=0, description="Reports the prior is worth.")
        memory: int = Field(default=10_000, ge=1, description="Reports the baseline mean remembers.")

    params: Params

    def new_state(self) -> State:
        return {
            "seen": 0,
            "mean": self.params.prior_rate,
            "sum": 0.0,
            "min": 0.0,
            # Confident disputes since the cumulative sum was last at its minimum.
            "since_min": 0,
            # [disputed (0/1), fingerprint or origin, principal] of the latest reports.
            "recent": [],
        }

    @classmethod
    def examples(cls) -> list[Example]:
        def usual(n: int) -> list[AnyEvent]:
            # One report in four disputes a confident verdict, on items of its own.
            return [feedback(f"u{i}", i * 60, principal=f"user-{i}", fingerprint=f"fp-{i}",
                             confidence=0.9 if i % 4 == 0 else 0.6) for i in range(n)]

        return [
            Example("a campaign rotates its content: confident disputes on many items at once", True,
                    lambda: usual(200) + [feedback(f"c{i}", 12_000 + i, principal=f"burner-{i}",
                                                   fingerprint=f"fp-variant-{i}") for i in range(80)]),
            Example("one item disputed en masse after a steady baseline", True,
                    lambda: usual(200) + [feedback(f"p{i}", 12_000 + i, principal=f"burner-{i}")
                                          for i in range(80)]),
            Example("a steady share of confident disputes", False, lambda: usual(600)),
            Example("organic corrections the model was unsure about", False,
                    lambda: usual(200) + [feedback(f"o{i}", 12_000 + i * 20, principal=f"user-{i}",
                                                   fingerprint="fp-newsletter", confidence=0.65)
                                          for i in range(200)]),
        ]

    def update(self, state: State, event: AnyEvent) -> Iterable[Finding]:
        if not isinstance(event, FeedbackEvent):
            return ()
        p = self.params
        disputed = int(event.contradicts_model and event.confidence is not None
                       and event.confidence >= p.min_confidence)
        recent: list[list[Any]] = state["recent"]
        recent.append([disputed, event.item.fingerprint or event.item.origin or "", event.principal.id])
        del recent[:-_RECENT]

        state["seen"] += 1
        baseline = state["mean"]
        state["mean"] += (disputed - state["mean"]) / min(p.prior_weight + state["seen"], p.memory)
        state["sum"] += disputed - state["mean"] - p.delta
        state["since_min"] += disputed
        if state["sum"] < state["min"]:
            state["min"], state["since_min"] = state["sum"], 0
        statistic = state["sum"] - state["min"]
        if statistic <= p.threshold:
            return ()
        finding = self._finding(state, event, baseline, statistic)
        state["sum"] = state["min"] = 0.0
        state["since_min"] = 0
        return (finding,)

    def _finding(self, state: State, event: FeedbackEvent, baseline: float, statistic: float) -> Finding:
        p = self.params
        recent = state["recent"]
        share = sum(r[0] for r in recent) / len(recent)
        disputed_items = Counter(r[1] for r in recent if r[0] and r[1])
        # Items behind at least a quarter of the latest reports: what an analyst opens first.
        dominant = tuple(item for item, n in disputed_items.most_common(_MAX_HASHES) if 4 * n >= len(recent))
        reporters = [r[2] for r in recent if r[0] and (not dominant or r[1] in dominant)]
        return Finding(
            subject=event.model.name,
            severity=self.meta.severity,
            risk_score=self.meta.risk_score,
            summary=(f"received feedback disputing its confident predictions in {share:.0%} of the last "
                     f"{len(recent)} reports, against a baseline of {baseline:.0%}"),
            magnitude=float(state["since_min"]),
            evidence={
                "confident_disputes_since_change": state["since_min"],
                "recent_dispute_share": round(share, 3),
                "baseline_dispute_share": round(baseline, 3),
                "page_hinkley_statistic": round(statistic, 2),
                "threshold": p.threshold,
                "delta": p.delta,
                "min_confidence": p.min_confidence,
                "reports_seen": state["seen"],
                "distinct_items_disputed": len(disputed_items),
            },
            users=tuple(dict.fromkeys(reporters)),
            hashes=dominant,
        )

"""Surge of feedback contradicting confident predictions on one item (poisoning).

Keyed by the reported item's fingerprint (its origin when there is none). Counts,
over a sliding event-time window, the reports whose label contradicts a
prediction the model made with high confidence, and the distinct principals
making them. Many reporters disputing one confidently classified item at once is
what a mass "not spam" campaign to retrain a filter looks like; organic
corrections are spread over time and over items.

>>> from datetime import datetime, timedelta, timezone
>>> from stream.events import FeedbackEvent
>>> det = FeedbackSurgeDetector(min_reports=5, min_reporters=5)
>>> state, t0 = det.new_state(), datetime(2026, 1, 1, tzinfo=timezone.utc)
>>> def report(i):
...     return FeedbackEvent(event_id=f"f{i}", timestamp=t0 + timedelta(seconds=i),
...                          model={"name": "spam-filter"}, principal={"id": f"burner-{i}"},
...                          item={"fingerprint": "camp-1"}, predicted_label="spam",
...                          reported_label="ham", confidence=0.99)
>>> findings = [f for i in range(6) for f in det.update(state, report(i))]
>>> [f.evidence["contradicting_reports"] for f in findings], findings[-1].hashes
([5, 6], ('camp-1',))
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import Field

from detectors.base import AnyEvent, AtlasRef, Detector, DetectorMeta, Example, Finding, State
from detectors.testing import feedback
from stream.events import FeedbackEvent

__all__ = ["FeedbackSurgeDetector"]

_SAMPLES = 5


class FeedbackSurgeDetector(Detector):
    meta = DetectorMeta(
        id="feedback_surge",
        name="Surge of feedback contradicting confident predictions",
        version=1,
        description=(
            "Many principals reported one item (fingerprint or origin) with a label that "
            "contradicts a high-confidence prediction, within a short window: the pattern of "
            "burner accounts mass-reporting spam as not spam to retrain a filter."
        ),
        tactic=AtlasRef(id="AML.TA0003", name="Resource Development"),
        technique=AtlasRef(id="AML.T0020", name="Poison Training Data"),
        severity="medium",
        risk_score=47,
        event_kinds=frozenset({"feedback"}),
        references=(
            "https://atlas.mitre.org/techniques/AML.T0020",
            "https://www.usenix.org/legacy/event/leet08/tech/full_papers/nelson/nelson.pdf",
        ),
        false_positives=(
            "A legitimate sender (a newsletter) misclassified by the model and corrected by "
            "many real users; its reports usually come from aged, diverse accounts.",
        ),
        triage=(
            "Look at the reporting accounts: creation dates, shared IP prefixes and user "
            "agents, and whether they do anything but report. Exclude the listed feedback "
            "events from retraining until the item is reviewed."
        ),
    )
    partition_key = "fingerprint"

    class Params(Detector.Params):
        window_seconds: int = Field(default=600, ge=60, le=86400)
        min_reports: int = Field(default=20, ge=1)
        min_reporters: int = Field(default=10, ge=1)
        min_confidence: float = Field(default=0.8, ge=0.0, le=1.0)
        high_reporters: int = Field(default=50, ge=1, description="Reporters that make it high severity.")
        max_reporters: int = Field(default=500, ge=1, description="Bound on reporters kept per item.")

    def new_state(self) -> State:
        # reports: [[epoch, principal], ...] in arrival order; the window drops the old ones.
        return {"reports": [], "ids": [], "ips": []}

    @classmethod
    def examples(cls) -> list[Example]:
        return [
            Example("burner accounts mass-report a spam campaign as ham", True,
                    lambda: [feedback(f"b{i}", i * 10, principal=f"burner-{i}") for i in range(30)]),
            Example("organic corrections spread over hours, moderate confidence", False,
                    lambda: [feedback(f"o{i}", i * 700, principal=f"user-{i}", confidence=0.65)
                             for i in range(30)]),
            Example("reports that agree with the model", False,
                    lambda: [feedback(f"a{i}", i * 5, principal=f"user-{i}", reported="spam")
                             for i in range(50)]),
            Example("one account reporting the same item over and over", False,
                    lambda: [feedback(f"r{i}", i * 5, principal="user-1") for i in range(50)]),
        ]

    def update(self, state: State, event: AnyEvent) -> Iterable[Finding]:
        if not isinstance(event, FeedbackEvent) or not event.contradicts_model:
            return ()
        p = self.params
        if event.confidence is not None and event.confidence < p.min_confidence:
            return ()
        now = event.timestamp.timestamp()
        reports = [r for r in state["reports"] if r[0] > now - p.window_seconds]
        if len(reports) >= p.max_reporters * 4:
            reports = reports[-p.max_reporters * 4 + 1 :]
        reports.append([now, event.principal.id])
        state["reports"] = reports
        if len(state["ids"]) < _SAMPLES:
            state["ids"].append(event.event_id)
        if event.principal.ip and len(state["ips"]) < _SAMPLES and event.principal.ip not in state["ips"]:
            state["ips"].append(event.principal.ip)

        reporters = list(dict.fromkeys(r[1] for r in reports))[: p.max_reporters]
        if len(reports) < p.min_reports or len(reporters) < p.min_reporters:
            return ()
        item = event.item.fingerprint or event.item.origin or ""
        high = len(reporters) >= p.high_reporters
        return (
            Finding(
                subject=item,
                severity="high" if high else self.meta.severity,
                risk_score=73 if high else self.meta.risk_score,
                summary=(
                    f"{len(reporters)} principals reported {event.predicted_label!r} items as "
                    f"{event.reported_label!r} {len(reports)} times within {p.window_seconds} s"
                ),
                magnitude=len(reports),
                evidence={
                    "contradicting_reports": len(reports),
                    "distinct_reporters": len(reporters),
                    "window_seconds": p.window_seconds,
                    "min_confidence": p.min_confidence,
                    "predicted_label": event.predicted_label,
                    "reported_label": event.reported_label,
                },
                users=tuple(reporters),
                ips=tuple(state["ips"]),
                hashes=(item,),
                event_ids=tuple(state["ids"]),
            ),
        )

"""Coordinated feedback on one item that contradicts the model's confident verdict (poisoning campaign).

Keyed by the reported item's fingerprint (its origin when there is none). Only
*confident disputes* count: reports whose label contradicts a prediction the
model made with at least ``min_confidence``. Organic corrections concern items
the model was unsure about; a campaign must overturn a confident verdict, or
retraining would not need it.

Within a sliding event-time window (a day by default, so that a slow campaign
of a few reports an hour accumulates like a burst of hundreds in minutes), the
reporters are profiled (:mod:`detectors.reporters`) and flagged on two kinds of
evidence: *account* evidence (a fresh account, or one created in the same hour
as another reporter's) and *network* evidence (a /24 shared with another
reporter). Genuine users show each at some base rate ``p0``, a campaign's
accounts at a higher rate ``p1``; for each kind the detector keeps Wald's
sequential log-likelihood ratio over the reporters it could assess::

    llr = flagged * ln(p1 / p0) + unflagged * ln((1 - p1) / (1 - p0))

Each ratio has its own threshold: the lowest that genuine reporters (flagged
at ``p0``) reach within the ``max_reports`` reporters a window can hold, from
the ``min_reports``-th on, with probability at most ``max_false_alarm / 2``,
computed exactly by dynamic programming over (assessed, flagged) when the
detector is built, so the two together stay within ``max_false_alarm``.
Wald's ``ln(2 / max_false_alarm)`` bounds the same chance over an unbounded
run but ignores how far a crossing overshoots; on the binomial lattice it spends
only about 60 % of the budget, so the exact threshold (about 7.0 instead of 7.6
with the defaults) decides about one report earlier at the same false-alarm
rate. (Neither bound covers a window sliding over a longer genuine stream,
whose expiring reports give the test fresh starts; the budget is per window-full.)
Network evidence has its own, higher base rate because offices and carrier
NATs put real users on one /24.

- **medium** (poisoning campaign): at least ``min_reports`` confident disputes
  and either ratio above its threshold. From then on every dispute of the item is
  a campaign report: the window's earlier reports and every later one are
  handed back for quarantine (``Finding.quarantine``, each id once);
- **high**: the campaign has ``high_reporters`` flagged accounts;
- **low** (model quality): ``volume_reporters`` distinct principals disputed
  confident verdicts but look genuine: the model is confidently wrong on a
  popular item, or a campaign uses aged accounts. Nothing is quarantined, since
  genuine corrections are what retraining needs.

Once an item alerted, every later confident dispute updates its alert, naming
the reporters (up to ``max_named``) in ``related.user``; the engine re-sends
the alert whenever it names 8 % more accounts, so the latest revision names
nearly all of them. Reports without the model's confidence are
ignored: they cannot show that a confident verdict was disputed.

State per item is bounded: ``max_reports`` reports in the window (the
quarantine buffer: a campaign's reports older than that, or than the window,
when it is detected are not quarantined) and ``max_named`` named accounts;
with the longest identifiers the contract allows that stays under 1 MiB.

>>> from detectors.testing import feedback
>>> det = FeedbackSurgeDetector()
>>> state = det.new_state()
>>> burners = [feedback(f"f{i}", i * 5, principal=f"burner-{i}", principal_fields={
...     "ip": f"203.0.113.{i}", "created_at": "2025-12-31T20:00:00Z"}) for i in range(13)]
>>> findings = [f for e in burners for f in det.update(state, e)]
>>> first = findings[0]
>>> first.severity, first.evidence["confident_disputes"], first.evidence["account_flagged_reporters"]
('medium', 12, 12)
>>> len(first.quarantine), findings[1].quarantine, len(findings[1].users)
(12, ('f12',), 13)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from detectors.atlas import POISON_TRAINING_DATA, RESOURCE_DEVELOPMENT
from detectors.base import SEVERITY_RANK, AnyEvent, Detector, DetectorMeta, Example, Finding, Severity, State
from detectors.reporters import Profile, ReporterWindow
from detectors.testing import feedback
from stream.events import FeedbackEvent

__all__ = ["FeedbackSurgeDetector"]

_SAMPLES = 5
_MAX_IPS = 20
_DAY = 86400
_RISK: dict[Severity, int] = {"low": 21, "medium": 47, "high": 73}


class _Sprt:
    """Wald's log-likelihood ratio of k flagged among n reporters: campaign (rate p1) against genuine (p0)."""

    def __init__(self, p0: float, p1: float) -> None:
        self.flagged = math.log(p1 / p0)
        self.unflagged = math.log((1 - p1) / (1 - p0))

    def llr(self, flagged: int, assessed: int) -> float:
        return flagged * self.flagged + (assessed - flagged) * self.unflagged


def _crossing(p0: float, p1: float, threshold: float, horizon: int, first: int) -> float:
    """Exact chance that genuine reporters (each flagged with chance ``p0``) drive the llr to ``threshold``.

    A dynamic programme over (assessed, flagged) up to ``horizon`` reporters, the llr only
    checked from the ``first``-th on (the ``min_reports`` floor).
    """
    sprt = _Sprt(p0, p1)
    alive = np.zeros(horizon + 1)
    alive[0] = 1.0
    crossed = 0.0
    for n in range(1, horizon + 1):
        alive[1:n + 1] = alive[1:n + 1] * (1 - p0) + alive[:n] * p0
        alive[0] *= 1 - p0
        if n >= first:
            # The llr grows with the flagged count: the crossing states are those from the first crossing one.
            k = max(0, math.ceil((threshold - n * sprt.unflagged) / (sprt.flagged - sprt.unflagged) - 1e-9))
            if k <= n:
                crossed += float(alive[k:n + 1].sum())
                alive[k:n + 1] = 0.0
    return crossed


@functools.lru_cache(maxsize=32)
def _threshold(p0: float, p1: float, budget: float, horizon: int, first: int) -> float:
    """The lowest llr threshold that genuine reporters reach within ``horizon`` with chance at most ``budget``.

    Wald's ``ln(1 / budget)`` holds however long the test runs but ignores how far a
    crossing overshoots the threshold; on the lattice of a binomial test the exact chance is
    several times lower. The window never holds more than ``horizon`` reporters, so the exact
    chance over that horizon is the budget that matters; never above Wald's bound.
    """
    high = math.log(1 / budget)
    low = 0.0
    for _ in range(40):
        mid = (low + high) / 2
        if _crossing(p0, p1, mid, horizon, first) <= budget:
            high = mid
        else:
            low = mid
    return high


def _reporter(i: int, *, network: str = "203.0.113", created: str = "2025-12-31T20:00:00Z") -> dict[str, str]:
    return {"ip": f"{network}.{i % 250 + 1}", "created_at": created}


def _aged(i: int) -> dict[str, str]:
    # Long-standing users on scattered networks, created years apart.
    return {"ip": f"{10 + i}.{i * 7 % 250}.{i * 13 % 250}.9",
            "created_at": f"{2010 + i % 14}-0{i % 9 + 1}-15T08:00:00Z"}


class FeedbackSurgeDetector(Detector):
    meta = DetectorMeta(
        id="feedback_surge",
        name="Feedback-poisoning campaign on one item",
        version=3,
        description=(
            "Reporters disputed a prediction the model made with high confidence on one item "
            "(fingerprint or origin), and too many of them look like burner accounts (fresh, created "
            "in a batch, or sharing a network) for genuine users: the pattern of a campaign that "
            "mass-reports spam as not spam to retrain a filter."
        ),
        tactic=RESOURCE_DEVELOPMENT,
        technique=POISON_TRAINING_DATA,
        severity="medium",
        risk_score=47,
        event_kinds=frozenset({"feedback"}),
        references=(
            "https://atlas.mitre.org/techniques/AML.T0020",
            "https://www.usenix.org/legacy/event/leet08/tech/full_papers/nelson/nelson.pdf",
            "https://elie.net/blog/ai/attacks-against-machine-learning-an-overview/",
        ),
        false_positives=(
            "A legitimate sender misclassified with high confidence and corrected by many users who "
            "recently joined, for example after a sign-up drive: check whether the accounts do "
            "anything but report.",
            "Users behind one carrier NAT or office network reporting the same item.",
            "Low severity only: a popular item the model is confidently wrong about, corrected by "
            "genuine users; a model-quality finding, not an attack.",
        ),
        triage=(
            "Open the item and confirm it is spam (or the class the model gave it). Look at the named "
            "accounts: creation dates, shared networks and user agents, and whether they do anything "
            "but report. The quarantined feedback ids (topic modelsiem.quarantine) must stay out of "
            "retraining until the item is reviewed; suspend the accounts if they are burners."
        ),
    )
    partition_key = "fingerprint"
    # Idle for longer than the longest window: nothing in the window would be left anyway.
    state_ttl = 2 * _DAY
    # A slow campaign reports a few times an hour over a day: one alert for all of it.
    episode_gap = _DAY

    class Params(Detector.Params):
        window_seconds: int = Field(default=_DAY, ge=600, le=2 * _DAY)
        min_confidence: float = Field(default=0.8, ge=0.0, le=1.0,
                                      description="A dispute counts only against a prediction this confident.")
        min_reports: int = Field(default=12, ge=1, description="Confident disputes before any campaign finding.")
        fresh_days: float = Field(default=14.0, gt=0, description="Accounts younger than this are fresh.")
        batch_seconds: int = Field(default=3600, ge=60, description="Accounts created in one such slot are a batch.")
        account_base_rate: float = Field(default=0.1, gt=0, lt=1,
                                         description="Share of genuine reporters with fresh or batch-created accounts.")
        account_campaign_rate: float = Field(default=0.4, gt=0, lt=1,
                                             description="The same share among a campaign's reporters.")
        network_base_rate: float = Field(default=0.3, gt=0, lt=1,
                                         description="Share of genuine reporters sharing a /24 with another.")
        network_campaign_rate: float = Field(default=0.8, gt=0, lt=1,
                                             description="The same share among a campaign's reporters.")
        max_false_alarm: float = Field(default=1e-3, gt=0, lt=1,
                                       description="Chance that genuine reporters ever look like a campaign.")
        high_reporters: int = Field(default=50, ge=1, description="Flagged reporters that make a campaign high.")
        volume_reporters: int = Field(default=50, ge=1,
                                      description="Genuine-looking reporters that make a low model-quality finding.")
        max_reports: int = Field(default=500, ge=10, le=5000, description="Reports kept per item (state bound).")
        max_named: int = Field(default=1500, ge=1, le=5000, description="Accounts named in one alert (state bound).")

        @model_validator(mode="after")
        def _rates(self) -> FeedbackSurgeDetector.Params:
            if self.account_campaign_rate <= self.account_base_rate:
                raise ValueError("account_campaign_rate must be above account_base_rate")
            if self.network_campaign_rate <= self.network_base_rate:
                raise ValueError("network_campaign_rate must be above network_base_rate")
            return self

    params: Params

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        p = self.params
        self._account = _Sprt(p.account_base_rate, p.account_campaign_rate)
        self._network = _Sprt(p.network_base_rate, p.network_campaign_rate)
        # Two tests, each at half the false-alarm budget, calibrated exactly over the window's bound.
        budget = p.max_false_alarm / 2
        self._thresholds = (
            _threshold(p.account_base_rate, p.account_campaign_rate, budget, p.max_reports, p.min_reports),
            _threshold(p.network_base_rate, p.network_campaign_rate, budget, p.max_reports, p.min_reports),
        )

    def new_state(self) -> State:
        return {
            "window": ReporterWindow.new(),
            # Set once the item alerted: the highest severity so far, the accounts named
            # (a dict as an ordered set), sample addresses, and whether it is a campaign.
            "severity": None,
            "campaign": False,
            "named": {},
            "ips": [],
            "quarantined": 0,
        }

    @classmethod
    def examples(cls) -> list[Example]:
        # The burst comes last among the positives: its alert is the one tests/stream/test_alerts.py inspects.
        return [
            Example("a slow campaign: fresh and aged accounts on scattered networks, a few reports an hour", True,
                    lambda: [feedback(f"s{i}", i * 1500, principal=f"acct-{i}", fingerprint="fp-2",
                                      principal_fields=_aged(i) if i % 2 else _reporter(i, network=f"100.{i}.7"))
                             for i in range(30)]),
            Example("long-standing users correct a confident verdict: low model-quality finding only", True,
                    lambda: [feedback(f"q{i}", i * 30, principal=f"user-{i}", fingerprint="fp-4",
                                      principal_fields=_aged(i)) for i in range(60)]),
            Example("burner accounts from one /24, created together, mass-report a spam campaign as ham", True,
                    lambda: [feedback(f"b{i}", i * 10, principal=f"burner-{i}", principal_fields=_reporter(i))
                             for i in range(30)]),
            Example("organic corrections of a newsletter the model was unsure about", False,
                    lambda: [feedback(f"o{i}", i * 60, principal=f"user-{i}", fingerprint="fp-3", confidence=0.7,
                                      principal_fields=_aged(i)) for i in range(100)]),
            Example("reports that agree with the model", False,
                    lambda: [feedback(f"a{i}", i * 5, principal=f"burner-{i}", reported="spam",
                                      principal_fields=_reporter(i)) for i in range(50)]),
            Example("one account reporting the same item over and over", False,
                    lambda: [feedback(f"r{i}", i * 5, principal="user-1", principal_fields=_reporter(1))
                             for i in range(50)]),
        ]

    def update(self, state: State, event: AnyEvent) -> Iterable[Finding]:
        if not isinstance(event, FeedbackEvent) or not event.contradicts_model:
            return ()
        p = self.params
        if event.confidence is None or event.confidence < p.min_confidence:
            return ()
        now = event.epoch
        window = ReporterWindow(state["window"])
        window.expire(before=now - p.window_seconds)
        if len(window.reports) >= p.max_reports:
            window.drop_oldest(len(window.reports) - p.max_reports + 1)
        window.add(now, event.principal.id, event.event_id,
                   Profile.of(event, p.fresh_days * _DAY, p.batch_seconds))

        counts = window.counts
        llrs = (self._account.llr(counts["account_flagged"], counts["dated"]),
                self._network.llr(counts["shared_network"], counts["located"]))
        severity = self._severity(state, window, any(llr >= t for llr, t in zip(llrs, self._thresholds, strict=True)))
        if severity is None:
            return ()
        quarantine = self._quarantine(state, window, event, severity)
        named = self._name(state, window, event)
        return (self._finding(state, window, event, severity, llrs, named, quarantine),)

    def _severity(self, state: State, window: ReporterWindow, crossed: bool) -> Severity | None:
        """The severity the item's evidence supports now, never below what it already alerted at."""
        p = self.params
        now: Severity | None = None
        if len(window.reports) >= p.min_reports and crossed:
            now = "high" if window.counts["flagged"] >= p.high_reporters else "medium"
        elif window.reporter_count >= p.volume_reporters:
            now = "low"
        before = state["severity"]
        if before is not None and (now is None or SEVERITY_RANK[before] > SEVERITY_RANK[now]):
            now = before
        state["severity"] = now
        return now

    def _quarantine(self, state: State, window: ReporterWindow, event: FeedbackEvent,
                    severity: Severity) -> tuple[str, ...]:
        """Campaign reports to exclude from retraining: the window's on detection, each later one as it comes."""
        if severity == "low":
            return ()
        if state["campaign"]:
            ids: tuple[str, ...] = (event.event_id,)
        else:
            state["campaign"] = True
            ids = tuple(dict.fromkeys(r[2] for r in window.reports))
        state["quarantined"] += len(ids)
        return ids

    def _name(self, state: State, window: ReporterWindow, event: FeedbackEvent) -> dict[str, int]:
        named: dict[str, int] = state["named"]
        room = self.params.max_named - len(named)
        newcomers = window.reporters() if not named else [event.principal.id]
        for principal in newcomers:
            if room <= 0:
                break
            if principal not in named:
                named[principal] = 0
                room -= 1
        ip = event.principal.ip
        if ip and len(state["ips"]) < _MAX_IPS and ip not in state["ips"]:
            state["ips"].append(ip)
        return named

    def _finding(self, state: State, window: ReporterWindow, event: FeedbackEvent, severity: Severity,
                 llrs: tuple[float, float], named: dict[str, int], quarantine: tuple[str, ...]) -> Finding:
        p = self.params
        counts = window.counts
        item = event.item.fingerprint or event.item.origin or ""
        verdict = f"confident {event.predicted_label!r} verdicts as {event.reported_label!r}"
        hours = p.window_seconds / 3600
        if severity == "low":
            summary = (f"was disputed by {window.reporter_count} principals ({verdict}) within {hours:g} h, "
                       "from accounts that look genuine: the model is confidently wrong, or a campaign uses "
                       "aged accounts")
        else:
            summary = (f"was disputed {len(window.reports)} times ({verdict}) within {hours:g} h; "
                       f"{counts['flagged']} of {window.reporter_count} reporters look like burner accounts "
                       f"(fresh, created in a batch or sharing a network); {state['quarantined']} reports "
                       "quarantined")
        evidence: dict[str, Any] = {
            "confident_disputes": len(window.reports),
            "distinct_reporters": window.reporter_count,
            "flagged_reporters": counts["flagged"],
            "dated_reporters": counts["dated"],
            "account_flagged_reporters": counts["account_flagged"],
            "fresh_reporters": counts["fresh"],
            "creation_batch_reporters": counts["creation_batch"],
            "located_reporters": counts["located"],
            "shared_network_reporters": counts["shared_network"],
            "account_llr": round(llrs[0], 2),
            "network_llr": round(llrs[1], 2),
            "account_llr_threshold": round(self._thresholds[0], 2),
            "network_llr_threshold": round(self._thresholds[1], 2),
            "min_confidence": p.min_confidence,
            "window_seconds": p.window_seconds,
            "predicted_label": event.predicted_label,
            "reported_label": event.reported_label,
            "accounts_named": len(named),
            "quarantined_reports": state["quarantined"],
        }
        if event.item.origin:
            evidence["origin"] = event.item.origin
        return Finding(
            subject=item,
            severity=severity,
            risk_score=_RISK[severity],
            summary=summary,
            magnitude=float(len(named)),
            evidence=evidence,
            users=tuple(named),
            ips=tuple(state["ips"]),
            hashes=(item,),
            event_ids=tuple(r[2] for r in window.reports[-_SAMPLES:]),
            quarantine=quarantine,
        )

"""Query rate of one principal against its own baseline (model extraction, ATLAS AML.T0024).

Counts each principal's queries to a model in event-time buckets and keeps an
exponentially weighted mean and variance of the per-bucket count. A bucket whose
count exceeds the absolute floor, ``factor`` times the baseline and ``z``
standard deviations above it raises a finding. Buckets that alerted are not
learned, so a sustained flood cannot become its own baseline.

Once a principal has a baseline, two shorter windows are held to the same
per-bucket threshold scaled down (plus five Poisson standard deviations, so that
a principal running just under the threshold does not cross it by chance): a
short one (``window_seconds``) sees a fast flood from a key with a quiet history
within a few dozen queries instead of a full bucket, and a sliding medium one
(``medium_window_seconds``, over the times of the key's latest queries) a
slower flood, a few times the floor, within about a hundred. The floor
``min_rate`` stands for the population: the rate above which no ordinary
principal of the model goes (heavy integrators included); a light user's
backfill below it is not a flood.

An established account (``principal.created_at`` well before the first query
seen) whose history the detector lacks (a restart from empty state, or state
expired after ``state_ttl``) is learned for ``warmup_buckets`` before it can
alert: its steady heavy use is its baseline, not a surge. A key without a
known creation time gets no such grace.

During a flood a finding is made on the first surging query of each bucket and
then as the burst grows by a sixteenth, not on every query: the engine re-sends
an alert only as its evidence grows (to twice its size by default), and a
finding for each query of a long flood was most of this detector's cost.

A rate change alone is weak evidence of extraction (backfills and batch jobs do
it too), so this detector stays at low severity.

>>> from detectors.testing import inference
>>> det = QueryRateDetector(min_rate=50)
>>> state = det.new_state()
>>> def query(i, seconds):
...     return inference(f"e{i}", seconds, model="m")
>>> quiet = [f for i in range(60) for f in det.update(state, query(i, i * 60))]
>>> flood = [f for i in range(60) for f in det.update(state, query(i, 3600 + i / 20))]
>>> len(quiet), flood[0].evidence["queries_in_window"], flood[0].severity
(0, 20, 'low')
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from pydantic import Field

from detectors.atlas import EXFILTRATION, EXFILTRATION_VIA_API, EXTRACT_MODEL
from detectors.base import AnyEvent, Detector, DetectorMeta, Example, Finding, State
from detectors.sketches import add_sample
from detectors.testing import inference

__all__ = ["QueryRateDetector"]

_SAMPLES = 5
# Query times the medium window keeps, at most: it bounds the state, and the bars it can judge.
_RECENT = 128
# Baselines whose threshold and bars are kept (three floats each), at most.
_BARS_KEPT = 4096
# Within a bucket's flood, a finding again once the burst has grown by this share since the last one.
_STEP = 1 / 16


class QueryRateDetector(Detector):
    meta = DetectorMeta(
        id="query_rate",
        name="Query rate far above the principal's baseline",
        version=4,
        description=(
            "A principal queried a model far more often in one time bucket than its own "
            "history predicts. Model extraction needs thousands of queries; a flood from one "
            "key is its cheapest form."
        ),
        tactic=EXFILTRATION,
        technique=EXFILTRATION_VIA_API,
        subtechnique=EXTRACT_MODEL,
        severity="low",
        risk_score=21,
        event_kinds=frozenset({"inference"}),
        references=(
            "https://atlas.mitre.org/techniques/AML.T0024",
            "https://arxiv.org/abs/1805.02628",
        ),
        false_positives=(
            "Batch backfills and load tests by the key's owner.",
            "A new integration going live on an existing key.",
        ),
        triage=(
            "Check whether the key's owner expects a batch job at this time, whether the "
            "inputs look like natural data, and whether other keys on the same IP prefix "
            "surged together."
        ),
    )
    partition_key = "principal"

    class Params(Detector.Params):
        bucket_seconds: int = Field(default=60, ge=1, le=3600)
        min_rate: int = Field(default=300, ge=1, description="Queries per bucket below which nothing alerts: "
                              "the population's ceiling.")
        factor: float = Field(default=10.0, ge=1.0)
        z: float = Field(default=6.0, ge=0.0)
        alpha: float = Field(default=0.1, gt=0.0, le=1.0, description="Weight of the newest bucket.")
        window_seconds: int = Field(default=2, ge=1, description="Short window held to the scaled threshold "
                                    "once a baseline exists.")
        min_burst: int = Field(default=20, ge=1, description="Fewest queries in the short window that can alert.")
        medium_window_seconds: int = Field(default=10, ge=1, description="Sliding window held to the scaled "
                                           "threshold once a baseline exists, for floods too slow for the short one.")
        warmup_buckets: int = Field(default=3, ge=1, description="Buckets learned before the short window "
                                    "(and, for an established account, anything) can alert.")
        established_days: float = Field(default=1.0, ge=0.0, description="Account age at first sight that "
                                        "makes a principal established.")

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self._kept_bars: dict[tuple[float, float], tuple[float, float, float]] = {}

    def new_state(self) -> State:
        # recent: times of the latest queries within the medium window (at most _RECENT of them); told: the
        # burst at the latest finding.
        return {"bucket": None, "count": 0, "mean": 0.0, "var": 0.0, "learned": 0, "established": False,
                "window": None, "in_window": 0, "recent": [], "burst": 0, "told": 0, "hot": False, "ids": [],
                "ips": []}

    def update(self, state: State, event: AnyEvent) -> Iterable[Finding]:
        p = self.params
        now = event.epoch
        bucket = int(now) // p.bucket_seconds * p.bucket_seconds
        if state["bucket"] is None:
            state["bucket"] = bucket
            created = event.principal.created_at
            state["established"] = created is not None and now - created.timestamp() > p.established_days * 86400
        elif bucket > state["bucket"]:
            self._close_bucket(state, (bucket - state["bucket"]) // p.bucket_seconds)
            state["bucket"] = bucket
        window = int(now) // p.window_seconds * p.window_seconds
        if state["window"] is None or window > state["window"]:
            state["window"], state["in_window"] = window, 0
        # A late event counts in the current bucket and window: the past is not rewritten.
        state["count"] += 1
        state["in_window"] += 1
        recent = state["recent"]
        recent.append(now)
        cutoff = now - p.medium_window_seconds
        while recent[0] <= cutoff or len(recent) > _RECENT:
            del recent[0]
        add_sample(state["ids"], event.event_id, _SAMPLES)
        if event.principal.ip:
            add_sample(state["ips"], event.principal.ip, _SAMPLES)

        # Nothing can surge below both floors (the threshold is at least min_rate, the windows'
        # bars at least min_burst): the usual case, decided without the statistics.
        if state["count"] < p.min_rate and state["in_window"] < p.min_burst and len(recent) < p.min_burst:
            return ()
        bars = self._bars(state)
        if not self._surging(state, bars):
            return ()
        # The burst counts every query of the buckets that crossed the threshold.
        if state["hot"]:
            state["burst"] += 1
            if state["burst"] < state["told"] * (1 + _STEP):
                return ()
        else:
            state["burst"] += state["count"]
            state["hot"] = True
        state["told"] = state["burst"]
        principal = event.principal.id
        return (
            Finding(
                subject=principal,
                severity=self.meta.severity,
                risk_score=self.meta.risk_score,
                summary=self._summary(state),
                magnitude=state["burst"],
                evidence={
                    "queries_in_bucket": state["count"],
                    "bucket_seconds": p.bucket_seconds,
                    "baseline_mean": round(state["mean"], 3),
                    "baseline_std": round(math.sqrt(state["var"]), 3),
                    "threshold": round(bars[0], 3),
                    "queries_in_window": state["in_window"],
                    "window_seconds": p.window_seconds,
                    "queries_in_medium_window": len(state["recent"]),
                    "medium_window_seconds": p.medium_window_seconds,
                    "baseline_buckets": state["learned"],
                    "burst_queries": state["burst"],
                },
                users=(principal,),
                ips=tuple(state["ips"]),
                event_ids=tuple(state["ids"]),
                user=principal,
            ),
        )

    @classmethod
    def examples(cls) -> list[Example]:
        quiet = [inference(f"q{i}", i * 30) for i in range(60)]  # 2 a minute for half an hour
        return [
            Example("flood after a quiet history", True,
                    lambda: quiet + [inference(f"f{i}", 1800 + i * 0.1) for i in range(400)]),
            Example("steady heavy integrator", False,
                    lambda: [inference(f"s{i}", i * 0.25) for i in range(240 * 20)]),
            Example("new key with a modest first burst", False,
                    lambda: [inference(f"n{i}", i * 0.5) for i in range(120)]),
            Example("established account first seen at its steady heavy rate", False,
                    lambda: [inference(f"h{i}", i * 0.1, principal_fields={"created_at": "2024-01-01T00:00:00Z"})
                             for i in range(6000)]),
            Example("light user backfilling below the population's ceiling", False,
                    lambda: quiet + [inference(f"b{i}", 1800 + i * 0.5) for i in range(2000)]),
        ]

    def _summary(self, state: State) -> str:
        p = self.params
        # Per bucket, the count of the window that crossed the threshold, scaled up.
        count, seconds = state["count"], p.bucket_seconds
        threshold, short_bar, _ = self._bars(state)
        if count < threshold:
            count, seconds = ((state["in_window"], p.window_seconds) if state["in_window"] >= short_bar
                              else (len(state["recent"]), p.medium_window_seconds))
        rate = count * p.bucket_seconds / seconds
        return (f"sent {count} queries in {seconds} s, {rate / max(state['mean'], 1.0):.0f}x its baseline of "
                f"{state['mean']:.1f} per {p.bucket_seconds} s")

    def _surging(self, state: State, bars: tuple[float, float, float]) -> bool:
        p = self.params
        threshold, short_bar, medium_bar = bars
        if state["learned"] < p.warmup_buckets:
            # No baseline yet: only a whole bucket over the floor counts, and not at all for an
            # established account, whose history is merely unknown to us.
            return not state["established"] and state["count"] >= threshold
        return state["count"] >= threshold or state["in_window"] >= short_bar or len(state["recent"]) >= medium_bar

    def _bars(self, state: State) -> tuple[float, float, float]:
        """The per-bucket threshold of the state's baseline, and the bars of the short and the medium window:
        kept per baseline, which changes only when a bucket closes, while they are asked on every event of a
        principal above the floors."""
        baseline = (state["mean"], state["var"])
        bars = self._kept_bars.get(baseline)
        if bars is None:
            if len(self._kept_bars) >= _BARS_KEPT:
                self._kept_bars.clear()
            threshold = self._threshold(state)
            bars = self._kept_bars[baseline] = (threshold, self._bar(threshold, self.params.window_seconds),
                                                self._bar(threshold, self.params.medium_window_seconds))
        return bars

    def _bar(self, threshold: float, seconds: int) -> float:
        """Queries in ``seconds`` that cross the per-bucket threshold scaled down, by 5 Poisson standard deviations:
        a principal running just under the threshold fills some windows above it by chance. A bar beyond
        what the medium window keeps cannot be met there; the whole bucket judges such a heavy principal."""
        scaled = threshold * seconds / self.params.bucket_seconds
        return max(self.params.min_burst, scaled + 5 * math.sqrt(scaled))

    def _threshold(self, state: State) -> float:
        p = self.params
        return max(p.min_rate, p.factor * state["mean"], state["mean"] + p.z * math.sqrt(state["var"]))

    def _close_bucket(self, state: State, elapsed_buckets: int) -> None:
        if not state["hot"]:  # a flood stays out of the baseline
            state["burst"] = state["told"] = 0
            self._learn(state, state["count"])
        # Silent buckets in between count as zeros; past ~10/alpha of them the baseline is gone anyway.
        for _ in range(min(elapsed_buckets - 1, math.ceil(10 / self.params.alpha))):
            self._learn(state, 0.0)
        state["count"], state["hot"], state["ids"], state["ips"] = 0, False, [], []

    def _learn(self, state: State, x: float) -> None:
        state["learned"] += 1
        if state["learned"] == 1:  # start from the first bucket rather than biased toward zero
            state["mean"] = float(x)
            return
        # Exponentially weighted mean and variance (West's incremental form).
        a = self.params.alpha
        diff = x - state["mean"]
        incr = a * diff
        state["mean"] += incr
        state["var"] = (1 - a) * (state["var"] + diff * incr)

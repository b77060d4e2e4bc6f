"""One principal's queries drawn from outside the natural data (low-and-slow extraction).

Keyed by principal. An extraction attack at an ordinary rate is visible only in
what it asks: random points and augmentation chains (Papernot et al.) are not
natural inputs, and the model answers them without conviction, since they lie
far from everything it was trained on or on purpose near its boundaries. Natural
traffic, even a large backfill, is mostly answered with a clear margin.

Two views, tested every ``check_every`` queries once ``min_queries`` have been
answered (the statistics run on aggregates, not on each event):

- **answers** (whenever events carry scores or a confidence): the share of
  answers whose margin (top score minus runner-up) is below ``unsure_margin``,
  against ``natural_unsure``, the highest share a natural user shows; its
  binomial surprise (``-log10 p``) must reach ``min_surprise`` and the share
  must be at least ``unsure_ratio`` times ``natural_unsure``. Counts decay with a half-life of
  ``half_life`` queries, so an account that turns to extraction is not diluted
  by its past.
- **geometry** (where ``input.embedding`` is present), after PRADA: the
  distance of each query to its nearest neighbour among the principal's
  previous ``recent`` queries (embeddings projected to 16 dimensions, computed
  in batches). Natural inputs come from uneven, clustered data, so these
  distances vary widely; random points and fixed-step augmentation chains are
  evenly spaced, so they barely vary. A coefficient of variation below
  ``regular_spacing`` is synthetic-looking geometry: with at least
  ``corroborating_unsure`` unsure answers it raises a finding on its own, and
  it makes a finding on the answers high severity.
- **peers** (with evenly spaced queries): the principal's share of unsure
  answers against its peers', the other principals of its model on the same
  partition (a sample of the model's users): ``peer_shift`` above the median
  principal's share, with a binomial surprise of ``min_surprise``. The median
  principal, not the pooled traffic, since a few heavy attackers can make
  most of a model's traffic. Augmentation chains (Papernot et al.) start from
  natural inputs and stay near them, so most of their answers are sure, but
  they are answered unsure several times as often as natural users' queries.

>>> from detectors.testing import inference
>>> det = QueryDistributionDetector(min_queries=100)
>>> state = det.new_state()
>>> unsure = [inference(f"u{i}", i * 10, output={"confidence": 0.55 + (i % 10) / 100}) for i in range(128)]
>>> findings = [f for e in unsure for f in det.update(state, e)]
>>> findings[0].evidence["unsure_share"], findings[0].severity
(1.0, 'medium')
"""

from __future__ import annotations

import binascii
import math
from collections.abc import Iterable
from functools import lru_cache

import numpy as np
from pydantic import Field

from detectors.atlas import EXFILTRATION, EXFILTRATION_VIA_API, EXTRACT_MODEL
from detectors.base import AnyEvent, Detector, DetectorMeta, Example, Finding, State
from detectors.sketches import add_sample, answer_margin, binomial_surprise, content_of, opaque_burst, project
from detectors.testing import inference
from stream.events import InferenceEvent

__all__ = ["QueryDistributionDetector"]

_SAMPLES = 10
_BATCH = 16  # embedded queries whose nearest-neighbour distances are computed together
# Peers: principals are counted by their unsure share in bins this wide (1/_SHARE_BINS) once they have answered
# _PEER_QUERIES queries, and moved at every check_every-th.
_SHARE_BINS = 50
_PEER_QUERIES = 100
_PEERS_KEPT = 2000


class QueryDistributionDetector(Detector):
    meta = DetectorMeta(
        id="query_distribution",
        name="Queries unlike natural data from one principal",
        version=2,
        description=(
            "A principal's queries, at whatever rate, are answered with little margin far more "
            "often than natural inputs are, or, where embeddings are present, are evenly spaced "
            "in the feature space as generated points are: the input distribution of a "
            "model-extraction attack using synthetic or augmented queries."
        ),
        tactic=EXFILTRATION,
        technique=EXFILTRATION_VIA_API,
        subtechnique=EXTRACT_MODEL,
        severity="medium",
        risk_score=47,
        event_kinds=frozenset({"inference"}),
        references=(
            "https://atlas.mitre.org/techniques/AML.T0024.002",
            "https://arxiv.org/abs/1805.02628",
            "https://arxiv.org/abs/1602.02697",
            "https://arxiv.org/abs/1609.02943",
        ),
        false_positives=(
            ("A customer whose own data is out of the model's domain (a new language, a new "
             "product), answered without conviction for that reason."),
            "Evaluation or fuzzing jobs run by the model's owners.",
        ),
        triage=(
            "Compare the sample inputs with the principal's usual ones: generated noise, "
            "templated or systematically varied inputs point to extraction. Check the account's "
            "age, its other keys and whether its outputs are being stored in bulk."
        ),
    )
    partition_key = "principal"
    state_ttl = 12 * 3600.0
    compares_peers = True

    class Params(Detector.Params):
        min_queries: int = Field(default=400, ge=10, description="Answered queries before anything is judged.")
        check_every: int = Field(default=32, ge=1)
        unsure_margin: float = Field(default=0.5, gt=0.0, le=1.0)
        natural_unsure: float = Field(default=0.2, gt=0.0, lt=0.5,
                                      description="Highest share of unsure answers natural traffic shows.")
        unsure_ratio: float = Field(default=1.75, ge=1.0, description="How many times natural_unsure the share "
                                    "must reach.")
        min_surprise: float = Field(default=12.0, gt=0.0, description="-log10 of the binomial tail probability.")
        half_life: int = Field(default=2000, ge=10, description="Queries after which old answers weigh half.")
        recent: int = Field(default=64, ge=8, le=256, description="Previous embeddings a query is compared with.")
        regular_spacing: float = Field(default=0.35, gt=0.0, description="Coefficient of variation of "
                                       "nearest-neighbour distances below which queries are evenly spaced.")
        corroborating_unsure: float = Field(default=0.25, ge=0.0, le=1.0, description="Unsure share that, with "
                                            "evenly spaced queries, raises a finding: above natural_unsure, since "
                                            "some natural embeddings (isotropic clusters) are evenly spaced too.")
        peer_shift: float = Field(default=0.05, gt=0.0, lt=1.0, description="Unsure share above the peers' "
                                  "that, with evenly spaced queries, raises a finding.")
        min_peers: int = Field(default=10, ge=1, description="Principals with 100 answered queries on the "
                               "partition before their median share is a baseline.")
        opaque_burst: int = Field(default=500, ge=1, description="Content-less queries in a minute that still alert.")

    def __init__(self, **params: object) -> None:
        super().__init__(**params)
        self._keep = 0.5 ** (1.0 / self.params.half_life)  # per-query decay of the counts
        self._recent = _Packed()

    def new_state(self) -> State:
        # nn: decayed count, sum and sum of squares of nearest-neighbour distances.
        # recent: the last embeddings as one base64 string of float32, 5 KB rather than 30 KB of JSON numbers.
        # answered, unsure_all: plain counts; share_bin: where the principal counts in its peers' histogram.
        return {"n": 0.0, "unsure": 0.0, "answered": 0, "unsure_all": 0, "share_bin": -1, "next": 0, "recent": "",
                "fresh": [], "nn": [0.0, 0.0, 0.0], "ids": []}

    def new_peers(self) -> State:
        # Principals by their share of unsure answers, in bins of 1/_SHARE_BINS.
        return {"bins": [0] * _SHARE_BINS}

    def update(self, state: State, event: AnyEvent, peers: State | None = None) -> Iterable[Finding]:  # type: ignore[override]
        assert isinstance(event, InferenceEvent)
        p = self.params
        if not content_of(event):
            count = opaque_burst(state, event.epoch, p.opaque_burst)
            return (self._finding(event, state, "low", count, opaque=count),) if count else ()
        vector = project(event)
        if vector is not None:
            state["fresh"].append(vector)
            if len(state["fresh"]) >= _BATCH:
                self._nearest_neighbours(state)
        margin = answer_margin(event)
        if margin is None:
            return ()
        keep = self._keep
        unsure = margin < p.unsure_margin
        state["n"] = state["n"] * keep + 1.0
        state["unsure"] = state["unsure"] * keep + unsure
        state["answered"] += 1
        state["unsure_all"] += unsure
        if peers is not None and state["answered"] >= _PEER_QUERIES and state["answered"] % p.check_every == 0:
            _place(state, peers["bins"])
        if unsure:
            add_sample(state["ids"], event.event_id, _SAMPLES)
        if state["answered"] < max(p.min_queries, state["next"]):
            return ()
        state["next"] = state["answered"] + p.check_every
        n, k = round(state["n"]), round(state["unsure"])
        surprise = binomial_surprise(k, n, p.natural_unsure)
        answers = surprise >= p.min_surprise and k >= p.unsure_ratio * p.natural_unsure * n
        spacing = _variation(state["nn"])
        regular = spacing is not None and spacing < p.regular_spacing
        baseline = self._peers_share(state, peers) if regular else None
        above_peers = baseline is not None and self._above(state, baseline)
        if not answers and not (regular and k >= p.corroborating_unsure * n) and not above_peers:
            return ()
        severity = "high" if answers and regular else "medium"
        return (self._finding(event, state, severity, state["answered"], surprise=surprise, spacing=spacing,
                              baseline=baseline),)

    def _peers_share(self, state: State, peers: State | None) -> float | None:
        """The median unsure share of the principal's peers (itself left out), once there are enough of them."""
        if peers is None:
            return None
        bins = list(peers["bins"])
        if state["share_bin"] >= 0:
            bins[state["share_bin"]] -= 1
        total = sum(bins)
        if total < self.params.min_peers:
            return None
        seen = 0
        for index, count in enumerate(bins):
            seen += count
            if 2 * seen >= total:
                return max((index + 0.5) / _SHARE_BINS, 0.01)
        return None  # not reached: the bins hold total principals

    def _above(self, state: State, baseline: float) -> bool:
        n, k = state["answered"], state["unsure_all"]
        return k >= (baseline + self.params.peer_shift) * n and binomial_surprise(k, n, baseline) >= self.params.min_surprise

    def _nearest_neighbours(self, state: State) -> None:
        """Distance of each fresh embedding to its nearest predecessor among the recent ones (one numpy call a batch)."""
        fresh = np.asarray([v for v in state["fresh"] if len(v) == len(state["fresh"][-1])], dtype=np.float32)
        state["fresh"] = []
        recent = self._recent.unpack(state["recent"], fresh.shape[1])  # empty when the embedding size changed
        x = np.concatenate([recent, fresh])
        first = len(recent)
        # |a - b|^2 = |a|^2 + |b|^2 - 2 a.b: one matrix product rather than every difference vector,
        # in float64 so that near duplicates keep their small distances; the root of the nearest only.
        wide = x.astype(np.float64)
        squares = np.einsum("ij,ij->i", wide, wide)
        distances = wide[first:].dot(wide.T)
        distances *= -2.0
        distances += squares
        distances += squares[first:, None]
        # Only earlier queries count as neighbours: the query itself and those after it are infinitely far.
        distances += _later(len(fresh), first, len(x))
        # A query with few predecessors has no near neighbour to find yet: skip the first half-buffer.
        nearest = np.sqrt(np.maximum(distances.min(axis=1)[max(0, self.params.recent // 2 - first):], 0.0))
        keep = self._keep
        nn = state["nn"]
        for d in nearest.tolist():
            nn[0], nn[1], nn[2] = nn[0] * keep + 1.0, nn[1] * keep + d, nn[2] * keep + d * d
        state["recent"] = self._recent.pack(x[-self.params.recent:])

    def _finding(self, event: InferenceEvent, state: State, severity: str, magnitude: int,
                 surprise: float = 0.0, spacing: float | None = None, opaque: int = 0,
                 baseline: float | None = None) -> Finding:
        p = self.params
        principal = event.principal.id
        share = state["unsure"] / state["n"] if state["n"] else 0.0
        summary = (
            f"sent {opaque} queries in a minute that carry no input or answer to judge" if opaque else
            f"got unsure answers (margin < {p.unsure_margin}) to {share:.0%} of its last ~{round(state['n'])} "
            + (f"queries, its model's other users to {baseline:.0%}" if baseline is not None else
               f"queries, natural traffic stays under {p.natural_unsure:.0%}")
            + (f"; its inputs are evenly spaced like synthetic points (variation {spacing:.2f})"
               if spacing is not None and spacing < p.regular_spacing else "")
        )
        return Finding(
            subject=principal,
            severity=severity,  # type: ignore[arg-type]
            risk_score={"low": 21, "medium": 47, "high": 73}[severity],
            summary=summary,
            magnitude=magnitude,
            evidence={
                "answered_queries": state["answered"],
                "weighted_queries": round(state["n"], 1),
                "unsure_share": round(share, 4),
                "unsure_margin": p.unsure_margin,
                "natural_unsure_share": p.natural_unsure,
                "binomial_surprise": round(min(surprise, 1e6), 2),
                "min_surprise": p.min_surprise,
                "nearest_neighbour_samples": round(state["nn"][0], 1),
                "nearest_neighbour_variation": None if spacing is None else round(spacing, 4),
                "regular_spacing_threshold": p.regular_spacing,
                "peers_unsure_share": None if baseline is None else round(baseline, 4),
                "peer_shift": p.peer_shift,
                "opaque_queries_per_minute": opaque,
            },
            users=(principal,),
            ips=(event.principal.ip,) if event.principal.ip else (),
            event_ids=tuple(state["ids"]) or (event.event_id,),
            user=principal,
        )

    @classmethod
    def examples(cls) -> list[Example]:
        def answers(n: int, unsure_every: int, embed: bool = False, spread: float = 0.0, principal: str = "key-1",
                    start: float = 0.0) -> list[AnyEvent]:
            out: list[AnyEvent] = []
            for i in range(n):
                sure = i % unsure_every != 0
                fields: dict = {"output": {"scores": {"spam": 0.95, "ham": 0.05} if sure else {"spam": 0.6, "ham": 0.4}}}
                if embed:
                    # Natural inputs vary along one direction; random ones along all of them.
                    base = [math.sin(i * 1.7 + d * d) * spread for d in range(16)]
                    fields["input"] = {"embedding": [b + (i % 7) * (d == 0) for d, b in enumerate(base)]}
                out.append(inference(f"{principal}-q{i}", start + i * 6, principal=principal, **fields))
            return out

        def users(unsure_every: int) -> list[AnyEvent]:
            # The model's other users, each with enough answers to count among the peers.
            return [e for u in range(12) for e in answers(130, unsure_every, principal=f"user-{u}", start=u)]

        # Evenly spaced inputs, one answer in 7 unsure: under both fixed bars (25 % and 35 %).
        spaced = lambda: answers(600, 7, embed=True, spread=3.0, start=1000)  # noqa: E731
        return [
            Example("random inputs answered without conviction", True, lambda: answers(600, 1, embed=True, spread=3.0)),
            Example("synthetic queries without embeddings", True, lambda: answers(500, 1)),
            Example("evenly spaced inputs answered unsure far more often than the model's other users", True,
                    lambda: users(30) + spaced()),
            Example("natural backfill answered confidently", False, lambda: answers(3000, 10, embed=True)),
            Example("campaign member below the volume judged", False, lambda: answers(300, 1)),
            Example("evenly spaced inputs answered unsure as often as the model's other users", False,
                    lambda: users(7) + spaced()),
        ]


def _place(state: State, bins: list[int]) -> None:
    """Count the principal in the bin of its current share of unsure answers (moving it from its previous bin).

    Principals whose state has expired stay counted; once the bins hold _PEERS_KEPT, every count is halved, so
    that the median follows the principals of the last while rather than all that were ever seen.
    """
    share_bin = min(int(state["unsure_all"] / state["answered"] * _SHARE_BINS), _SHARE_BINS - 1)
    if share_bin != state["share_bin"]:
        if state["share_bin"] >= 0 and bins[state["share_bin"]] > 0:  # halving may have taken it already
            bins[state["share_bin"]] -= 1
        bins[share_bin] += 1
        state["share_bin"] = share_bin
        if sum(bins) > _PEERS_KEPT:
            bins[:] = [count // 2 for count in bins]


def _variation(nn: list[float]) -> float | None:
    """Coefficient of variation of the nearest-neighbour distances, once there are enough of them."""
    count, total, squares = nn
    if count < 64 or total <= 0:
        return None
    mean = total / count
    return math.sqrt(max(squares / count - mean * mean, 0.0)) / mean


@lru_cache(maxsize=256)
def _later(rows: int, first: int, columns: int) -> np.ndarray:
    """0 where column ``first + r`` comes before row ``r``'s query, infinity elsewhere; cached, as a batch's shape
    recurs."""
    mask = np.zeros((rows, columns))
    mask[np.triu_indices(rows, k=first, m=columns)] = np.inf
    mask.flags.writeable = False  # shared between calls
    return mask


class _Packed:
    """Recent embeddings as a state holds them, one base64 string of float32, with the arrays lately packed kept.

    Decoding the string cost more than the distances it feeds, and the next batch of a principal
    mostly unpacks what the last one packed: that comes from here, at most ``kept`` arrays (4 KB
    each at the defaults, and the strings they are kept by), and anything else, such as a state restored
    after a restart, is decoded.
    """

    def __init__(self, kept: int = 2048) -> None:
        self.kept = kept
        self._arrays: dict[str, np.ndarray] = {}

    def pack(self, vectors: np.ndarray) -> str:
        vectors = vectors.astype(np.float32, copy=False)
        packed = f"{vectors.shape[1]}:" + binascii.b2a_base64(vectors.tobytes(), newline=False).decode("ascii")
        vectors.flags.writeable = False  # shared with the state's next batch
        self._arrays[packed] = vectors
        if len(self._arrays) > self.kept:
            del self._arrays[next(iter(self._arrays))]
        return packed

    def unpack(self, packed: str, width: int) -> np.ndarray:
        """The embeddings ``pack`` made ``packed`` of, or none when they were of another width."""
        vectors = self._arrays.pop(packed, None)
        if vectors is None:
            dims, _, data = packed.partition(":")
            if not data or int(dims) != width:
                return np.empty((0, width), dtype=np.float32)
            return np.frombuffer(binascii.a2b_base64(data), dtype=np.float32).reshape(-1, width)
        return vectors if vectors.shape[1] == width else np.empty((0, width), dtype=np.float32)

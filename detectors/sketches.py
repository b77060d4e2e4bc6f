"""Small, JSON-able building blocks shared by the extraction detectors.

Detector state is a plain dict checkpointed as JSON after every event, so the
helpers here work on lists, ints and floats rather than objects, and every
collection they grow has a bound.

>>> ids = []
>>> for i in range(10):
...     add_sample(ids, f"e{i}", limit=3)
>>> ids
['e0', 'e1', 'e2']
>>> round(answer_margin(InferenceEvent.validate({"event_id": "e", "timestamp": "2026-01-01T00:00:00Z",
...     "model": {"name": "m"}, "principal": {"id": "p"},
...     "output": {"scores": {"spam": 0.55, "ham": 0.45}}})), 6)
0.1
>>> round(binomial_surprise(40, 100, 0.1), 1)  # P(X >= 40) <= 10**-13.5 for X ~ Bin(100, 0.1)
13.5
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import lru_cache, wraps
from typing import TypeVar

import numpy as np

from stream.events import InferenceEvent

__all__ = [
    "add_sample",
    "answer_margin",
    "any_within",
    "binomial_surprise",
    "content_of",
    "opaque_burst",
    "project",
    "relative_distance",
]

PROJECTED_DIMS = 16
_PROJECTION_SEED = 20260101


def add_sample(values: list, value: object, limit: int) -> None:
    """Keep the first ``limit`` distinct values: a bounded sample of ids or addresses for the analyst."""
    if len(values) < limit and value not in values:
        values.append(value)


_T = TypeVar("_T")


def _per_event(compute: Callable[[InferenceEvent], _T]) -> Callable[[InferenceEvent], _T]:
    """Remember ``compute`` for the latest event: the engine hands one event to every detector in
    turn, and several of them ask for the same derived value. Events are frozen, and the one
    remembered is held, so ``is`` cannot match another event."""
    last: list = [None, None]

    @wraps(compute)
    def once(event: InferenceEvent) -> _T:
        if last[0] is not event:
            last[0], last[1] = event, compute(event)
        return last[1]

    return once


@_per_event
def answer_margin(event: InferenceEvent) -> float | None:
    """Top score minus the runner-up: how far the answer was from the decision boundary.

    With only ``output.confidence`` the runner-up is at most ``1 - confidence``,
    so ``2 * confidence - 1`` is a lower bound of the margin (exact for two classes).
    """
    scores = event.output.scores
    if scores and len(scores) >= 2:
        first = second = 0.0
        for value in scores.values():
            if value > first:
                first, second = value, first
            elif value > second:
                second = value
        return first - second
    confidence = event.output.confidence
    return None if confidence is None else max(0.0, 2.0 * confidence - 1.0)


def content_of(event: InferenceEvent) -> bool:
    """Whether an event says anything about what was asked or answered."""
    return bool(event.input.hash or event.input.embedding or event.output.scores
                or event.output.confidence is not None)


@lru_cache(maxsize=64)
def _projection(dims: int) -> np.ndarray:
    # A fixed Gaussian random projection per input width: distances and norms survive
    # within a few tens of percent (Johnson-Lindenstrauss), which is all the ratios
    # the detectors compute need, and state stays small whatever the embedding size.
    rng = np.random.default_rng(_PROJECTION_SEED + dims)
    return rng.normal(size=(dims, PROJECTED_DIMS)) / math.sqrt(PROJECTED_DIMS)


@_per_event
def project(event: InferenceEvent) -> list[float] | None:
    """The event's embedding in a fixed low-dimensional space, or None without one."""
    embedding = event.input.embedding
    if not embedding:
        return None
    if len(embedding) <= PROJECTED_DIMS:
        return list(embedding)
    # ndarray.dot rather than @: the same BLAS product, without the ufunc overhead that
    # dominates on a vector this small.
    return np.asarray(embedding, dtype=float).dot(_projection(len(embedding))).tolist()


def relative_distance(a: list[float], b: list[float]) -> float:
    """``|a - b| / max(|a|, |b|)``: scale-free, 0 for identical inputs, about 1 or more for unrelated ones."""
    if len(a) != len(b):
        return math.inf
    diff = math.dist(a, b)
    norm = max(math.hypot(*a), math.hypot(*b))
    return diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf)


def any_within(vector: list[float], others: Sequence[list[float]], limit: float) -> bool:
    """Whether ``relative_distance(vector, other) < limit`` for any of ``others``; the same answer, cheaper.

    ``|vector|`` is computed once, and the exact distance only for a possible match: since
    ``|other| <= |vector| + d`` (``d = |vector - other|``), the distance is at least
    ``d / (|vector| + d)``, and when that clears ``limit`` by a margin far wider than rounding,
    the pair is not near.

    >>> any_within([1.0, 0.0], [[0.0, 1.0], [1.05, 0.0]], 0.1), any_within([1.0, 0.0], [[0.0, 1.0]], 0.1)
    (True, False)
    """
    norm = math.hypot(*vector)
    for other in others:
        if len(other) != len(vector):
            continue
        diff = math.dist(vector, other)
        if diff <= (norm + diff) * limit * (1 + 1e-9) and relative_distance(vector, other) < limit:
            return True
    return False


def opaque_burst(state: dict, now: float, limit: int, seconds: int = 60) -> int:
    """Count a query that carries no content in its ``seconds`` bucket; return the count once it reaches ``limit``.

    A detector that judges what is asked and answered has nothing to judge in
    such queries; it falls back to their rate and timing (at low severity), as a
    flood of opaque queries is still a flood.
    """
    bucket = int(now) // seconds
    if state.get("opaque_bucket") != bucket:
        state["opaque_bucket"], state["opaque"] = bucket, 0
    state["opaque"] += 1
    return state["opaque"] if state["opaque"] >= limit else 0


def binomial_surprise(k: int, n: int, p: float) -> float:
    """``-log10 P(X >= k)`` for ``X ~ Binomial(n, p)``: how surprising k hits in n are at rate p.

    Computed in log space with a Chernoff bound, which is tight enough to rank
    evidence and never overflows; 0 when ``k <= n * p``.
    """
    if n <= 0 or k <= n * p:
        return 0.0
    if k >= n:
        return -n * math.log10(p) if p > 0 else math.inf
    q = k / n
    if p <= 0:
        return math.inf
    # Relative entropy D(q || p) in nats; P(X >= k) <= exp(-n D).
    kl = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    return n * kl / math.log(10)

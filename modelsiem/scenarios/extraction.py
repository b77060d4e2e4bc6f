"""Model extraction and probing scenarios (ATLAS AML.T0024, AML.T0043).

One per attack family of the extraction issue: a single-key flood, a
distributed (Sybil) campaign, low-and-slow extraction with synthetic inputs,
and decision-boundary probing; the ``_blind`` variants send no embedding, so
detectors must make do with answers, hashes and timing. Synthetic inputs are
drawn from the trace's :class:`FeatureSpace`, as random points or as
Papernot-style augmentation chains.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

import numpy as np

from modelsiem.scenarios.base import Trace, Truth, Window, scenario
from modelsiem.scenarios.benign_patterns import FeatureSpace, poisson_times, queries, space_of
from modelsiem.scenarios.traffic import event_id, inference, make_principal

Synthesis = Literal["random", "augment"]


def random_points(rng: np.random.Generator, space: FeatureSpace, n: int) -> np.ndarray:
    """Uniform points over the box natural data occupies: the cheapest extraction queries."""
    half = space.scale * float(rng.uniform(0.5, 1.0))
    return rng.uniform(-half, half, size=(n, space.dims))


def augmented_points(rng: np.random.Generator, space: FeatureSpace, n: int) -> np.ndarray:
    """Papernot et al.'s Jacobian-style augmentation: each round steps every point along a sign vector toward another class."""
    points = space.natural(rng, int(rng.integers(8, 17)))
    out = [points]
    step = float(rng.uniform(0.05, 0.15)) * space.scale
    while sum(len(p) for p in out) < n:
        # The sign of the substitute's gradient points away from the current class: toward the
        # nearest topic of the other class, blurred because the substitute is only an estimate.
        spam = space.spam_probability(points) > 0.5
        distances = np.linalg.norm(points[:, None, :] - space.centers[None, :, :], axis=2)
        distances[space.spam[None, :] == spam[:, None]] = np.inf
        target = space.centers[distances.argmin(axis=1)]
        direction = np.sign(target - points + rng.normal(scale=0.5, size=points.shape))
        points = np.concatenate([points, points + step * direction])
        out.append(points[len(points) // 2:])
    return np.concatenate(out)[:n]


def synthetic(rng: np.random.Generator, space: FeatureSpace, n: int, how: Synthesis) -> np.ndarray:
    return random_points(rng, space, n) if how == "random" else augmented_points(rng, space, n)


@scenario("query_flood", "attack")
def query_flood(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """One aged key that suddenly queries at ~40/s for five minutes, late in the window."""
    who = make_principal(rng, "integration-7731", window.start - timedelta(days=400))
    for t in np.sort(rng.uniform(0, window.seconds, int(window.seconds / 20))):  # its usual ~3/min
        trace.events.append(inference(rng, window.at(t), who, f"usual:{t}"))
    start = window.seconds * 0.6
    for i, t in enumerate(np.sort(start + rng.uniform(0, 300, 12_000))):
        trace.events.append(inference(rng, window.at(t), who, f"probe:{i}"))
    trace.truth.append(Truth(scenario="query_flood", label="attack", technique="AML.T0024",
                             principals=[who["id"]], start=window.at(start), end=window.at(start + 300)))


@scenario("distributed_extraction", "attack")
def distributed_extraction(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """Sybil accounts made in one batch, on a few proxy /24s, extracting in parallel at 1-6 queries/min each."""
    sybil_campaign(rng, window, trace)


@scenario("distributed_extraction_blind", "attack")
def distributed_extraction_blind(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """The Sybil campaign with no embeddings in its events and accounts spread over residential addresses."""
    sybil_campaign(rng, window, trace, prefixes=None, embed=False, name="distributed_extraction_blind")


def sybil_campaign(rng: np.random.Generator, window: Window, trace: Trace, *, accounts: int = 120,
                   prefixes: int | None = 3, embed: bool = True, how: Synthesis = "random",
                   name: str = "distributed_extraction") -> None:
    """Sybil accounts made in one batch with one client, extracting in parallel at 1-6 queries/min each.

    ``prefixes=None`` spreads the accounts over residential addresses, so only
    their creation batch, client and queries tie them together.
    """
    space = space_of(rng, trace)
    created = window.start - timedelta(days=int(rng.integers(1, 10)))
    agent = str(rng.choice(["python-httpx/0.27.0", "okhttp/4.12.0", "Go-http-client/2.0"]))
    pool = [".".join(str(int(x)) for x in rng.integers(1, 223, 3)) for _ in range(prefixes or 0)]
    bots = [make_principal(rng, f"acct-{event_id(rng)[:10]}", created + timedelta(seconds=int(rng.integers(0, 7200))),
                           prefix=str(rng.choice(pool)) if pool else None, user_agent=agent)
            for _ in range(accounts)]
    start, end = 0.3 * window.seconds, window.seconds
    for who in bots:
        times = poisson_times(rng, float(rng.uniform(1.0, 6.0)) / 60, start + float(rng.uniform(0, 60)), end)
        queries(rng, trace, window, who, times, synthetic(rng, space, len(times), how), space, embed=embed)
    trace.truth.append(Truth(scenario=name, label="attack", technique="AML.T0024.002",
                             principals=[b["id"] for b in bots], start=window.at(start), end=window.at(end)))



@scenario("low_and_slow_extraction", "attack")
def low_and_slow_extraction(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """One account extracting at an ordinary 5-20 queries/min with random inputs, for hours if need be."""
    slow_extraction(rng, window, trace)


@scenario("low_and_slow_augmented", "attack")
def low_and_slow_augmented(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """Low-and-slow extraction with Papernot-style augmentation chains grown from a few natural seeds."""
    slow_extraction(rng, window, trace, how="augment", name="low_and_slow_augmented")


@scenario("low_and_slow_blind", "attack")
def low_and_slow_blind(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """Low-and-slow extraction with random inputs whose events carry answers and hashes but no embedding."""
    slow_extraction(rng, window, trace, embed=False, name="low_and_slow_blind")


def slow_extraction(rng: np.random.Generator, window: Window, trace: Trace, *, total: int = 1500,
                    embed: bool = True, how: Synthesis = "random", name: str = "low_and_slow_extraction") -> None:
    """One account extracting at an ordinary 5-20 queries/min with synthetic inputs, for hours if need be."""
    space = space_of(rng, trace)
    who = make_principal(rng, f"user-{event_id(rng)[:6]}", window.start - timedelta(days=int(rng.integers(1, 700))))
    rate = float(rng.uniform(5.0, 20.0)) / 60
    start = float(rng.uniform(0.0, 0.3)) * window.seconds
    times = np.sort(start + rng.uniform(0, total / rate, total))
    queries(rng, trace, window, who, times, synthetic(rng, space, total, how), space, embed=embed)
    trace.truth.append(Truth(scenario=name, label="attack", technique="AML.T0024.002",
                             principals=[who["id"]], start=window.at(start), end=window.at(times[-1])))


def boundary_walk(rng: np.random.Generator, space: FeatureSpace, n: int) -> np.ndarray:
    """HopSkipJump-style queries: binary searches to the boundary between two inputs, then tiny probes along it."""
    natural = space.natural(rng, 64)
    spam = space.spam_probability(natural) > 0.5
    source, target = natural[spam][0], natural[~spam][0]
    scale = float(np.linalg.norm(source))
    out: list[np.ndarray] = []
    low, high = source, target
    while len(out) < n:
        for _ in range(int(rng.integers(8, 14))):  # binary search between the two sides
            middle = (low + high) / 2
            out.append(middle)
            same = (space.spam_probability(middle[None])[0] > 0.5) == (space.spam_probability(source[None])[0] > 0.5)
            low, high = (middle, high) if same else (low, middle)
        edge = (low + high) / 2
        probes = edge + rng.normal(scale=0.003 * scale / np.sqrt(space.dims), size=(int(rng.integers(10, 25)), space.dims))
        out.extend(probes)  # estimates the boundary's normal from the answers
        step = rng.normal(scale=0.04 * scale / np.sqrt(space.dims), size=space.dims)
        low, high = edge + step + (source - edge) * 0.05, edge + step + (target - edge) * 0.05
    return np.array(out[:n])


@scenario("boundary_probing", "attack")
def boundary_probing(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """An evasion run (AML.T0043.001): near-duplicate queries walking the decision boundary at 0.5-3/s."""
    evasion_run(rng, window, trace)


@scenario("boundary_probing_blind", "attack")
def boundary_probing_blind(rng: np.random.Generator, window: Window, trace: Trace) -> None:
    """Boundary probing whose events carry answers and hashes but no embedding."""
    evasion_run(rng, window, trace, embed=False, name="boundary_probing_blind")


def evasion_run(rng: np.random.Generator, window: Window, trace: Trace, *, total: int = 800,
                embed: bool = True, name: str = "boundary_probing") -> None:
    """An account's usual natural queries, then a boundary walk of ``total`` queries at 0.5-3/s."""
    space = space_of(rng, trace)
    who = make_principal(rng, f"user-{event_id(rng)[:6]}", window.start - timedelta(days=int(rng.integers(1, 700))))
    usual = poisson_times(rng, float(rng.uniform(0.5, 3.0)) / 60, 0, window.seconds)
    queries(rng, trace, window, who, usual, space.natural(rng, len(usual)), space, embed=embed, tag="usual")
    rate = float(rng.uniform(0.5, 3.0))
    start = float(rng.uniform(0.3, 0.6)) * window.seconds
    times = np.sort(start + rng.uniform(0, total / rate, total))
    queries(rng, trace, window, who, times, boundary_walk(rng, space, total), space, embed=embed, tag="probe")
    trace.truth.append(Truth(scenario=name, label="attack", technique="AML.T0043.001",
                             principals=[who["id"]], start=window.at(start), end=window.at(times[-1])))

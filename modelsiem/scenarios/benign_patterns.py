"""Benign traffic that looks like extraction to a naive detector, and the feature space it is drawn from.

Each pattern is a labelled ``benign`` scenario whose principals must draw no
alert: steady heavy integrators, one-off backfills of natural data by light
users, a sign-up wave of new accounts, many users behind one NAT address.

:class:`FeatureSpace` is a toy model of what the spam filter sees: natural
inputs lie near a few topics on low-dimensional manifolds, and the model
answers with the relative distance to the nearest spam and ham topic, so
natural inputs get confident answers while points far from every topic (random
queries) or between topics (boundary probes) do not. Extraction scenarios
draw their synthetic inputs from the same space.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np

from modelsiem.scenarios.base import Trace, Truth, Window, scenario
from modelsiem.scenarios.traffic import event_id, inference, make_principal

_APP_AGENTS = ("mail-web/5.2", "mail-ios/17.4", "mail-android/14.1", "outlook-addin/3.1", "thunderbird/128.2")


class FeatureSpace:
    """Topics on low-rank manifolds in ``dims`` dimensions, half of them spam, and the model's answer."""

    def __init__(self, rng: np.random.Generator, dims: int = 32, topics: int = 8, rank: int = 3,
                 spread: float = 0.25, noise: float = 0.1, hard: float = 0.08) -> None:
        self.dims = dims
        self.centers = rng.normal(size=(topics, dims))
        self.bases = rng.normal(scale=spread, size=(topics, dims, rank))
        self.noise = noise
        self.hard = hard
        self.spam = np.arange(topics) % 2 == 0
        self.scale = float(np.abs(self.centers).max())

    def natural(self, rng: np.random.Generator, n: int, topics: np.ndarray | None = None) -> np.ndarray:
        """``n`` natural inputs from the given topics (all by default)."""
        pool = np.arange(len(self.centers)) if topics is None else topics
        which = rng.choice(pool, size=n)
        latent = rng.normal(size=(n, self.bases.shape[2], 1))
        points = (self.centers[which] + (self.bases[which] @ latent)[..., 0]
                  + rng.normal(scale=self.noise, size=(n, self.dims)))
        # Some real inputs are hard: they mix two topics and get unsure answers.
        hard = rng.random(n) < self.hard
        other = self.centers[rng.integers(0, len(self.centers), n)]
        mix = rng.uniform(0.2, 0.6, size=(n, 1))
        return np.where(hard[:, None], (1 - mix) * points + mix * other, points)

    def spam_probability(self, x: np.ndarray) -> np.ndarray:
        distances = np.linalg.norm(x[:, None, :] - self.centers[None, :, :], axis=2)
        to_spam = distances[:, self.spam].min(axis=1)
        to_ham = distances[:, ~self.spam].min(axis=1)
        # Relative distance: far from every topic means close to 0.5, as a calibrated model would answer.
        return 1.0 / (1.0 + np.exp(-12.0 * (to_ham - to_spam) / (to_ham + to_spam)))

    def answers(self, x: np.ndarray) -> list[dict[str, float]]:
        return [{"spam": float(p), "ham": float(1.0 - p)} for p in self.spam_probability(x)]


def space_of(rng: np.random.Generator, trace: Trace) -> FeatureSpace:
    """The one model of a trace, drawn (16, 32 or 64 dimensions) by its first scenario that needs it."""
    space = getattr(trace, "feature_space", None)
    if space is None:
        space = FeatureSpace(rng, dims=int(rng.choice([16, 32, 64])), topics=int(rng.integers(6, 12)))
        trace.feature_space = space  # type: ignore[attr-defined]
    return space


def queries(rng: np.random.Generator, trace: Trace, window: Window, who: dict[str, Any], times: np.ndarray,
            points: np.ndarray, space: FeatureSpace, *, embed: bool = True, tag: str = "q") -> None:
    """Inference events at ``times`` (seconds into the window) asking about ``points``."""
    for i, (t, x, scores) in enumerate(zip(times, points, space.answers(points), strict=True)):
        embedding = [round(float(v), 4) for v in x] if embed else None
        trace.events.append(inference(rng, window.at(t), who, f"{who['id']}:{tag}:{i}:{event_id(rng)}",
                                      embedding=embedding, scores=scores))


def poisson_times(rng: np.random.Generator, rate: float, start: float, end: float) -> np.ndarray:
    """Arrival times of a Poisson process of ``rate`` per second."""
    return np.sort(rng.uniform(start, end, rng.poisson(rate * (end - start))))


def _natural_user(rng: np.random.Generator, space: FeatureSpace) -> np.ndarray:
    # A user writes about a few topics of their own.
    return rng.choice(len(space.centers), size=int(rng.integers(1, 4)), replace=False)


def _record(trace: Trace, name: str, principals: list[dict[str, Any]], window: Window, start: float, end: float) -> None:
    trace.truth.append(Truth(scenario=name, label="benign", principals=[p["id"] for p in principals],
                             start=window.at(start), end=window.at(end)))


@scenario("heavy_integrators", "benign")
def heavy_integrators(rng: np.random.Generator, window: Window, trace: Trace, accounts: int = 3) -> None:
    """Aged service keys querying natural data steadily at 1-8/s for the whole window."""
    space = space_of(rng, trace)
    keys = [make_principal(rng, f"svc-{event_id(rng)[:8]}", window.start - timedelta(days=int(rng.integers(90, 900))),
                           user_agent="mail-gateway/9.0") for _ in range(accounts)]
    for who in keys:
        times = poisson_times(rng, float(rng.uniform(1.0, 8.0)), 0, window.seconds)
        queries(rng, trace, window, who, times, space.natural(rng, len(times), _natural_user(rng, space)), space,
                embed=bool(rng.random() < 0.5))
    _record(trace, "heavy_integrators", keys, window, 0, window.seconds)


@scenario("natural_backfill", "benign")
def natural_backfill(rng: np.random.Generator, window: Window, trace: Trace, accounts: int = 3) -> None:
    """Light, aged users each re-scoring a few thousand natural emails once, at 0.5-4/s."""
    space = space_of(rng, trace)
    users = [make_principal(rng, f"user-bf{event_id(rng)[:6]}", window.start - timedelta(days=int(rng.integers(60, 1500))))
             for _ in range(accounts)]
    for who in users:
        topics = _natural_user(rng, space)
        usual = poisson_times(rng, float(rng.uniform(0.5, 3.0)) / 60, 0, window.seconds)
        queries(rng, trace, window, who, usual, space.natural(rng, len(usual), topics), space, tag="usual")
        rate, size = float(rng.uniform(0.5, 4.0)), int(rng.integers(1500, 4000))
        start = float(rng.uniform(0.2, 0.6)) * window.seconds
        times = np.sort(start + rng.uniform(0, size / rate, size))
        queries(rng, trace, window, who, times, space.natural(rng, size, topics), space,
                embed=bool(rng.random() < 0.7), tag="backfill")
    _record(trace, "natural_backfill", users, window, 0, window.seconds)


@scenario("signup_wave", "benign")
def signup_wave(rng: np.random.Generator, window: Window, trace: Trace, accounts: int = 150) -> None:
    """New accounts created within an hour (a marketing push) that use the product normally."""
    space = space_of(rng, trace)
    created = window.start - timedelta(hours=2)
    agent = str(rng.choice(_APP_AGENTS))
    users = [make_principal(rng, f"new-{event_id(rng)[:10]}", created + timedelta(seconds=int(rng.integers(0, 3600))),
                            user_agent=agent if rng.random() < 0.8 else None) for _ in range(accounts)]
    for who in users:
        start = float(rng.uniform(0, 0.7)) * window.seconds
        times = poisson_times(rng, float(rng.uniform(0.5, 5.0)) / 60, start, window.seconds)
        queries(rng, trace, window, who, times, space.natural(rng, len(times), _natural_user(rng, space)), space,
                embed=bool(rng.random() < 0.5))
    _record(trace, "signup_wave", users, window, 0, window.seconds)


@scenario("nat_users", "benign")
def nat_users(rng: np.random.Generator, window: Window, trace: Trace, accounts: int = 80) -> None:
    """Many employees of one company behind a single NAT address, each using the product normally."""
    space = space_of(rng, trace)
    address = f"198.51.100.{int(rng.integers(1, 254))}"
    users = [make_principal(rng, f"corp-{event_id(rng)[:8]}", window.start - timedelta(days=int(rng.integers(1, 1500))),
                            ip=address, user_agent=str(rng.choice(_APP_AGENTS))) for _ in range(accounts)]
    for who in users:
        times = poisson_times(rng, float(rng.uniform(0.5, 6.0)) / 60, 0, window.seconds)
        queries(rng, trace, window, who, times, space.natural(rng, len(times), _natural_user(rng, space)), space,
                embed=bool(rng.random() < 0.5))
    _record(trace, "nat_users", users, window, 0, window.seconds)

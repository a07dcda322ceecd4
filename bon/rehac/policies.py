"""Intervention policies: who takes the next step, agent or human.

A policy gives, for each step, the probability that the human takes it; the probability that it
produces a logged episode is the product over the episode's steps. Fixed policies (never, always,
at step k) give probabilities 0 or 1, so an episode either matches them or not. The step-only
policies here ignore the trajectory so far, but `human_prob` receives it, so a learned policy fits
the same interface.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from bon.errors import BonError
from bon.rehac.episodes import HUMAN, Episode, Step

# (1-based step number, the steps before it) -> probability that the human takes that step
HumanProb = Callable[[int, Sequence[Step]], float]


@dataclass(frozen=True)
class Policy:
    name: str
    human_prob: HumanProb
    deterministic: bool

    def prob(self, episode: Episode) -> float:
        """Probability that this policy chooses the episode's actor at every one of its steps."""
        total = 1.0
        for t, step in enumerate(episode.steps, 1):
            p = self.human_prob(t, episode.steps[: t - 1])
            total *= p if step.actor == HUMAN else 1.0 - p
            if total == 0.0:
                break
        return total


def never() -> Policy:
    """The agent alone (C = 0)."""
    return Policy("never", lambda t, prefix: 0.0, True)


def always() -> Policy:
    """The human takes every step."""
    return Policy("always", lambda t, prefix: 1.0, True)


def at_step(k: int) -> Policy:
    """The human takes step k only (an episode that ends before step k is the agent's alone)."""
    if k < 1:
        raise BonError(f"at_step needs k >= 1, got {k}")
    return Policy(f"at_step_{k}", lambda t, prefix: 1.0 if t == k else 0.0, True)


def random_rate(p: float) -> Policy:
    """The human takes each step independently with probability p."""
    if not 0 <= p <= 1:
        raise BonError(f"a random policy's rate must lie in [0, 1], got {p}")
    return Policy(f"random_{p:g}", lambda t, prefix: p, p in (0.0, 1.0))


def fixed_policies(k_max: int, rates: Iterable[float]) -> list[Policy]:
    """never, always, at_step_1..k_max, random_p for each rate: the baselines of the report."""
    return [never(), always(), *(at_step(k) for k in range(1, k_max + 1)), *(random_rate(p) for p in rates)]


def human_step_share(episodes: Iterable[Episode]) -> float:
    """Share of logged steps the human took: the per-step rate of a behaviour policy that flipped a coin."""
    human = steps = 0
    for ep in episodes:
        human += ep.n_human
        steps += ep.n_steps
    return human / steps if steps else float("nan")

"""Value of an intervention policy on logged episodes: T, C, intervention rate and R = T - lambda*C.

The estimator, per question q with logged episodes i and actor sequences s_i:

    w_i = pi(s_i) / b(s_i)            V_q(X) = sum_i w_i X_i / sum_i w_i       (X = T, C, steps)

where pi(s) is the policy's probability of choosing the actors of s (0 or 1 for a fixed policy, so
V_q is the mean over the matching episodes) and b(s) is the behaviour model:

- `tree`: the question's episodes enumerate a full branching tree (both actors were run at every
  step, and the models were run at temperature 0, so one actor prefix always leads to the same text).
  Then b is constant and sum_i pi(s_i) = 1: V_q is the policy's exact expectation, not an estimate.
  ReHAC's collaboration data is such a tree for all 250 questions.
- `rate`: episodes were sampled by a behaviour policy that chose the human with probability q at each
  step; b(s) = q^h (1-q)^a with q the logged share of human steps (h, a: human and agent steps of s).
  V_q is then the self-normalised importance-sampling estimate, whose reliability the effective sample
  size (sum w)^2 / sum w^2 shows.
- `auto`: `tree` when every question's episodes form a complete tree, else `rate`.

Weights are normalised within each question, so every covered question counts once; a question none of
whose episodes the policy could produce (sum w = 0) is not covered, and the policy's means are over the
covered questions only (coverage reports the share). Intervals: bootstrap over questions.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from bon.errors import BonError, unknown_choice
from bon.metrics import bootstrap_ci
from bon.rehac.episodes import Episode, Question, is_complete_tree
from bon.rehac.policies import Policy

BEHAVIOURS = ("auto", "tree", "rate")


def resolve_behaviour(behaviour: str, questions: Sequence[Question]) -> str:
    """`tree` or `rate`; `auto` picks `tree` only when every question is a complete tree."""
    if behaviour not in BEHAVIOURS:
        raise unknown_choice("behaviour", behaviour, BEHAVIOURS)
    if behaviour == "auto":
        return "tree" if questions and all(is_complete_tree(q.episodes) for q in questions) else "rate"
    return behaviour


def behaviour_prob(episode: Episode, rate: float) -> float:
    """b(s) = q^h (1-q)^a: the chance a coin-flip behaviour policy with human rate q took these actors."""
    h = episode.n_human
    return rate ** h * (1.0 - rate) ** (episode.n_steps - h)


def weights(question: Question, policy: Policy, behaviour: str, rate: float | None = None) -> np.ndarray:
    """Unnormalised weights w_i = pi(s_i) / b(s_i) of the question's episodes."""
    target = np.array([policy.prob(ep) for ep in question.episodes], dtype=float)
    if behaviour == "tree":
        return target
    if behaviour != "rate":
        raise unknown_choice("behaviour", behaviour, ("tree", "rate"))
    if rate is None or not 0 < rate < 1:
        raise BonError(f"importance weights need a behaviour rate strictly between 0 and 1, got {rate!r}")
    return target / np.array([behaviour_prob(ep, rate) for ep in question.episodes], dtype=float)


def effective_sample_size(w: np.ndarray) -> float:
    """(sum w)^2 / sum w^2: how many equally weighted episodes the estimate is worth (0 when all w = 0)."""
    square = float(np.sum(w * w))
    return float(np.sum(w)) ** 2 / square if square > 0 else 0.0


def interval(values: np.ndarray, confidence: float, n_resamples: int, seed: int) -> tuple[float | None, float | None]:
    """Bootstrap interval of the mean over questions (bon.metrics.bootstrap_ci); None, None when empty."""
    if values.size == 0:
        return None, None
    low, high = bootstrap_ci(values, confidence, n_resamples, seed)
    return low, high


def summarise(name: str, kind: str, t: np.ndarray, c: np.ndarray, steps: np.ndarray, lambdas: Sequence[float],
              confidence: float, n_resamples: int, seed: int, **extra: Any) -> dict[str, Any]:
    """One result row from per-question T, C and step counts: means, intervals, R at every lambda."""
    n = int(t.size)
    t_low, t_high = interval(t, confidence, n_resamples, seed)
    c_low, c_high = interval(c, confidence, n_resamples, seed)
    mean = (lambda x: float(x.mean())) if n else (lambda x: None)
    by_lambda = []
    for lam in lambdas:
        r = t - lam * c
        low, high = interval(r, confidence, n_resamples, seed)
        by_lambda.append({"lambda": float(lam), "r": mean(r), "ci_low": low, "ci_high": high})
    total_steps = float(steps.sum()) if n else 0.0
    return {"policy": name, "kind": kind, **extra, "n_covered": n,
            "t": mean(t), "t_ci_low": t_low, "t_ci_high": t_high,
            "c": mean(c), "c_ci_low": c_low, "c_ci_high": c_high, "steps": mean(steps),
            "intervention_rate": float(c.sum()) / total_steps if total_steps else None,
            "by_lambda": by_lambda}


def per_question(questions: Sequence[Question], policy: Policy, reward: str, behaviour: str,
                 rate: float | None) -> dict[str, dict[str, float]]:
    """The policy's value on each question it covers: {question id: {t, c, steps, n_matching, ess, mass}}."""
    out = {}
    for q in questions:
        w = weights(q, policy, behaviour, rate)
        total = float(w.sum())
        # mass: the policy's probability of producing one of the logged actor sequences (1 on a complete tree)
        distinct = {ep.actors: ep for ep in q.episodes}
        mass = sum(policy.prob(ep) for ep in distinct.values())
        if total <= 0:
            out[q.id] = {"mass": mass}
            continue
        w = w / total
        out[q.id] = {"t": float(np.dot(w, [ep.task_reward(reward) for ep in q.episodes])),
                     "c": float(np.dot(w, [ep.n_human for ep in q.episodes])),
                     "steps": float(np.dot(w, [ep.n_steps for ep in q.episodes])),
                     "n_matching": int(np.count_nonzero(w)), "ess": effective_sample_size(w), "mass": mass}
    return out


def evaluate_policy(questions: Sequence[Question], policy: Policy, reward: str, lambdas: Sequence[float],
                    behaviour: str, rate: float | None, confidence: float = 0.95, n_resamples: int = 9999,
                    seed: int = 0) -> dict[str, Any]:
    """The policy's row: coverage, matching episodes, ESS, probability mass logged, T, C, rate, R(lambda)."""
    values = per_question(questions, policy, reward, behaviour, rate)
    covered = [v for v in values.values() if "t" in v]
    n_questions = len(questions)
    column = lambda key: np.array([v[key] for v in covered], dtype=float)  # noqa: E731
    return summarise(policy.name, "fixed", column("t"), column("c"), column("steps"), lambdas, confidence,
                     n_resamples, seed, deterministic=policy.deterministic, n_questions=n_questions,
                     coverage=len(covered) / n_questions if n_questions else 0.0,
                     n_matching=sum(v["n_matching"] for v in covered), ess=sum(v["ess"] for v in covered),
                     mass=sum(v["mass"] for v in values.values()) / n_questions if n_questions else 0.0)


def paired_difference(a_t: np.ndarray, a_c: np.ndarray, b_t: np.ndarray, b_c: np.ndarray, lam: float,
                      confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> dict[str, Any]:
    """R(a) - R(b) on the same questions (arrays aligned by question), with a bootstrap interval over questions."""
    diff = (a_t - lam * a_c) - (b_t - lam * b_c)
    low, high = interval(diff, confidence, n_resamples, seed)
    n = int(diff.size)
    return {"lambda": float(lam), "n_questions": n, "r_a": float((a_t - lam * a_c).mean()) if n else None,
            "r_b": float((b_t - lam * b_c).mean()) if n else None, "diff": float(diff.mean()) if n else None,
            "ci_low": low, "ci_high": high, "a_better": int(np.sum(diff > 1e-12)),
            "b_better": int(np.sum(diff < -1e-12))}


def evaluate_logged(name: str, questions: Sequence[Question], reward: str, lambdas: Sequence[float],
                    confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> dict[str, Any]:
    """On-policy episodes (the trained ReHAC policy's test runs): each question's mean over its episodes."""
    t = np.array([np.mean([ep.task_reward(reward) for ep in q.episodes]) for q in questions])
    c = np.array([np.mean([ep.n_human for ep in q.episodes]) for q in questions])
    steps = np.array([np.mean([ep.n_steps for ep in q.episodes]) for q in questions])
    n_episodes = sum(len(q.episodes) for q in questions)
    return summarise(name, "reference", t, c, steps, lambdas, confidence, n_resamples, seed,
                     deterministic=None, n_questions=len(questions), coverage=1.0, n_matching=n_episodes,
                     ess=float(n_episodes), mass=None)


def r_at(row: Mapping[str, Any], lam: float) -> dict[str, Any]:
    """The row's `by_lambda` entry for lambda `lam`."""
    for entry in row["by_lambda"]:
        if abs(entry["lambda"] - lam) < 1e-12:
            return entry
    raise KeyError(f"lambda {lam} was not evaluated")

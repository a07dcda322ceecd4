"""Cost-aware Best-of-N: among a question's logged episodes, pick the one with the highest predicted T - lambda*C.

C (the human steps) is known for every episode; T is what a predictor says. A predictor is any callable
`episode -> predicted T in [0, 1]`, or None when it has no prediction (a failed judgement). Registered:

- `oracle`: the true T (an upper bound on any predictor);
- `majority`: the share of the question's episodes (itself included) whose Finish answer agrees with this
  episode's (answers compared case-insensitively); an episode that never finished gets 0. Needs no judge;
- `noisy_oracle`: the true T with probability `accuracy`, else 1 - T, drawn once per episode from `seed`
  (a stand-in for a judge of known accuracy);
- `judge`: a live LLM judge's FINAL_RESULT (bon.rehac.judge_predictor; built by the report, since it calls
  a model).

An episode without a prediction is not a candidate; a question none of whose episodes has one is left out
of that selector's row, and the row counts both (`no_prediction`, `questions_skipped`).

Ties: the deterministic pick is the earliest episode in file order; `r` is tie-aware (the mean over the
tied top set), so results do not depend on file order. The realised cost is the picked episode's C; running
all N candidates costs the human every candidate's steps (`candidate_human_steps`), which is only
acceptable when the "human" is cheap or simulated, as in ReHAC's data (GPT-4 plays the human).
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bon.errors import BonError, unknown_choice
from bon.rehac.episodes import Episode, Question
from bon.rehac.metrics import interval

Predictor = Callable[[Episode], "float | None"]
TIE = 1e-9


def oracle(questions: Sequence[Question], reward: str, **_: Any) -> Predictor:
    """The true task reward."""
    return lambda ep: ep.task_reward(reward)


def _normalise(answer: str) -> str:
    return " ".join(answer.casefold().split()).strip(" .")


def majority(questions: Sequence[Question], reward: str, **_: Any) -> Predictor:
    """Agreement of the episode's answer with the question's other episodes (self included)."""
    share: dict[str, float] = {}
    for q in questions:
        answers = [None if ep.answer is None else _normalise(ep.answer) for ep in q.episodes]
        for ep, answer in zip(q.episodes, answers):
            share[ep.key] = 0.0 if answer is None else answers.count(answer) / len(answers)

    def predict(ep: Episode) -> float:
        if ep.key not in share:
            raise BonError(f"majority predictor: episode {ep.key} is not among the questions it was built from")
        return share[ep.key]

    return predict


def noisy_oracle(questions: Sequence[Question], reward: str, *, accuracy: float = 0.8, seed: int = 0,
                 **_: Any) -> Predictor:
    """True T with probability `accuracy`, else 1 - T; the same episode always gets the same draw."""
    if not 0 <= accuracy <= 1:
        raise BonError(f"noise_accuracy must lie in [0, 1], got {accuracy!r}")

    def predict(ep: Episode) -> float:
        t = ep.task_reward(reward)
        return t if random.Random(f"{seed}:{ep.key}").random() < accuracy else 1.0 - t

    return predict


PREDICTORS: dict[str, Callable[..., Predictor]] = {"oracle": oracle, "majority": majority,
                                                    "noisy_oracle": noisy_oracle}


def make_predictor(name: str, questions: Sequence[Question], reward: str, options: Mapping[str, Any]) -> Predictor:
    """Build a registered predictor; `options` are passed as keyword arguments (accuracy, seed, ...)."""
    if name not in PREDICTORS:
        raise unknown_choice("predictor", name, PREDICTORS)
    return PREDICTORS[name](questions, reward, **options)


def predictions(name: str, predictor: Predictor, questions: Sequence[Question]) -> list[np.ndarray]:
    """Predicted T of every episode, per question (NaN: no prediction); a value outside [0, 1] is an error
    naming the episode."""
    out = []
    for q in questions:
        values = []
        for ep in q.episodes:
            value = predictor(ep)
            if value is None:
                values.append(math.nan)
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or not 0 <= value <= 1:
                raise BonError(f"predictor {name!r} returned {value!r} for episode {ep.key}; "
                               f"expected a predicted task reward in [0, 1]")
            values.append(float(value))
        out.append(np.array(values))
    return out


@dataclass(frozen=True)
class Pick:
    """`first`: the deterministic pick (earliest of the tied best); `tied`: positions of all tied best."""

    first: int
    tied: tuple[int, ...]


def pick(predicted: np.ndarray, costs: np.ndarray, lam: float) -> Pick | None:
    """The episode(s) maximising predicted T - lambda*C among those with a prediction (None if there are none)."""
    if np.isnan(predicted).all():
        return None
    score = np.where(np.isnan(predicted), -np.inf, predicted - lam * costs)
    tied = tuple(int(i) for i in np.flatnonzero(score >= score.max() - TIE))
    return Pick(tied[0], tied)


def evaluate_selector(name: str, questions: Sequence[Question], predicted: Sequence[np.ndarray], reward: str,
                      lambdas: Sequence[float], confidence: float = 0.95, n_resamples: int = 9999,
                      seed: int = 0) -> list[dict[str, Any]]:
    """One row per lambda: tie-aware mean T, C and R of the picks (with an interval on R), and the first-pick R."""
    rows = []
    t_all = [np.array([ep.task_reward(reward) for ep in q.episodes]) for q in questions]
    c_all = [np.array([ep.n_human for ep in q.episodes], dtype=float) for q in questions]
    no_prediction = int(sum(np.isnan(pq).sum() for pq in predicted))
    for lam in lambdas:
        t, c, r_first, ties, skipped = [], [], [], [], 0
        for tq, cq, pq in zip(t_all, c_all, predicted):
            chosen = pick(pq, cq, lam)
            if chosen is None:
                skipped += 1
                continue
            idx = list(chosen.tied)
            t.append(float(tq[idx].mean()))
            c.append(float(cq[idx].mean()))
            r_first.append(float(tq[chosen.first] - lam * cq[chosen.first]))
            ties.append(len(idx))
        row = _row(name, lam, np.array(t), np.array(c), r_first, ties, c_all, confidence, n_resamples, seed)
        rows.append({**row, "no_prediction": no_prediction, "questions_skipped": skipped})
    return rows


def evaluate_random_pick(questions: Sequence[Question], reward: str, lambdas: Sequence[float],
                         confidence: float = 0.95, n_resamples: int = 9999, seed: int = 0) -> list[dict[str, Any]]:
    """The baseline a selector must beat: one of the question's episodes uniformly at random (expected value)."""
    c_all = [np.array([ep.n_human for ep in q.episodes], dtype=float) for q in questions]
    t = np.array([np.mean([ep.task_reward(reward) for ep in q.episodes]) for q in questions])
    c = np.array([cq.mean() for cq in c_all])
    return [_row("random_pick", lam, t, c, list(t - lam * c), [len(q.episodes) for q in questions], c_all,
                 confidence, n_resamples, seed) for lam in lambdas]


def _row(name: str, lam: float, t: np.ndarray, c: np.ndarray, r_first: Sequence[float], ties: Sequence[int],
         c_all: Sequence[np.ndarray], confidence: float, n_resamples: int, seed: int) -> dict[str, Any]:
    r = t - lam * c
    low, high = interval(r, confidence, n_resamples, seed)
    n = int(t.size)
    return {"selector": name, "lambda": float(lam), "n_questions": n,
            "t": float(t.mean()) if n else None, "c": float(c.mean()) if n else None,
            "r": float(r.mean()) if n else None, "ci_low": low, "ci_high": high,
            "r_first": float(np.mean(r_first)) if n else None, "mean_tied": float(np.mean(ties)) if n else None,
            "mean_candidates": float(np.mean([x.size for x in c_all])) if n else None,
            "candidate_human_steps": float(np.mean([x.sum() for x in c_all])) if n else None,
            "no_prediction": 0, "questions_skipped": 0}

"""A simulated comparing judge for `selector=listwise` / `selector=pairwise` on dataset=sim (SYNTHETIC DATA).

One call looks at the candidates it is shown and picks one. The model is a Thurstone one: the judge
forms an impression of each candidate, `d * success + noise` (standard normal noise, drawn afresh for
every call), and picks the highest. `d` is set by `accuracy`, the chance that the judge prefers a
successful candidate to a failed one head to head: accuracy = Phi(d / sqrt(2)); 0.5 is a judge that
cannot tell them apart, 1 a perfect one. By default it is derived from the simulated ORM
(d = Phi^-1(orm_tpr) - Phi^-1(orm_fpr), equal-variance signal detection), so the comparing judge sees
the same evidence as the outcome call that `two_stage` filters on. With probability `position_bias`
a call ignores the candidates and names the first one shown; with probability `fail_rate` it fails
(no vote, never a pick).

Like the live judge (bon.judges.listwise): `permutations` orders per comparison, the first in sample
order, the second reversed, the rest shuffled (here only who is shown first matters: for a shuffled
order, a uniform candidate); the majority of the usable votes picks, a tie goes to the lowest sample
index and is recorded; a verdict with no usable vote fails, and the selector's `fallback` decides
that task. Pairwise is a knockout tournament in sample order (N - 1 matches; a match without a
usable vote lets the lower sample index advance; the verdict fails when no match had one).

Trust: this judge was not calibrated against a real list-wise judge; its accuracy is derived (or set)
and its errors are independent of the step judge's. It shows how a comparing judge of a given
accuracy and position bias would fare against score-based selection, not how a given LLM does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import numpy as np
import polars as pl

from bon.errors import BonError

KINDS = ("listwise", "pairwise")
COLUMN = "listwise_pick"  # as bon.verdicts
# token model: a live comparing judge shortens each candidate to judge.max_chars (4,000 characters by
# default), about 1,000 tokens at ~4 characters a token
COMPACT_TOKENS = 1000
_MAX_D = 50.0  # a perfect judge: the noise never bridges this
_NORMAL = NormalDist()  # the standard normal, without scipy.stats' ~1 s import on every simulated run


def _ppf(p: float) -> float:
    """Standard normal quantile, -inf / +inf at 0 / 1 (callers clip to _MAX_D), as scipy.stats.norm.ppf."""
    return -math.inf if p <= 0 else math.inf if p >= 1 else _NORMAL.inv_cdf(p)


@dataclass(frozen=True)
class ComparingJudge:
    """The simulated list-wise / pairwise judge's parameters (module docstring)."""

    accuracy: float  # P(prefers a successful candidate to a failed one, head to head)
    position_bias: float = 0.0
    permutations: int = 1
    fail_rate: float = 0.0

    def __post_init__(self) -> None:
        for name in ("accuracy", "position_bias", "fail_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise BonError(f"judge.{'listwise_accuracy' if name == 'accuracy' else name} must be a probability "
                               f"in [0, 1], got {value!r}")
        if self.permutations < 1:
            raise BonError(f"judge.permutations must be an integer >= 1, got {self.permutations!r}")

    @property
    def discrimination(self) -> float:
        """d: how far apart a successful and a failed candidate's impressions are, in noise units."""
        return float(np.clip(np.sqrt(2.0) * _ppf(self.accuracy), -_MAX_D, _MAX_D))

    @staticmethod
    def accuracy_from_orm(orm_tpr: float, orm_fpr: float) -> float:
        """The head-to-head accuracy of a judge as discriminating as an ORM with these rates."""
        d = float(np.clip(_ppf(orm_tpr) - _ppf(orm_fpr), -_MAX_D, _MAX_D))
        return _NORMAL.cdf(d / math.sqrt(2.0))


@dataclass
class Verdicts:
    """One verdict per task: the picked sample (-1: failed), whether it was a tie, what it cost."""

    pick: np.ndarray
    tie: np.ndarray
    calls: np.ndarray  # per task
    failed_votes: np.ndarray  # per task
    shown: np.ndarray  # candidates shown per task, summed over calls (for the token model)

    def tally(self, kind: str, permutations: int, fallback: str | None) -> dict[str, Any]:
        """What bon.verdicts.decide reports for a live run (tasks, failed, ties, fell back)."""
        failed = int((self.pick < 0).sum())
        return {"kind": kind, "permutations": permutations, "tasks": int(self.pick.size), "failed": failed,
                "ties": int(self.tie.sum()), "without_candidates": 0, "fell_back": failed, "fallback": fallback,
                "calls": int(self.calls.sum()), "failed_votes": int(self.failed_votes.sum())}


def _votes(judge: ComparingJudge, success: np.ndarray, first: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One call per row over the candidates in `success` [rows, m]: the picked column, or -1 when it failed."""
    rows, m = success.shape
    impression = judge.discrimination * success + rng.standard_normal((rows, m))
    pick = impression.argmax(axis=1)
    pick = np.where(rng.random(rows) < judge.position_bias, first, pick)
    return np.where(rng.random(rows) < judge.fail_rate, -1, pick)


def _first_shown(permutation: int, m: int, rows: int, rng: np.random.Generator) -> np.ndarray:
    """Who is shown first in permutation p: sample order, then reversed, then a shuffle (uniform first)."""
    if permutation == 0:
        return np.zeros(rows, dtype=np.int64)
    if permutation == 1:
        return np.full(rows, m - 1, dtype=np.int64)
    return rng.integers(0, m, rows)


def _compare(judge: ComparingJudge, success: np.ndarray,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All permutations of one comparison per row: (pick column or -1, tie, failed votes)."""
    rows, m = success.shape
    votes = np.zeros((rows, m), dtype=np.int64)
    failed = np.zeros(rows, dtype=np.int64)
    for p in range(judge.permutations):
        pick = _votes(judge, success, _first_shown(p, m, rows, rng), rng)
        ok = pick >= 0
        votes[np.flatnonzero(ok), pick[ok]] += 1
        failed += ~ok
    top = votes.max(axis=1)
    tied = votes == top[:, None]
    pick = np.where(top > 0, tied.argmax(axis=1), -1)  # the lowest sample index among the most voted
    return pick, (top > 0) & (tied.sum(axis=1) > 1), failed


def listwise(judge: ComparingJudge, success: np.ndarray, rng: np.random.Generator) -> Verdicts:
    """One list-wise verdict per task; `success` is [tasks, n] in sample order."""
    tasks, n = success.shape
    if n == 1:  # one candidate: no call needed (as live)
        zeros = np.zeros(tasks, dtype=np.int64)
        return Verdicts(zeros, zeros.astype(bool), zeros, zeros, zeros)
    pick, tie, failed = _compare(judge, success, rng)
    calls = np.full(tasks, judge.permutations, dtype=np.int64)
    return Verdicts(pick, tie, calls, failed, calls * n)


def pairwise(judge: ComparingJudge, success: np.ndarray, rng: np.random.Generator) -> Verdicts:
    """A knockout tournament per task in sample order: N - 1 matches, each over `permutations` orders."""
    tasks, n = success.shape
    alive = np.tile(np.arange(n), (tasks, 1))
    rows = np.arange(tasks)
    usable = np.zeros(tasks, dtype=np.int64)
    failed = np.zeros(tasks, dtype=np.int64)
    tie = np.zeros(tasks, dtype=bool)
    while alive.shape[1] > 1:
        m = alive.shape[1]
        winners = []
        for i in range(0, m - 1, 2):
            a, b = alive[:, i], alive[:, i + 1]
            pick, tied, bad = _compare(judge, np.stack([success[rows, a], success[rows, b]], axis=1), rng)
            usable += pick >= 0
            failed += bad
            tie |= tied
            winners.append(np.where(pick == 1, b, a))  # a failed match: the lower sample index advances
        if m % 2:
            winners.append(alive[:, -1])
        alive = np.stack(winners, axis=1)
    calls = np.full(tasks, (n - 1) * judge.permutations, dtype=np.int64)
    pick = np.where(usable > 0, alive[:, 0], -1)
    return Verdicts(pick, tie, calls, failed, calls * 2)


def decide(kind: str, judge: ComparingJudge, success: np.ndarray, rng: np.random.Generator) -> Verdicts:
    """The verdicts of a `kind` (listwise or pairwise) comparing judge."""
    if kind not in KINDS:
        raise BonError(f"unknown comparing judge {kind!r}; valid: {', '.join(KINDS)}")
    return (listwise if kind == "listwise" else pairwise)(judge, success, rng)


def with_picks(table: pl.DataFrame, verdicts: Verdicts, n: int) -> pl.DataFrame:
    """The candidate table (task-major, n per task) with `listwise_pick`: 1 picked, 0 not, null where the
    task's verdict failed (as bon.verdicts.with_picks)."""
    pick = np.repeat(verdicts.pick, n)
    sample = np.arange(pick.size) % n
    values = pl.Series(COLUMN, (sample == pick).astype(np.int8)).set(pl.Series(pick < 0), None)
    return table.with_columns(values.cast(pl.Int8))

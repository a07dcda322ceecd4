"""Judge quality (StepAcc, FirstErrAcc, confusion) and selection statistics (bootstrap, paired tests).

StepAcc and FirstErrAcc follow AgentProcessBench: StepAcc is micro-averaged over every
human-labelled step; FirstErrAcc compares the index of the first -1 (no -1 on both sides
is a match). A missing label or a failed judgement is always a mismatch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from bon.types import Judgement

LABEL_ORDER = (-1, 0, 1)


def first_error(steps: Sequence[int], labels: dict[int, int | None]) -> int | None:
    """Absolute index of the first step labelled -1, None when there is none."""
    return next((i for i in sorted(steps) if labels.get(i) == -1), None)


@dataclass
class PrmScore:
    """Counts behind StepAcc and FirstErrAcc; add scores to pool them (as the paper's average does)."""

    n_steps: int = 0
    n_step_correct: int = 0
    n_trajectories: int = 0
    n_first_error_correct: int = 0
    n_failed: int = 0
    # confusion[h, p]: human label LABEL_ORDER[h], prediction LABEL_ORDER[p] or missing (p = 3)
    confusion: np.ndarray = field(default_factory=lambda: np.zeros((3, 4), dtype=np.int64))

    def add(self, steps: Sequence[int], human: Judgement, predicted: Judgement) -> None:
        """Score one trajectory: `steps` are its human-labelled assistant message indices."""
        failed = predicted.failed
        self.n_trajectories += 1
        self.n_failed += failed
        for i in steps:
            h = human.step_labels[i]
            p = None if failed else predicted.step_labels.get(i)
            self.n_steps += 1
            self.n_step_correct += p == h
            self.confusion[LABEL_ORDER.index(h), 3 if p is None else LABEL_ORDER.index(p)] += 1
        if not failed:
            # an unlabelled step before the judge's first -1 leaves its first error unknown: a mismatch
            undecided = next((i for i in sorted(steps) if predicted.step_labels.get(i) in (-1, None)), None)
            known = undecided is None or predicted.step_labels.get(undecided) == -1
            self.n_first_error_correct += known and first_error(steps, human.step_labels) == undecided

    def __add__(self, other: "PrmScore") -> "PrmScore":
        return PrmScore(self.n_steps + other.n_steps, self.n_step_correct + other.n_step_correct,
                        self.n_trajectories + other.n_trajectories,
                        self.n_first_error_correct + other.n_first_error_correct,
                        self.n_failed + other.n_failed, self.confusion + other.confusion)

    @property
    def step_acc(self) -> float:
        return self.n_step_correct / self.n_steps if self.n_steps else float("nan")

    @property
    def first_err_acc(self) -> float:
        return self.n_first_error_correct / self.n_trajectories if self.n_trajectories else float("nan")

    def row_normalized(self) -> np.ndarray:
        """Confusion matrix with each human-label row summing to 1 (columns -1, 0, +1, missing)."""
        totals = self.confusion.sum(axis=1, keepdims=True)
        return self.confusion / np.maximum(totals, 1)


NORMAL_ABOVE = 20_000


def bootstrap_ci(values: Iterable[float], confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over tasks (scipy), exact when all values agree.

    Above NORMAL_ABOVE tasks the bootstrap and the normal interval agree to well under a
    tenth of a point, and resampling would take seconds, so the normal interval is used.
    """
    data = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    if data.size == 0:
        return float("nan"), float("nan")
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    if data.size > NORMAL_ABOVE:
        from statistics import NormalDist

        half = NormalDist().inv_cdf(0.5 + confidence / 2) * data.std(ddof=1) / np.sqrt(data.size)
        return float(data.mean() - half), float(data.mean() + half)
    from scipy.stats import bootstrap  # imported here: scipy.stats costs ~1 s at start-up

    res = bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                    method="percentile", vectorized=True, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class Paired:
    """Selector A minus selector B on the same tasks."""

    n_tasks: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    a_only: int  # tasks A gets right and B wrong
    b_only: int
    p_value: float  # exact McNemar test on the discordant tasks


def paired(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, seed: int = 0) -> Paired:
    """Compare two selectors task by task: bootstrap CI of the difference and an exact McNemar test."""
    from scipy.stats import binomtest

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired comparison needs the same tasks on both sides ({x.size} vs {y.size})")
    low, high = bootstrap_ci(x - y, confidence, seed=seed)
    a_only, b_only = int(np.sum((x > 0.5) & (y < 0.5))), int(np.sum((x < 0.5) & (y > 0.5)))
    p = binomtest(a_only, a_only + b_only).pvalue if a_only + b_only else 1.0
    return Paired(x.size, float(x.mean()), float(y.mean()), float((x - y).mean()), low, high, a_only, b_only, float(p))

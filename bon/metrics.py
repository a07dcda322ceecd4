"""Judge quality (StepAcc, FirstErrAcc, confusion) and selection statistics (bootstrap, paired tests).

StepAcc and FirstErrAcc follow the AgentProcessBench paper (Table 3) and its evaluation script:
- StepAcc is micro-averaged over every human-labelled step; a step the judge left unlabelled, or
  any step of a failed judgement, counts as wrong.
- FirstErrAcc compares the index of the human's first -1 with the judge's first -1 among the
  labels the judge gave (unlabelled steps are skipped); no -1 on both sides is a match. A failed
  judgement has no labels, so it matches every trajectory the human found no error in.
- `first_err_acc_strict` is a stricter reading kept for comparison, never as the headline: a
  failed judgement is a mismatch, and so is an unlabelled step before the judge's first -1 (the
  judge's first error is then unknown).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields

import numpy as np

from bon.types import Judgement

LABEL_ORDER = (-1, 0, 1)


def first_error(steps: Iterable[int], labels: Mapping[int, int | None]) -> int | None:
    """Smallest index among `steps` labelled -1, None when there is none."""
    return min((i for i in steps if labels.get(i) == -1), default=None)


def _strict_first_error_known(steps: Sequence[int], predicted: Mapping[int, int | None]) -> tuple[bool, int | None]:
    """(known, index) of the judge's first -1 when every earlier step must be labelled to know it."""
    undecided = next((i for i in sorted(steps) if predicted.get(i) in (-1, None)), None)
    return undecided is None or predicted.get(undecided) == -1, undecided


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
    n_first_error_strict_correct: int = 0

    def add(self, steps: Sequence[int], human: Judgement, predicted: Judgement) -> None:
        """Score one trajectory: `steps` are its human-labelled assistant message indices."""
        failed = predicted.failed
        labels = {} if failed else predicted.step_labels  # a failed call never becomes labels
        self.n_trajectories += 1
        self.n_failed += failed
        for i in steps:
            h = human.step_labels[i]
            p = labels.get(i)
            self.n_steps += 1
            self.n_step_correct += p == h
            self.confusion[LABEL_ORDER.index(h), 3 if p is None else LABEL_ORDER.index(p)] += 1
        truth = first_error(steps, human.step_labels)
        self.n_first_error_correct += first_error(labels, labels) == truth
        if not failed:
            known, judged = _strict_first_error_known(steps, labels)
            self.n_first_error_strict_correct += known and judged == truth

    def __add__(self, other: PrmScore) -> PrmScore:
        return PrmScore(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @property
    def step_acc(self) -> float:
        return self.n_step_correct / self.n_steps if self.n_steps else float("nan")

    @property
    def first_err_acc(self) -> float:
        """FirstErrAcc as the paper computes it (the headline)."""
        return self.n_first_error_correct / self.n_trajectories if self.n_trajectories else float("nan")

    @property
    def first_err_acc_strict(self) -> float:
        """FirstErrAcc counting failed calls and unresolved first errors as mismatches."""
        return self.n_first_error_strict_correct / self.n_trajectories if self.n_trajectories else float("nan")

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


def bootstrap_bands(values: np.ndarray, confidence: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over tasks (rows), for every column at once.

    The estimator of `bootstrap_ci`, but one set of task resamples serves all columns (e.g. every k of a
    best-of-k curve), so a whole curve costs one matrix product instead of one scipy call per point.
    NaN entries (a task without that column) are left out of that column's mean. A 1-D input gives a
    pair of floats.
    """
    import warnings

    x = np.asarray(values, dtype=float)
    one = x.ndim == 1
    x = x[:, None] if one else x
    t, k = x.shape
    ok = ~np.isnan(x)
    x0 = np.where(ok, x, 0.0)
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, k))
    chunk = max(1, 4_000_000 // max(t, 1))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        idx = rng.integers(0, t, size=(b, t)) + (np.arange(b) * t)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * t).reshape(b, t).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[start:start + b] = (counts @ x0) / (counts @ ok)
    alpha = 100 * (1 - confidence) / 2
    with warnings.catch_warnings():  # a column with no values at all gives an all-NaN slice: NaN is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(means, [alpha, 100 - alpha], axis=0)
    return (low[0], high[0]) if one else (low, high)

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

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from itertools import chain

import numpy as np

from bon.types import Judgement

LABEL_ORDER = (-1, 0, 1)


def first_error(steps: Iterable[int], labels: Mapping[int, int | None]) -> int | None:
    """Smallest index among `steps` labelled -1, None when there is none."""
    return min((i for i in steps if labels.get(i) == -1), default=None)


MISSING = 3  # label code of a step the judge left unlabelled (other codes: positions in LABEL_ORDER)
_NONE = np.iinfo(np.int64).max  # "no such step" in per-trajectory minima


def _first_per_owner(owner: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Smallest `index` per owner 0..n-1 (_NONE where an owner has none)."""
    first = np.full(n, _NONE, dtype=np.int64)
    np.minimum.at(first, owner, index)
    return first


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
        self.add_all([(steps, human, predicted)])

    def add_all(self, trajectories: Sequence[tuple[Sequence[int], Judgement, Judgement]]) -> None:
        """Score many trajectories at once: (steps, human, predicted) each."""
        table = StepTable.build([(steps, human) for steps, human, _ in trajectories])
        self += table.score([predicted for _, _, predicted in trajectories])

    def __add__(self, other: PrmScore) -> PrmScore:
        return PrmScore(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def __iadd__(self, other: PrmScore) -> PrmScore:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))
        return self

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


_CODE = {-1: 0, 0: 1, 1: 2, None: MISSING}  # label -> its LABEL_ORDER position; unlabelled -> MISSING


@dataclass(frozen=True)
class StepTable:
    """The human side of a set of trajectories as flat arrays: built once, scored against any number of judges.

    Python only gathers each judge's labels into one array entry per step; every comparison, first-error
    minimum and confusion count is then one numpy operation over all trajectories.
    """

    steps: tuple[Sequence[int], ...]
    owner: np.ndarray  # trajectory of each step
    index: np.ndarray  # message index of each step
    human: np.ndarray  # human label code of each step
    truth: np.ndarray  # the human's first -1 per trajectory (_NONE when there is none)

    @classmethod
    def build(cls, trajectories: Sequence[tuple[Sequence[int], Judgement]]) -> StepTable:
        """From (steps, human judgement) per trajectory; `steps` are its human-labelled message indices."""
        steps = tuple(s for s, _ in trajectories)
        lengths = np.fromiter(map(len, steps), np.int64, len(steps))
        owner = np.repeat(np.arange(len(steps)), lengths)
        index = np.fromiter((i for s in steps for i in s), np.int64, owner.size)
        human = np.fromiter((_CODE[h.step_labels[i]] for s, h in trajectories for i in s), np.int64, owner.size)
        minus = human == 0
        return cls(steps, owner, index, human, _first_per_owner(owner[minus], index[minus], len(steps)))

    @classmethod
    def from_labels(cls, n: int, owner: np.ndarray, index: np.ndarray, codes: np.ndarray) -> StepTable:
        """From flat arrays: step k is message `index[k]` of trajectory `owner[k]` (0..n-1, in order), with the
        human label code `codes[k]` (its position in LABEL_ORDER)."""
        owner, index, human = (np.asarray(a, dtype=np.int64) for a in (owner, index, codes))
        bounds = np.searchsorted(owner, np.arange(n + 1)).tolist()
        flat = index.tolist()
        steps = tuple(tuple(flat[a:b]) for a, b in zip(bounds, bounds[1:]))
        minus = human == 0
        return cls(steps, owner, index, human, _first_per_owner(owner[minus], index[minus], n))

    def score(self, predicted: Sequence[Judgement]) -> PrmScore:
        """Counts of one judge's judgements, one per trajectory in the table's order."""
        n = len(self.steps)
        if len(predicted) != n:
            raise ValueError(f"{len(predicted)} judgements for {n} trajectories")
        failed = np.fromiter((p.failed for p in predicted), bool, n)
        judged = [{} if p.failed else p.step_labels for p in predicted]  # a failed call never becomes labels
        labels_of_steps = chain.from_iterable(map(labels.get, s) for s, labels in zip(self.steps, judged))
        pred = np.fromiter(map(_CODE.__getitem__, labels_of_steps), np.int64, self.index.size)
        # the judge's first -1 among all the labels it gave, human-labelled step or not (the paper's reading)
        judged_first = np.fromiter((min((i for i, v in labels.items() if v == -1), default=_NONE)
                                    for labels in judged), np.int64, n)
        return self._counts(pred, judged_first, failed)

    def score_labels(self, failed: np.ndarray, owner: np.ndarray, index: np.ndarray, codes: np.ndarray) -> PrmScore:
        """`score` for a judge given as flat arrays instead of Judgements (same counts, no object per record).

        `failed[t]`: trajectory t's judgement failed or never came. Each label the judge gave is message
        `index[k]` of trajectory `owner[k]` with code `codes[k]` (position in LABEL_ORDER, MISSING for
        null), at most one per (trajectory, message); labels of failed trajectories are ignored.
        """
        n = len(self.steps)
        failed = np.asarray(failed, dtype=bool)
        if failed.shape != (n,):
            raise ValueError(f"{failed.size} judgements for {n} trajectories")
        owner, index, codes = (np.asarray(a, dtype=np.int64) for a in (owner, index, codes))
        kept = ~failed[owner]  # a failed call never becomes labels
        owner, index, codes = owner[kept], index[kept], codes[kept]
        # each human step looks up the judge's label of the same (trajectory, message): both as one sortable
        # number, trajectory * distinct messages + rank of the message (labels of other messages cannot match)
        pred = np.full(self.index.size, MISSING, dtype=np.int64)
        distinct = self._distinct_messages
        if distinct.size and index.size:
            rank = np.minimum(np.searchsorted(distinct, index), distinct.size - 1)
            mine = distinct[rank] == index
            judged = owner[mine] * distinct.size + rank[mine]
            order = np.argsort(judged, kind="stable")
            judged, judged_codes = judged[order], codes[mine][order]
            if judged.size:
                at = np.minimum(np.searchsorted(judged, self._step_numbers), judged.size - 1)
                hit = judged[at] == self._step_numbers
                pred[hit] = judged_codes[at[hit]]
        minus = codes == 0
        return self._counts(pred, _first_per_owner(owner[minus], index[minus], n), failed)

    @functools.cached_property
    def _distinct_messages(self) -> np.ndarray:
        """The message indices of the steps, sorted, each once (np.unique would import numpy.ma: 20 ms)."""
        ordered = np.sort(self.index)
        return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))] if ordered.size else ordered

    @functools.cached_property
    def _step_numbers(self) -> np.ndarray:
        """Each step as trajectory * distinct messages + rank of its message (see score_labels)."""
        return self.owner * self._distinct_messages.size + np.searchsorted(self._distinct_messages, self.index)

    def _counts(self, pred: np.ndarray, judged_first: np.ndarray, failed: np.ndarray) -> PrmScore:
        """The counts, from the judge's label code of each step, its first -1 and failures per trajectory."""
        n = len(self.steps)
        # the strict reading: the first step labelled -1 or left unlabelled must be a -1
        undecided = (pred == 0) | (pred == MISSING)
        first_undecided = _first_per_owner(self.owner[undecided], self.index[undecided], n)
        first_minus_one = _first_per_owner(self.owner[pred == 0], self.index[pred == 0], n)
        known = (first_undecided == _NONE) | (first_undecided == first_minus_one)
        return PrmScore(
            n_steps=self.index.size, n_step_correct=int(np.count_nonzero(pred == self.human)), n_trajectories=n,
            n_first_error_correct=int(np.count_nonzero(judged_first == self.truth)), n_failed=int(failed.sum()),
            confusion=np.bincount(self.human * 4 + pred, minlength=12).reshape(3, 4).astype(np.int64),
            n_first_error_strict_correct=int(np.count_nonzero(~failed & known & (first_undecided == self.truth))))


NORMAL_ABOVE = 20_000


def bootstrap_ci(values: Iterable[float], confidence: float = 0.95, n_resamples: int = 9999,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over tasks, exact when all values agree.

    numpy throughout (scipy.stats would cost ~1 s of import on every run): the interval scipy.stats.bootstrap
    (method="percentile") estimates, from a different stream of resamples. Seed: the resamples come from
    numpy.random.default_rng(seed), so the same values, resamples and seed give the same interval. The
    interval is the `confidence` central range of the resampled means by numpy's default (linear)
    percentile. Above NORMAL_ABOVE tasks the bootstrap and the normal interval agree to well under a
    tenth of a point, and resampling would take seconds, so the normal interval is used.
    """
    data = np.asarray(values if isinstance(values, np.ndarray) else list(values), dtype=float)
    return bootstrap_cis([data], confidence, n_resamples, seed)[0]


def bootstrap_cis(columns: Sequence[np.ndarray], confidence: float = 0.95, n_resamples: int = 9999,
                  seed: int = 0) -> list[tuple[float, float]]:
    """`bootstrap_ci` of each column, the same to the last bit, for less: columns of one size that resample
    task indices share the draws (each alone would draw the same indices from the same seed), so a
    best-of-k curve over N values of k draws its indices once instead of N times.

    A column with few distinct values resamples their counts instead: how often each value is drawn is
    multinomial(n, its share), exactly the distribution n draws of task indices give, at a cost of
    resamples x distinct values instead of resamples x tasks."""
    out: dict[int, tuple[float, float]] = {}
    shared: dict[int, list[int]] = {}  # size -> the columns that resample task indices
    data = [np.asarray(c, dtype=float) for c in columns]
    for i, x in enumerate(data):
        if x.size == 0:
            out[i] = float("nan"), float("nan")
        elif np.all(x == x[0]):
            out[i] = float(x[0]), float(x[0])
        elif x.size > NORMAL_ABOVE:
            from statistics import NormalDist

            half = NormalDist().inv_cdf(0.5 + confidence / 2) * x.std(ddof=1) / np.sqrt(x.size)
            out[i] = float(x.mean() - half), float(x.mean() + half)
        else:
            values, counts = np.unique(x, return_counts=True)
            if values.size <= FEW_VALUES:  # how often each value is drawn: multinomial, its own draws
                rng = np.random.default_rng(seed)
                out[i] = _central(rng.multinomial(x.size, counts / x.size, size=n_resamples) @ values / x.size,
                                  confidence)
            else:
                shared.setdefault(x.size, []).append(i)
    for members in shared.values():
        for i, means in zip(members, _resampled_means([data[i] for i in members], n_resamples, seed)):
            out[i] = _central(means, confidence)
    return [out[i] for i in range(len(data))]


FEW_VALUES = 64  # up to this many distinct values, resample their counts (0/1 accuracy, ties, paired differences)


def _central(means: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = 100 * (1 - confidence) / 2
    low, high = np.percentile(means, [alpha, 100 - alpha])
    return float(low), float(high)


def _resampled_means(columns: list[np.ndarray], n_resamples: int, seed: int) -> list[np.ndarray]:
    """Means of `n_resamples` resamples with replacement of each column (all of one size n), from one draw
    of task indices, in blocks of at most 4M."""
    n = columns[0].size
    rng = np.random.default_rng(seed)
    means = [np.empty(n_resamples) for _ in columns]
    chunk = max(1, 4_000_000 // n)
    for start in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - start), n))
        for column, out in zip(columns, means):
            out[start:start + idx.shape[0]] = np.take(column, idx).mean(axis=1)
    return means


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
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired comparison needs the same tasks on both sides ({x.size} vs {y.size})")
    low, high = bootstrap_ci(x - y, confidence, seed=seed)
    a_only, b_only = int(np.sum((x > 0.5) & (y < 0.5))), int(np.sum((x < 0.5) & (y > 0.5)))
    p = mcnemar_exact(a_only, b_only)
    return Paired(x.size, float(x.mean()), float(y.mean()), float((x - y).mean()), low, high, a_only, b_only, float(p))


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value: twice the smaller binomial(n, 1/2) tail of the discordant counts, at most 1.

    The binomial test at p = 1/2 (scipy.stats.binomtest's two-sided value, since the distribution is
    symmetric), summed in log space so that thousands of discordant tasks neither overflow nor import scipy.
    """
    n, k = a_only + b_only, min(a_only, b_only)
    if n == 0 or 2 * k >= n:
        return 1.0
    j = np.arange(1, k + 1)
    log_comb = np.concatenate(([0.0], np.cumsum(np.log((n - j + 1) / j))))  # log C(n, i), i = 0..k
    top = log_comb.max()
    log_tail = top + np.log(np.exp(log_comb - top).sum()) - n * np.log(2)
    return float(min(1.0, 2 * np.exp(log_tail)))


def bootstrap_bands(values: np.ndarray, confidence: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over tasks (rows), for every column at once.

    The estimator of `bootstrap_ci`, but one set of task resamples serves all columns (e.g. every k of a
    best-of-k curve), so a whole curve costs one matrix product instead of one resampling per point.
    NaN entries (a task without that column) are left out of that column's mean. A 1-D input gives a
    pair of floats.

    Seed: resamples are drawn from numpy.random.default_rng(seed), in blocks of whole resamples of
    task indices, so the same values, resamples and seed always give the same interval (and a
    different seed an equally valid one). The interval is the `confidence` central range of the
    resampled means by numpy's default (linear) percentile, as scipy.stats.bootstrap's percentile method.
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

"""Expected selection accuracy when only k of a task's N candidates are available, k = 1..N.

The value for k is the mean over all k-subsets of the candidates (tie-aware: a tied top
set counts with its mean success), so the curve does not depend on sample order.

* Score-based selectors (filters and column keys): exact closed form. Filters with
  fallback are the same as ranking first by the filter indicator, so the selector is a
  lexicographic score. With l candidates strictly below i and t others tied with it,
  breaking ties uniformly puts i at a uniform position among its tie group, and
      P(i picked | k-subset) = [C(l+t+1, k) - C(l, k)] / ((t+1) * C(N, k)).
* Vote-based selectors (majority): a candidate's votes depend on who else is in the
  subset. Exact enumeration of every k-subset when that is cheap (2^N - 1 subsets for at
  most `exact_budget` task-subset pairs); otherwise a Monte Carlo estimate over
  `draws` uniformly random k-subsets per task and k, reported with its standard error.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from bon.selectors.spec import Key, Selector
from bon.selectors.vectorized import Batch, _key_values, passes, top_mask


@dataclass
class Curve:
    """per_task[t, k-1] is task t's expected accuracy with k candidates (NaN when k > its N)."""

    per_task: np.ndarray
    method: str  # "closed_form", "enumeration" or "monte_carlo (R draws)"
    std_error: np.ndarray  # Monte Carlo standard error of the mean per k; zeros when exact

    @property
    def mean(self) -> np.ndarray:
        return np.nanmean(self.per_task, axis=0)

    @property
    def ks(self) -> np.ndarray:
        return np.arange(1, self.per_task.shape[1] + 1)


def _binom_table(n_max: int) -> np.ndarray:
    table = np.zeros((n_max + 2, n_max + 2))
    for n in range(n_max + 2):
        for k in range(n + 1):
            table[n, k] = math.comb(n, k)
    return table


def _lexicographic_ranks(selector: Selector, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate: how many valid candidates rank strictly below it, and how many tie with it."""
    keys = [passes(f, batch).astype(float) for f in selector.filters]
    keys += [_key_values(k, batch) for k in selector.rank if isinstance(k, Key)]
    n = batch.valid.shape[1]
    below = np.zeros((batch.n_tasks, n, n), dtype=bool)  # below[t, i, j]: j ranks strictly below i
    equal = np.ones((batch.n_tasks, n, n), dtype=bool)
    for v in keys:
        vi, vj = v[:, :, None], v[:, None, :]
        below |= equal & (vj < vi)
        equal &= vj == vi
    other = batch.valid[:, None, :] & ~np.eye(n, dtype=bool)[None]
    return (below & other).sum(axis=2), (equal & other).sum(axis=2)


def _closed_form(selector: Selector, batch: Batch) -> np.ndarray:
    """Filters here rank by their own indicator, which is exactly fallback filtering inside any subset.

    Summing success/(t+1) per task at n = l+t+1 and at n = l turns every k into one matrix
    product with the binomial table: value[t, k] = sum_n M[t, n] C(n, k) / C(N_t, k).
    """
    lower, tied = _lexicographic_ranks(selector, batch)
    n_task = batch.valid.sum(axis=1)
    n_max = batch.valid.shape[1]
    comb = _binom_table(n_max)
    width = n_max + 2
    w = np.where(batch.valid & batch.success, 1.0 / (tied + 1), 0.0).ravel()
    base = (np.arange(batch.n_tasks)[:, None] * width).repeat(n_max, axis=1).ravel()
    size = batch.n_tasks * width
    m = (np.bincount(base + (lower + tied + 1).ravel(), weights=w, minlength=size)
         - np.bincount(base + lower.ravel(), weights=w, minlength=size)).reshape(batch.n_tasks, width)
    numerator = m @ comb[:width, 1:n_max + 1]
    ks = np.arange(1, n_max + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):  # tasks with fewer than k candidates
        return np.where(n_task[:, None] >= ks, numerator / comb[n_task][:, 1:n_max + 1], np.nan)


def _subset_accuracy(selector: Selector, batch: Batch, subset: np.ndarray) -> np.ndarray:
    top = top_mask(selector, batch, subset)
    return (top & batch.success).sum(axis=1) / np.maximum(top.sum(axis=1), 1)


def _enumerate(selector: Selector, batch: Batch) -> np.ndarray:
    n_task = batch.valid.sum(axis=1)
    n_max = batch.valid.shape[1]
    out = np.full((batch.n_tasks, n_max), np.nan)
    for k in range(1, n_max + 1):
        total = np.zeros(batch.n_tasks)
        count = np.zeros(batch.n_tasks)
        for combo in itertools.combinations(range(n_max), k):
            subset = np.zeros(n_max, dtype=bool)
            subset[list(combo)] = True
            usable = n_task > max(combo)  # slots are filled from the left, so the subset exists
            acc = _subset_accuracy(selector, batch, np.broadcast_to(subset, batch.valid.shape))
            total += np.where(usable, acc, 0.0)
            count += usable
        out[:, k - 1] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def _monte_carlo(selector: Selector, batch: Batch, draws: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_task = batch.valid.sum(axis=1)
    n_max = batch.valid.shape[1]
    sums = np.zeros((batch.n_tasks, n_max))
    squares = np.zeros((batch.n_tasks, n_max))
    for _ in range(draws):
        order = np.argsort(np.where(batch.valid, rng.random(batch.valid.shape), np.inf), axis=1)
        position = np.empty_like(order)
        np.put_along_axis(position, order, np.arange(n_max)[None, :].repeat(batch.n_tasks, 0), axis=1)
        for k in range(1, n_max + 1):
            acc = _subset_accuracy(selector, batch, position < k)
            sums[:, k - 1] += acc
            squares[:, k - 1] += acc * acc
    mean = sums / draws
    var_task = np.maximum(squares / draws - mean**2, 0.0) / max(draws - 1, 1)
    usable = n_task[:, None] >= np.arange(1, n_max + 1)[None, :]
    mean = np.where(usable, mean, np.nan)
    std_error = np.sqrt(np.nansum(np.where(usable, var_task, np.nan), axis=0)) / np.maximum(usable.sum(axis=0), 1)
    return mean, std_error


def curve(selector: Selector, batch: Batch, exact_budget: int = 2_000_000, draws: int | None = None,
          seed: int = 0) -> Curve:
    """Best-of-k curve of `selector` over every task of `batch`."""
    n_max = batch.valid.shape[1]
    zeros = np.zeros(n_max)
    if selector.score_based:
        return Curve(_closed_form(selector, batch), "closed_form", zeros)
    if (2**n_max - 1) * batch.n_tasks <= exact_budget:
        return Curve(_enumerate(selector, batch), "enumeration", zeros)
    draws = draws or max(2, min(64, exact_budget // (batch.n_tasks * n_max)))
    mean, se = _monte_carlo(selector, batch, draws, seed)
    return Curve(mean, f"monte_carlo ({draws} draws per task and k)", se)

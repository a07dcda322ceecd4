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

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from bon.selectors.spec import Key, Selector, Votes
from bon.selectors.vectorized import Batch, _count, _key_values, passes, top_mask


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
    """For each candidate: how many valid candidates rank strictly below it, and how many tie with it.

    Every key becomes a small integer rank within its task (a filter is 0/1, a column its dense
    rank from one sort per row); the keys merge into one integer rank, and a per-task histogram of
    that rank gives both counts: O(T N log N) and no [T, N, N] temporaries.
    """
    parts: list[tuple[object, np.ndarray]] = [(f, passes(f, batch)) for f in selector.filters]
    parts += [(k, _key_values(k, batch)) for k in selector.rank if isinstance(k, Key)]
    if any(v.dtype.kind == "f" and np.isnan(v).any() for _, v in parts):  # NaN ties nothing: compare pairwise
        return _pairwise_ranks([v for _, v in parts], batch)
    n_tasks, n = batch.valid.shape
    rank = np.zeros(batch.valid.shape, dtype=np.int64)
    bound = 1  # rank < bound
    for spec, v in parts:  # a key's rank is shared by every selector that uses the key
        key_rank, size = batch._cached(("rank", spec), functools.partial(_small_rank, v, 4 * n))
        rank = rank * size + key_rank
        bound *= size
        if bound > 4 * n:  # keep the histogram small
            rank, bound = _row_dense_rank(rank), n
    cell = (rank + (np.arange(n_tasks) * bound)[:, None]).ravel()
    counted = cell if batch._full else cell[batch.valid.ravel()]
    counts = np.bincount(counted, minlength=n_tasks * bound).reshape(n_tasks, bound)
    lower = np.cumsum(counts, axis=1) - counts
    tied = np.maximum(counts.ravel()[cell].reshape(rank.shape) - 1, 0)  # 0, not -1, for padding
    return lower.ravel()[cell].reshape(rank.shape), tied


def _small_rank(v: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
    """(rank, bound): integers in [0, bound) ordered like `v` within each row, equal where `v` is equal.

    Booleans and small whole numbers (counts, labels) are their own rank; anything else gets its
    dense rank within the row (bound N).
    """
    if v.dtype == bool:
        return v.view(np.uint8).astype(np.int64), 2
    low, high = v.min(), v.max()
    if np.isfinite(low) and np.isfinite(high) and high - low < limit and (v == np.floor(v)).all():
        return (v - low).astype(np.int64), int(high - low) + 1
    return _row_dense_rank(v), v.shape[1]


def _row_dense_rank(v: np.ndarray) -> np.ndarray:
    """Dense rank of each value within its row (equal values, equal rank; 0 is the lowest)."""
    order = np.argsort(v, axis=1)
    ordered = np.take_along_axis(v, order, axis=1)
    step = np.zeros(v.shape, dtype=np.int64)
    step[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    rank = np.empty_like(step)
    np.put_along_axis(rank, order, np.cumsum(step, axis=1), axis=1)
    return rank


def _pairwise_ranks(keys: list[np.ndarray], batch: Batch) -> tuple[np.ndarray, np.ndarray]:
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
    n_task = batch.n_valid
    n_max = batch.valid.shape[1]
    comb = _binom_table(n_max)
    width = n_max + 2
    w = np.where(batch.success, 1.0 / (tied + 1), 0.0).ravel()  # padding never succeeds
    base = np.arange(batch.n_tasks)[:, None] * width
    size = batch.n_tasks * width
    m = (np.bincount((base + (lower + tied + 1)).ravel(), weights=w, minlength=size)
         - np.bincount((base + lower).ravel(), weights=w, minlength=size)).reshape(batch.n_tasks, width)
    numerator = m @ comb[:width, 1:n_max + 1]
    ks = np.arange(1, n_max + 1)[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):  # tasks with fewer than k candidates
        return np.where(n_task[:, None] >= ks, numerator / comb[n_task][:, 1:n_max + 1], np.nan)


def _subset_accuracy(selector: Selector, batch: Batch, subset: np.ndarray) -> np.ndarray:
    top = top_mask(selector, batch, subset)
    return _count(top & batch.success) / np.maximum(_count(top), 1)


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
        accuracy = _growing_votes(selector, batch, order)
        if accuracy is None:
            position = np.empty_like(order)
            np.put_along_axis(position, order, np.arange(n_max)[None, :].repeat(batch.n_tasks, 0), axis=1)
            accuracy = np.stack([_subset_accuracy(selector, batch, position < k) for k in range(1, n_max + 1)], 1)
        sums += accuracy
        squares += accuracy * accuracy
    mean = sums / draws
    var_task = np.maximum(squares / draws - mean**2, 0.0) / max(draws - 1, 1)
    usable = n_task[:, None] >= np.arange(1, n_max + 1)[None, :]
    mean = np.where(usable, mean, np.nan)
    std_error = np.sqrt(np.nansum(np.where(usable, var_task, np.nan), axis=0)) / np.maximum(usable.sum(axis=0), 1)
    return mean, std_error


def _growing_votes(selector: Selector, batch: Batch, order: np.ndarray) -> np.ndarray | None:
    """Accuracy [T, k-1] with the first k slots of `order`, k = 1..N, for a selector that is one votes key.

    Candidates join in `order`, so step k only changes the joining candidate's answer group:
    its size, successes and total before and after the join are computed for all k at once,
    then a pass over k keeps each task's best total and the size and successes of its top set.
    Exact: a weighted total is summed in slot order (as `top_mask`'s bincount does) and rounded
    like it. None when this does not apply (filters, other keys, or negative weights, which could
    lower a total as a candidate joins).
    """
    if selector.filters or len(selector.rank) != 1 or not isinstance(key := selector.rank[0], Votes):
        return None
    groups, has_vote = batch.vote_groups(key.normalizer)
    n_tasks, n = batch.valid.shape
    weight = None if key.weight is None else np.where(has_vote, batch.weights(key.weight), 0.0)
    if weight is not None and (weight < 0).any():
        return None
    rows = np.arange(n_tasks)[:, None]
    # small integers as int32 throughout: these [T, N] arrays set a Monte Carlo curve's memory
    leader = (groups.reshape(n_tasks, n) - rows * n).astype(np.int32)  # the slot naming each answer group
    group, joins = leader[rows, order], batch.valid[rows, order]  # of the k-th candidate to join
    wins = joins & batch.success[rows, order]
    # members/right: candidates (and successes) of the k-th joiner's group among the first k+1 to join,
    # read off each task's candidates sorted by (group, turn); padding is its own group and joins last
    by_group = np.argsort(group * n + np.arange(n, dtype=np.int32), axis=1).astype(np.int32)
    sorted_group = np.take_along_axis(group, by_group, axis=1)
    run = np.ones((n_tasks, n), dtype=bool)
    run[:, 1:] = sorted_group[:, 1:] != sorted_group[:, :-1]
    run_start = np.maximum.accumulate(np.where(run, np.arange(n, dtype=np.int32), np.int32(0)), axis=1)
    won = np.cumsum(np.take_along_axis(wins, by_group, axis=1), axis=1, dtype=np.int32)
    won_before = np.take_along_axis(won - np.take_along_axis(wins, by_group, axis=1), run_start, axis=1)
    members, right = np.empty_like(by_group), np.empty_like(by_group)
    np.put_along_axis(members, by_group, np.arange(n) - run_start + 1, axis=1)
    np.put_along_axis(right, by_group, won - won_before, axis=1)
    if weight is None:
        new = np.where(has_vote[rows, order], members, 0).astype(np.int32)  # a count is exact as an int
        old = new - 1
    else:
        # the group's total once the k-th candidate has joined: a running sum in turn order, which
        # rounds (to 9 decimals, as top_mask does) exactly like the slot-order sum unless it lies within
        # float error of a rounding boundary; those few tasks are summed again in slot order
        joined_weight = np.take_along_axis(weight[rows, order], by_group, axis=1)
        running = np.cumsum(joined_weight, axis=1)
        running -= np.take_along_axis(running - joined_weight, run_start, axis=1)
        upto = np.empty_like(running)
        np.put_along_axis(upto, by_group, running, axis=1)
        err = 4 * n * np.finfo(np.float64).eps * (np.abs(weight).sum(axis=1, keepdims=True) + 1.0)
        unsure = (np.round(upto - err, 9) != np.round(upto + err, 9)).any(axis=1)
        if unsure.any():
            upto[unsure] = _slot_order_totals(leader[unsure], group[unsure], order[unsure], weight[unsure])
        # before the k-th joined, the group's total was the one after its previous candidate joined
        sorted_upto = np.take_along_axis(upto, by_group, axis=1)
        before = np.zeros_like(upto)
        np.put_along_axis(before, by_group, np.where(run, 0.0, np.roll(sorted_upto, 1, axis=1)), axis=1)
        new, old = np.round(upto, 9), np.round(before, 9)
    del leader, group, by_group, sorted_group, run, run_start, won, won_before  # not needed in the pass over k
    # one contiguous row per turn k for the pass over k (small ints: less to copy)
    joins, wins, new, old = (np.ascontiguousarray(a.T) for a in (joins, wins, new, old))
    sizes, rights = (np.ascontiguousarray(a.T, dtype=np.int32) for a in (members, right))
    del members, right
    best = np.full(n_tasks, -np.inf)
    top_n = np.zeros(n_tasks, dtype=np.int64)
    top_right = np.zeros(n_tasks, dtype=np.int64)
    out = np.empty((n, n_tasks))
    for k in range(n):  # tasks with fewer than k+1 candidates stay as they were
        j, v, size, won = joins[k], new[k], sizes[k], rights[k]
        higher = j & (v > best)
        tied_now = j & (v == best)
        only_new = tied_now & (size > 1) & (old[k] == best)  # the group was on top: just this one
        whole = tied_now & ~only_new  # the group reaches the top now: all its candidates so far
        top_n = np.where(higher, size, top_n + only_new + np.where(whole, size, 0))
        top_right = np.where(higher, won, top_right + (only_new & wins[k]) + np.where(whole, won, 0))
        best = np.where(higher, v, best)
        out[k] = top_right / np.maximum(top_n, 1)
    out = out.T
    return out


def _slot_order_totals(leader: np.ndarray, group: np.ndarray, order: np.ndarray,
                       weight: np.ndarray) -> np.ndarray:
    """[t, k]: total weight of the k-th joiner's group among the first k+1 to join, summed in slot order."""
    n = leader.shape[1]
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.broadcast_to(np.arange(n), order.shape), axis=1)
    step = np.arange(n)[None, :]
    total = np.zeros(leader.shape)
    for i in range(n):
        member = (leader[:, i:i + 1] == group) & (position[:, i:i + 1] <= step)
        total = total + np.where(member, weight[:, i:i + 1], 0.0)
    return total


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

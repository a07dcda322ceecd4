"""Run selectors over a whole candidate table at once.

The table is laid out densely as tasks x slots (slots sorted by sample index, padded
where a task has fewer candidates), so one selector over 100,000 tasks is a handful
of numpy operations instead of 100,000 Python calls.

The layout never sorts the table's rows by their strings: a table whose rows already come
task by task (checked, not assumed) only has its distinct task keys sorted; any other table
gets integer codes per key column (distinct values sorted once) and is laid out by those.
Tasks come out in the order of (judge, subset, task_id), slots in the order of sample.
"""
from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import polars as pl

from bon.errors import BonError
from bon.selectors import normalize
from bon.selectors.spec import Filter, Key, Selector, Votes

GROUP_COLUMNS = ("judge", "subset", "task_id")
_T = TypeVar("_T")
_PL_OPS = {"==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt,
           "<=": operator.le}
_NP_OPS = {"==": np.equal, "!=": np.not_equal, ">": np.greater, ">=": np.greater_equal,
           "<": np.less, "<=": np.less_equal}


@dataclass
class Batch:
    """A candidate table as dense [tasks, slots] arrays; `groups` has one row per task.

    Derived arrays (filter masks, key values, vote groups) are cached, so selectors and
    best-of-k curves that share a part compute it once per batch. When every task is a block
    of N consecutive rows (`_blocks`: task t is rows _blocks[t]*N .. +N-1), columns are laid
    out by reshaping (and reordering whole blocks) instead of gathering row by row.
    """

    groups: pl.DataFrame
    valid: np.ndarray
    table: pl.DataFrame
    _slot_rows: np.ndarray | None = None  # row index into `table` per (task, slot), -1 for padding
    _blocks: np.ndarray | None = None
    _cache: dict[object, Any] = field(default_factory=dict)
    _codes: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    _full: bool = field(init=False, default=False)
    _in_order: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self._full = self._blocks is not None or bool(self.valid.all())
        if self._blocks is None and self._full and self._slot_rows is not None:
            first = self._slot_rows[:, :1]
            n = self.valid.shape[1]
            if (first % n == 0).all() and (self._slot_rows == first + np.arange(n)).all():
                self._blocks = first[:, 0] // n
        self._in_order = self._blocks is not None and bool((self._blocks == np.arange(self.n_tasks)).all())

    @property
    def n_tasks(self) -> int:
        return self.valid.shape[0]

    @property
    def slot_rows(self) -> np.ndarray:
        """Row index into `table` per (task, slot), -1 for padding."""
        if self._slot_rows is None:
            assert self._blocks is not None
            n = self.valid.shape[1]
            self._slot_rows = self._blocks[:, None] * n + np.arange(n)
        return self._slot_rows

    def _row_of(self, slot: np.ndarray) -> np.ndarray:
        """Row index into `table` of each task's candidate in `slot` [T]."""
        if self._blocks is not None:
            return self._blocks * self.valid.shape[1] + slot
        return self.slot_rows[np.arange(self.n_tasks), slot]

    def _lay_out(self, values: np.ndarray, pad: float | int | bool) -> np.ndarray:
        """Per-row values as [T, N]; padding slots get `pad`."""
        if self._blocks is not None:
            blocks = values.reshape(-1, self.valid.shape[1])
            return blocks if self._in_order else blocks[self._blocks]
        out = values[np.maximum(self.slot_rows, 0)]
        if not self._full:
            out[~self.valid] = pad
        return out

    def _row_values(self, name: str) -> np.ndarray:
        column = self.table.get_column(name)
        if column.dtype != pl.Float64:
            column = column.cast(pl.Float64)
        return (column.fill_null(np.nan) if column.null_count() else column).to_numpy()

    def col(self, name: str) -> np.ndarray:
        """Column as float [T, N]; null and padding are NaN."""
        return self._lay_out(self._row_values(name), np.nan)

    def _cached(self, key: object, build: Callable[[], _T]) -> _T:
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]

    @property
    def success(self) -> np.ndarray:
        """Boolean [T, N]: the candidate succeeded (null and padding are False)."""
        def build() -> np.ndarray:
            column = self.table.get_column("success")
            if column.dtype != pl.Boolean:
                column = column.cast(pl.Float64) > 0
            return self._lay_out(column.fill_null(False).to_numpy(), False)
        return self._cached("success", build)

    @property
    def n_valid(self) -> np.ndarray:
        return self._cached("n_valid", lambda: _count(self.valid))

    def weights(self, column: str) -> np.ndarray:
        """Float [T, N] vote weights: the column with null and padding as 0."""
        return self._cached(("weights", column), lambda: np.nan_to_num(self.col(column), nan=0.0))

    def vote_groups(self, normalizer: str) -> tuple[np.ndarray, np.ndarray]:
        """(groups, has_vote): flat [T*N] vote-group ids and boolean [T, N] "casts a vote".

        A slot's group is task * N + one slot of the same task with an equal normalised answer,
        so one bincount sums every task's votes at once; a slot without a vote is its own group
        of weight 0. 64-bit hashes stand in for the normalised strings (a collision within one
        task is ~1e-18 likely).
        """
        if normalizer not in self._codes:
            hashes, has_vote = _normalised_hashes(self.table.get_column("answer"), normalizer)
            hashes, has_vote = self._lay_out(hashes, 0), self._lay_out(has_vote, False)
            self._codes[normalizer] = (_equal_value_groups(hashes, has_vote), has_vote)
        return self._codes[normalizer]


def _normalised_hashes(answer: pl.Series, normalizer: str) -> tuple[np.ndarray, np.ndarray]:
    """Per row: hash of the normalised answer, and whether it casts a vote (not null, not empty).

    Each distinct answer is normalised once: a Categorical column's distinct strings are looked up by
    code; a String column's rows are grouped by the hash of their raw text, and every row is checked to
    equal its group's text (on a collision, all rows are normalised).
    """
    if answer.dtype == pl.Categorical:
        names, row = _category_rows(answer)
        norm_names = pl.concat([_normalise(names, normalizer), pl.Series([None], dtype=pl.String)])  # + null's
        return norm_names.hash(seed=0).to_numpy()[row], norm_names.is_not_null().to_numpy()[row]
    _, first, inverse = np.unique(answer.hash(seed=0).to_numpy(), return_index=True, return_inverse=True)
    distinct = answer.gather(first)
    if answer.ne_missing(distinct.gather(inverse.reshape(-1))).any():
        distinct, inverse = answer, np.arange(answer.len())
    norm_answer = _normalise(distinct, normalizer)
    hashes = norm_answer.hash(seed=0).to_numpy()[inverse]
    has_vote = norm_answer.is_not_null().to_numpy()[inverse]
    return hashes.reshape(-1), has_vote.reshape(-1)


def _normalise(answers: pl.Series, normalizer: str) -> pl.Series:
    """The normalised answers; in one part per polars thread (a string expression runs on one core)."""
    frame = pl.DataFrame({"answer": answers})
    parts = max(1, min(2 * pl.thread_pool_size(), frame.height // 50_000))
    size = -(-frame.height // parts)
    plans = [frame.slice(i * size, size).lazy().select(normalize.expr("answer", normalizer)) for i in range(parts)]
    return pl.concat(pl.collect_all(plans)).get_column("answer")


def _equal_value_groups(values: np.ndarray, voting: np.ndarray) -> np.ndarray:
    """Flat task * N + the slot leading this value's run in the task (own slot if not voting)."""
    n_tasks, n = values.shape
    order = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, order, axis=1)
    ordered_voting = np.take_along_axis(voting, order, axis=1)
    new_run = np.ones(values.shape, dtype=bool)
    new_run[:, 1:] = (ordered[:, 1:] != ordered[:, :-1]) | (ordered_voting[:, 1:] != ordered_voting[:, :-1])
    run_start = np.maximum.accumulate(np.where(new_run, np.arange(n), 0), axis=1)
    leader = np.empty_like(order)
    np.put_along_axis(leader, order, np.take_along_axis(order, run_start, axis=1), axis=1)
    leader = np.where(voting, leader, np.arange(n))
    return (leader + (np.arange(n_tasks) * n)[:, None]).ravel()


# --------------------------------------------------------------------------- layout

def to_batch(table: pl.DataFrame) -> Batch:
    """Lay out a candidate table densely; one task = one (judge, subset, task_id)."""
    if table.height == 0:
        raise BonError("the candidate table is empty: there is nothing to select from")
    keys = [c for c in GROUP_COLUMNS if c in table.columns]
    if not keys:
        raise BonError(f"the candidate table has none of the task columns {list(GROUP_COLUMNS)}")
    sample = table.get_column("sample")
    if sample.null_count():
        row = int(np.flatnonzero(sample.is_null().to_numpy())[0])
        raise BonError(f"candidate table row {row}: sample is null; every candidate needs its sample index")
    samples = sample.cast(pl.Int64).to_numpy()
    return _layout_of_runs(table, keys, samples) or _layout_by_codes(table, keys, samples)


def _layout_of_runs(table: pl.DataFrame, keys: list[str], samples: np.ndarray) -> Batch | None:
    """The layout when each task's rows are one run with rising samples; None for any other table."""
    changed = [pl.col(k) != pl.col(k).shift() if table.get_column(k).null_count() == 0
               else pl.col(k).ne_missing(pl.col(k).shift()) for k in keys]
    boundary = table.select(pl.any_horizontal(changed)).to_series().fill_null(True).to_numpy()[1:]
    if not ((samples[1:] > samples[:-1]) | boundary).all():
        return None
    starts = np.r_[0, np.flatnonzero(boundary) + 1]
    runs = table.select(keys)[starts]
    code = _sort_codes(runs, keys)
    order = np.argsort(code, kind="stable")
    if (code[order[1:]] == code[order[:-1]]).any():  # one task split over several runs
        return None
    lengths = np.diff(np.r_[starts, table.height])[order]
    n = int(lengths.max())
    if (lengths == n).all():
        return Batch(groups=runs[order], valid=np.ones((order.size, n), dtype=bool), table=table, _blocks=order)
    slot_rows = starts[order][:, None] + np.arange(n)
    slot_rows[np.arange(n) >= lengths[:, None]] = -1
    return Batch(groups=runs[order], valid=slot_rows >= 0, table=table, _slot_rows=slot_rows)


def _layout_by_codes(table: pl.DataFrame, keys: list[str], samples: np.ndarray) -> Batch:
    task, n_tasks = _task_codes(table, keys)
    low, high = int(samples.min()), int(samples.max())
    width = high - low + 1
    if n_tasks * width <= 4 * table.height + 1024:  # samples are dense enough for a [task, sample] grid
        cell = task * width + (samples - low)
        counts = np.bincount(cell, minlength=n_tasks * width)
        if counts.max() > 1:
            _raise_duplicate(table, keys, int(np.flatnonzero(cell == int(np.argmax(counts > 1)))[0]))
        flat_grid = np.full(n_tasks * width, -1, dtype=np.int64)
        flat_grid[cell] = np.arange(table.height)
        grid = flat_grid.reshape(n_tasks, width)
        filled = grid >= 0
        n_slots = int(filled.sum(axis=1).max())
        # move each task's candidates to the left, keeping their sample order
        slot_rows = np.take_along_axis(grid, np.argsort(~filled, axis=1, kind="stable")[:, :n_slots], axis=1)
    else:
        order = np.lexsort((samples, task))
        task_sorted, samples_sorted = task[order], samples[order]
        same_task = task_sorted[1:] == task_sorted[:-1]
        dup = np.flatnonzero(same_task & (samples_sorted[1:] == samples_sorted[:-1]))
        if dup.size:
            _raise_duplicate(table, keys, int(order[dup[0]]))
        starts = np.flatnonzero(np.r_[True, ~same_task])
        slot = np.arange(table.height) - starts[task_sorted]
        slot_rows = np.full((n_tasks, int(slot.max()) + 1), -1, dtype=np.int64)
        slot_rows[task_sorted, slot] = order
    return Batch(groups=table.select(keys)[slot_rows[:, 0]], valid=slot_rows >= 0, table=table, _slot_rows=slot_rows)


def _task_codes(table: pl.DataFrame, keys: list[str]) -> tuple[np.ndarray, int]:
    """Dense task id per row, numbered in the sort order of the key columns."""
    code = _sort_codes(table, keys)
    bound = int(code.max()) + 1
    return _dense(code) if bound > 4 * table.height + 1024 else _dense_small(code, bound)


def _sort_codes(frame: pl.DataFrame, keys: list[str]) -> np.ndarray:
    """One int64 per row whose order is the rows' sort order by `keys` (equal keys, equal codes)."""
    code = np.zeros(frame.height, dtype=np.int64)
    bound = 1
    for k in keys:
        values = _column_codes(frame.get_column(k))
        size = int(values.max()) + 1
        if bound * size >= 2**62:
            code, bound = _dense(code)
        code = code * size + values
        bound *= size
    return code


def _column_codes(column: pl.Series) -> np.ndarray:
    """Dense integer codes in the column's sort order; null is 0 (polars sorts nulls first)."""
    if column.dtype == pl.Categorical:  # rank the distinct strings, not the rows
        names, row = _category_rows(column)
        return np.r_[names.rank("dense").cast(pl.Int64).to_numpy(), 0][row]
    if column.dtype == pl.String or isinstance(column.dtype, pl.Enum):
        column = column.cast(pl.String)
        distinct = column.drop_nulls().unique()
        if distinct.len() * 8 <= column.len():  # few distinct values: sort those, look each row up
            rank = column.cast(pl.Enum(distinct.sort())).to_physical().cast(pl.Int64)
            return rank.fill_null(-1).to_numpy() + 1
    return (column.rank("dense").cast(pl.Int64) - 1).fill_null(-1).to_numpy() + 1


def _category_rows(column: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """A Categorical column as its distinct strings and, per row, the index of its string (null: their count),
    so anything computed once per distinct string is looked up per row."""
    distinct = column.unique().drop_nulls()
    codes = column.to_physical()
    top = codes.max()
    where = np.full((top if isinstance(top, int) else 0) + 2, distinct.len(), dtype=np.int64)  # last: null
    where[distinct.to_physical().to_numpy()] = np.arange(distinct.len())
    return distinct.cast(pl.String), where[codes.fill_null(where.size - 1).to_numpy()]


def _dense(code: np.ndarray) -> tuple[np.ndarray, int]:
    distinct, inverse = np.unique(code, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64), distinct.size


def _dense_small(code: np.ndarray, bound: int) -> tuple[np.ndarray, int]:
    present = np.zeros(bound, dtype=bool)
    present[code] = True
    rank = np.cumsum(present) - 1
    return rank[code], int(rank[-1]) + 1


def _raise_duplicate(table: pl.DataFrame, keys: list[str], row: int) -> None:
    first = table.row(row, named=True)
    where = ", ".join(f"{k}={first[k]!r}" for k in keys)
    raise BonError(f"duplicate candidate: {where} has sample {first['sample']} more than once")


# --------------------------------------------------------------------------- selection

def _key_values(key: Key, batch: Batch) -> np.ndarray:
    """Float [T, N]: higher ranks better; null as `key.missing`."""
    def build() -> np.ndarray:
        v = batch._row_values(key.column)
        if np.isnan(v).any():
            v = np.where(np.isnan(v), key.missing, v if key.descending else -v)
        elif not key.descending:
            v = -v
        return batch._lay_out(v, -np.inf)  # padding is never alive: any value will do
    return batch._cached(key, build)


def _votes(key: Votes, batch: Batch, alive: np.ndarray) -> np.ndarray:
    groups, has_vote = batch.vote_groups(key.normalizer)
    voting = alive & has_vote
    w = voting.astype(np.float64) if key.weight is None else np.where(voting, batch.weights(key.weight), 0.0)
    totals = np.bincount(groups, weights=w.ravel(), minlength=groups.size)
    if key.weight is not None:
        totals = np.round(totals, 9)  # equal weighted totals summed in another order must still tie
    return totals[groups].reshape(alive.shape)  # a slot without a vote reads its own empty group: 0


def top_mask(selector: Selector, batch: Batch, subset: np.ndarray | None = None) -> np.ndarray:
    """Boolean [T, N]: the candidates still tied after the selector's filters and keys."""
    alive = batch.valid if subset is None else batch.valid & subset
    everyone = subset is None and batch._full  # nothing is ruled out yet: skip the masking
    for f in selector.filters:
        passed = passes(f, batch) if everyone else alive & passes(f, batch)
        alive = passed | (~(_count(passed) > 0)[:, None] & alive)  # none passes: keep them all
        everyone = False
    for key in selector.rank:
        values = _votes(key, batch, alive) if isinstance(key, Votes) else _key_values(key, batch)
        best = (values if everyone else np.where(alive, values, -np.inf)).max(axis=1, keepdims=True)
        alive = alive & (values == best)
        everyone = False
    return alive


def _count(mask: np.ndarray) -> np.ndarray:
    """Number of True per row of a boolean [T, N] (faster than mask.sum(axis=1) for short rows)."""
    return np.einsum("ij->i", mask.view(np.uint8), dtype=np.int64)


def passes(f: Filter, batch: Batch) -> np.ndarray:
    """Boolean [T, N]: the filter's predicate; null never passes."""
    def build() -> np.ndarray:
        column = batch.table.get_column(f.column)
        if column.dtype.is_integer() or column.dtype == pl.Boolean:  # no NaN: polars compares in place
            try:
                passed = _PL_OPS[f.op](column.cast(pl.Int64) if column.dtype == pl.Boolean else column, f.value)
                return batch._lay_out(passed.fill_null(False).to_numpy(), False)
            except OverflowError:  # a value outside the column's integer type: compare as floats
                pass
        v = batch._row_values(f.column)
        with np.errstate(invalid="ignore"):
            return batch._lay_out(~np.isnan(v) & _NP_OPS[f.op](v, f.value), False)
    return batch._cached(f, build)


def select(selector: Selector, table: pl.DataFrame | Batch) -> pl.DataFrame:
    """One row per task: the picked sample, whether it succeeded, and tie-aware expectations.

    correct   success of the deterministic pick (lowest sample index among ties)
    expected  mean success over the tied top set (does not depend on sample order)
    random    mean success over all candidates (a uniform pick)
    pass_any  any candidate succeeded (the Pass@N oracle)
    """
    batch = table if isinstance(table, Batch) else to_batch(table)
    top = top_mask(selector, batch)
    success = batch.success
    pick = top.argmax(axis=1)
    rows = np.arange(batch.n_tasks)
    n_valid = batch.n_valid
    n_tied = _count(top)
    n_right = batch._cached("n_right", lambda: _count(success))  # padding never succeeds
    picks = pl.DataFrame({
        "picked_sample": batch.table.get_column("sample").gather(batch._row_of(pick)),
        "correct": success[rows, pick],
        "expected": _count(success & top) / n_tied,
        "n_candidates": n_valid,
        "n_tied": n_tied,
        "random": n_right / n_valid,
        "pass_any": n_right > 0,
    })
    return batch.groups.hstack(picks)

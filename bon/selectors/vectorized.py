"""Run selectors over a whole candidate table at once.

The table is laid out densely as tasks x slots (slots sorted by sample index, padded
where a task has fewer candidates), so one selector over 100,000 tasks is a handful
of numpy operations instead of 100,000 Python calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from bon.errors import BonError
from bon.selectors import normalize
from bon.selectors.spec import Filter, Key, Selector, Votes

GROUP_COLUMNS = ("judge", "subset", "task_id")
_NP_OPS = {"==": np.equal, "!=": np.not_equal, ">": np.greater, ">=": np.greater_equal,
           "<": np.less, "<=": np.less_equal}


@dataclass
class Batch:
    """A candidate table as dense [tasks, slots] arrays; `groups` has one row per task."""

    groups: pl.DataFrame
    valid: np.ndarray
    slot_rows: np.ndarray  # row index into `table` per (task, slot), -1 for padding
    table: pl.DataFrame
    _cols: dict[str, np.ndarray] = field(default_factory=dict)
    _codes: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_tasks(self) -> int:
        return self.valid.shape[0]

    def col(self, name: str) -> np.ndarray:
        """Column as float [T, N]; null and padding are NaN."""
        if name not in self._cols:
            values = self.table.get_column(name).cast(pl.Float64).fill_null(np.nan).to_numpy()
            self._cols[name] = _scatter(values, self.slot_rows, np.nan)
        return self._cols[name]

    @property
    def success(self) -> np.ndarray:
        return np.nan_to_num(self.col("success"), nan=0.0) > 0

    def answer_codes(self, normalizer: str) -> np.ndarray:
        """Vote-group id per candidate: equal normalised answers in one task share an id; -1 casts no vote.

        Ids are dense over the whole batch, so one bincount sums every task's votes at once.
        """
        if normalizer not in self._codes:
            # lazy, so the normaliser's expression is evaluated once (common subexpressions are shared);
            # 64-bit hashes stand in for the strings (a collision within one task is ~1e-18 likely)
            norm = self.table.lazy().select(normalize.expr("answer", normalizer)).collect().to_series()
            hashes = norm.hash(seed=0).to_numpy()
            _, codes = np.unique(hashes, return_inverse=True)
            codes = np.where(norm.is_null().to_numpy(), -1, codes.reshape(-1))
            codes = _scatter(codes, self.slot_rows, -1).astype(np.int64)
            task = np.broadcast_to(np.arange(self.n_tasks)[:, None], codes.shape)
            pair = np.where(codes >= 0, task * (int(codes.max()) + 2) + codes, -1)
            _, group = np.unique(pair, return_inverse=True)
            group = group.reshape(codes.shape) - int((pair < 0).any())  # no-answer group becomes -1
            self._codes[normalizer] = group
        return self._codes[normalizer]


def _scatter(values: np.ndarray, slot_rows: np.ndarray, pad) -> np.ndarray:
    out = values[np.maximum(slot_rows, 0)]
    out = out.astype(np.float64 if isinstance(pad, float) else values.dtype, copy=False)
    out[slot_rows < 0] = pad
    return out


def to_batch(table: pl.DataFrame) -> Batch:
    """Lay out a candidate table densely; one task = one (judge, subset, task_id)."""
    if table.height == 0:
        raise BonError("the candidate table is empty: there is nothing to select from")
    keys = [c for c in GROUP_COLUMNS if c in table.columns]
    table = table.sort([*keys, "sample"])
    g = table.select(pl.struct(keys).rle_id()).to_series().to_numpy().astype(np.int64)
    sample = table.get_column("sample").to_numpy()
    same_task = g[1:] == g[:-1]
    dup = np.flatnonzero(same_task & (sample[1:] == sample[:-1]))
    if dup.size:
        first = table.row(int(dup[0]), named=True)
        where = ", ".join(f"{k}={first[k]!r}" for k in keys)
        raise BonError(f"duplicate candidate: {where} has sample {first['sample']} more than once")
    starts = np.flatnonzero(np.r_[True, ~same_task])
    slot = np.arange(table.height) - starts[g]
    n_tasks, n_slots = int(g.max()) + 1, int(slot.max()) + 1
    slot_rows = np.full((n_tasks, n_slots), -1, dtype=np.int64)
    slot_rows[g, slot] = np.arange(table.height)
    groups = table.select(keys)[starts]
    return Batch(groups=groups, valid=slot_rows >= 0, slot_rows=slot_rows, table=table)


def _key_values(key: Key, batch: Batch) -> np.ndarray:
    v = batch.col(key.column)
    return np.where(np.isnan(v), key.missing, v if key.descending else -v)


def _votes(key: Votes, batch: Batch, alive: np.ndarray) -> np.ndarray:
    groups = batch.answer_codes(key.normalizer)
    has_answer = groups >= 0
    safe = np.maximum(groups, 0)  # no-answer slots add weight 0 to group 0, then read back as 0
    if key.weight is None:
        w = (alive & has_answer).astype(np.float64)
    else:
        w = np.where(alive & has_answer, np.nan_to_num(batch.col(key.weight), nan=0.0), 0.0)
    totals = np.bincount(safe.ravel(), weights=w.ravel(), minlength=int(safe.max()) + 1)
    if key.weight is not None:
        totals = np.round(totals, 9)  # equal weighted totals summed in another order must still tie
    return np.where(has_answer, totals[safe], 0.0)


def top_mask(selector: Selector, batch: Batch, subset: np.ndarray | None = None) -> np.ndarray:
    """Boolean [T, N]: the candidates still tied after the selector's filters and keys."""
    alive = batch.valid if subset is None else batch.valid & subset
    for f in selector.filters:
        alive = _apply_filter(f, batch, alive)
    for key in selector.rank:
        values = _votes(key, batch, alive) if isinstance(key, Votes) else _key_values(key, batch)
        best = np.where(alive, values, -np.inf).max(axis=1, keepdims=True)
        alive = alive & (values == best)
    return alive


def passes(f: Filter, batch: Batch) -> np.ndarray:
    """Boolean [T, N]: the filter's predicate; null never passes."""
    v = batch.col(f.column)
    with np.errstate(invalid="ignore"):
        return ~np.isnan(v) & _NP_OPS[f.op](v, f.value)


def _apply_filter(f: Filter, batch: Batch, alive: np.ndarray) -> np.ndarray:
    passed = alive & passes(f, batch)
    return np.where(passed.any(axis=1, keepdims=True), passed, alive)


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
    n_valid = batch.valid.sum(axis=1)
    picked_row = batch.slot_rows[rows, pick]
    return batch.groups.with_columns(
        pl.Series("picked_sample", batch.table.get_column("sample").to_numpy()[picked_row]),
        pl.Series("correct", success[rows, pick]),
        pl.Series("expected", (success & top).sum(axis=1) / top.sum(axis=1)),
        pl.Series("n_candidates", n_valid),
        pl.Series("n_tied", top.sum(axis=1)),
        pl.Series("random", (success & batch.valid).sum(axis=1) / n_valid),
        pl.Series("pass_any", (success & batch.valid).any(axis=1)),
    )

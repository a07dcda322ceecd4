"""A selector is data: filters (with fallback), then ranking keys, then a tie rule.

The same spec is run two ways: per task in plain Python (`selector(candidates)`, for
agent loops) and vectorised over a whole candidate table (`bon.selectors.vectorized`).
Tests check that both agree on every task.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from bon.errors import BonError, unknown_choice
from bon.selectors import normalize

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq, "!=": operator.ne, ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
}
COLUMNS = ("n_steps", "n_pos", "n_neg", "n_missing", "pos_ratio", "first_error", "clean_prefix",
           "final_pred", "judge_ok", "success", "sample", "listwise_pick")


def _check_column(column: str) -> None:
    if column not in COLUMNS:
        raise unknown_choice("candidate column", column, COLUMNS)


@dataclass(frozen=True)
class Filter:
    """Keep candidates with `column <op> value`; if none in the task qualifies, keep them all."""

    column: str
    op: str = "=="
    value: float = 1

    def __post_init__(self) -> None:
        _check_column(self.column)
        if self.op not in OPS:
            raise unknown_choice("filter op", self.op, OPS)
        if not isinstance(self.value, (int, float)):
            raise BonError(f"filter on {self.column!r}: value must be a number (booleans count as 0/1), "
                           f"got {self.value!r}")

    def test(self, row: Mapping[str, Any]) -> bool:
        value = row.get(self.column)
        return value is not None and bool(OPS[self.op](value, self.value))


@dataclass(frozen=True)
class Key:
    """Rank by a column, highest first (or lowest with `descending=False`).

    A null ranks as `missing` after the direction is applied: by default worst either way.
    """

    column: str
    descending: bool = True
    missing: float = -math.inf

    def __post_init__(self) -> None:
        _check_column(self.column)

    def value(self, row: Mapping[str, Any]) -> float:
        raw = row.get(self.column)
        if raw is None:
            return self.missing
        return float(raw) if self.descending else -float(raw)

    @property
    def uses_votes(self) -> bool:
        return False


@dataclass(frozen=True)
class Votes:
    """Rank by the (weighted) number of still-eligible candidates sharing this normalised answer.

    Candidates without an answer get 0 votes. `weight` names a column (e.g. pos_ratio);
    None gives every vote weight 1.
    """

    weight: str | None = None
    normalizer: str = "squad"

    def __post_init__(self) -> None:
        if self.weight is not None:
            _check_column(self.weight)
        normalize.get(self.normalizer)

    def values(self, rows: Sequence[Mapping[str, Any]], alive: Sequence[int]) -> dict[int, float]:
        answers = {i: normalize.normalize(rows[i].get("answer"), self.normalizer) for i in alive}
        totals: dict[str, float] = {}
        for i in alive:
            answer = answers[i]
            if answer is not None:
                w = 1.0 if self.weight is None else float(rows[i].get(self.weight) or 0.0)
                totals[answer] = totals.get(answer, 0.0) + w
        # rounded like the vectorised path, so equal totals summed in another order still tie
        return {i: round(totals[answer], 9) if (answer := answers[i]) is not None else 0.0 for i in alive}

    @property
    def uses_votes(self) -> bool:
        return True


RankKey = Union[Key, Votes]


@dataclass(frozen=True)
class Selector:
    """Filters (each falling back to all candidates), then keys compared in order.

    Ties left after the last key go to the lowest sample index, so a pick is
    reproducible; evaluation also reports the mean success over the tied set.
    `verdicts` ("listwise" or "pairwise") asks the pipeline for a comparing judge's pick per task
    (bon.verdicts: the column `listwise_pick`); `fallback` names the selector whose filters and keys
    decide the tasks that have no pick.
    """

    name: str
    filters: tuple[Filter, ...] = ()
    rank: tuple[RankKey, ...] = ()
    description: str = ""
    oracle: bool = field(default=False)
    verdicts: str | None = None
    fallback: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "filters", tuple(self.filters))
        object.__setattr__(self, "rank", tuple(self.rank))
        uses_truth = any(f.column == "success" for f in self.filters) or any(
            (k.column if isinstance(k, Key) else k.weight) == "success" for k in self.rank)
        object.__setattr__(self, "oracle", uses_truth)

    @property
    def score_based(self) -> bool:
        """True when a candidate's rank does not depend on which other candidates are present."""
        return not any(k.uses_votes for k in self.rank)

    def top_set(self, candidates: Sequence[Mapping[str, Any]]) -> list[int]:
        """Positions of the candidates still tied after filters and keys."""
        rows = _rows(candidates)
        alive = list(range(len(rows)))
        for f in self.filters:
            kept = [i for i in alive if f.test(rows[i])]
            alive = kept or alive
        for key in self.rank:
            values = key.values(rows, alive) if isinstance(key, Votes) else {i: key.value(rows[i]) for i in alive}
            best = max(values.values())
            alive = [i for i in alive if values[i] == best]
        return alive

    def __call__(self, candidates: Sequence[Mapping[str, Any]]) -> int:
        """Position (in `candidates`) of the chosen candidate."""
        rows = _rows(candidates)
        return min(self.top_set(rows), key=lambda i: (_sample(rows, i), i))


def _sample(rows: Sequence[Mapping[str, Any]], i: int) -> int:
    s = rows[i].get("sample")
    return i if s is None else int(s)


def _rows(candidates: Any) -> list[Mapping[str, Any]]:
    if hasattr(candidates, "to_dicts"):
        candidates = candidates.to_dicts()
    rows = list(candidates)
    if not rows:
        raise BonError("a task has no candidates to select from")
    return rows

"""The candidate table: one row per (task, sample, judge) with the features selectors read.

Selectors never look at raw messages or judge text, only at these columns, so any
source of trajectories and judgements (live, replayed, simulated) feeds the same code.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import polars as pl

from bon.types import Judgement, Trajectory

SCHEMA: dict[str, type[pl.DataType]] = {
    "task_id": pl.String,
    "subset": pl.String,
    "sample": pl.Int32,
    "judge": pl.String,
    "n_steps": pl.Int32,
    "n_pos": pl.Int32,
    "n_neg": pl.Int32,
    "n_missing": pl.Int32,
    "pos_ratio": pl.Float64,
    "first_error": pl.Int32,
    "clean_prefix": pl.Float64,
    "final_pred": pl.Int8,
    "judge_ok": pl.Boolean,
    "answer": pl.String,
    "success": pl.Boolean,
}
"""Column meanings:
n_steps      assistant steps in the trajectory
n_pos/n_neg  steps the judge labelled +1 / -1
n_neg        null when the judge call failed (unknown, never "no errors")
n_missing    steps the judge gave no label (failed or skipped)
pos_ratio    n_pos / n_steps (a missing label counts as not +1; 0 when there are no steps)
first_error  absolute message index of the first step labelled -1, null if none
clean_prefix share of steps before the first -1 or unlabelled step (1.0 when all are 0/+1;
             null when the judge call failed)
final_pred   the judge's outcome label +1/-1, null when it gave none
judge_ok     False when the judge call failed
success      ground truth: did this trajectory solve the task
"""


def step_features(steps: Sequence[int], judgement: Judgement) -> dict[str, Any]:
    """Features of one trajectory under one judgement; `steps` are the assistant message indices.

    A failed judgement says nothing about errors, so its error features are null (ranked
    worst), never 0 errors; a missing step label ends the clean prefix like a -1 does.
    """
    steps = sorted(steps)
    labels = [judgement.step_labels.get(i) for i in steps]
    n = len(steps)
    n_pos = sum(1 for v in labels if v == 1)
    first = next((k for k, v in enumerate(labels) if v == -1), None)
    unclean = next((k for k, v in enumerate(labels) if v != 1 and v != 0), None)
    final = judgement.final_label if judgement.final_label in (1, -1) else None
    failed = judgement.failed
    return {
        "n_steps": n,
        "n_pos": n_pos,
        "n_neg": None if failed else sum(1 for v in labels if v == -1),
        "n_missing": sum(1 for v in labels if v is None),
        "pos_ratio": n_pos / n if n else 0.0,
        "first_error": steps[first] if first is not None else None,
        "clean_prefix": None if failed or not n else (unclean / n if unclean is not None else 1.0),
        "final_pred": final,
        "judge_ok": not failed,
    }


def row(task_id: str, subset: str, sample: int, judge: Judgement, steps: Sequence[int],
        answer: str | None, success: bool | None) -> dict[str, Any]:
    """One candidate-table row: where the candidate sits, its step features under `judge`, its outcome."""
    return {"task_id": task_id, "subset": subset, "sample": sample, "judge": judge.judge,
            **step_features(steps, judge), "answer": answer, "success": success}


def candidate(trajectory: Trajectory, judgement: Judgement, subset: str = "") -> dict[str, Any]:
    """One candidate-table row from a trajectory and its judgement (for agent loops and tests).

    `success` stays None when unknown (live runs without a reference answer)."""
    return row(trajectory.task_id, subset, trajectory.sample, judgement, trajectory.step_indices,
               trajectory.answer, trajectory.success)


def table(rows: Iterable[Mapping[str, Any]]) -> pl.DataFrame:
    """Build the candidate table with its fixed schema from row dicts."""
    return pl.DataFrame(list(rows), schema=SCHEMA)


def tasks_with_answers(table: pl.DataFrame) -> pl.DataFrame:
    """The rows of the tasks (per judge and subset) where some candidate has a final answer: the tasks a
    vote-based selector can be scored on."""
    if table.get_column("answer").null_count() == 0:  # every candidate answered: the table itself, no copy
        return table
    has = table.select(pl.col("answer").is_not_null().any().over("judge", "subset", "task_id")).to_series()
    return table if has.all() else table.filter(has)

"""Selection accuracy of one selector over a candidate table, with intervals and best-of-k curves."""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import polars as pl

from bon.candidates import tasks_with_answers
from bon.metrics import bootstrap_ci, bootstrap_cis
from bon.selectors import SELECTORS, Selector, select, to_batch
from bon.selectors.best_of_k import curve
from bon.summary import Row


def _drop_tasks_without_reference(table: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """Tasks with no reference answer (success null for every candidate) are left out of accuracy, never
    counted as wrong; the note says how many, like GAIA's unanswered test split."""
    if table.get_column("success").null_count() == 0:  # every candidate has an outcome: nothing to leave out
        return table, ""
    keys = ["judge", "subset", "task_id"]
    known = table.group_by(keys).agg(pl.col("success").is_not_null().any().alias("_known"))
    missing = known.filter(~pl.col("_known"))
    if missing.height == 0:
        return table, ""
    ids = sorted(missing.unique("task_id")["task_id"].cast(pl.Utf8).to_list())
    example = ", ".join(repr(i) for i in ids[:3]) + (", ..." if len(ids) > 3 else "")
    note = (f"{len(ids)} of {known.unique('task_id').height} tasks have no reference answer and are not scored "
            f"(left out of every accuracy: {example})")
    kept = table.join(known.filter(pl.col("_known")).drop("_known"), on=keys, how="semi", maintain_order="left")
    return kept, note


def _mean(column: pl.Series) -> float:
    """A boolean or numeric column's mean (polars types `mean()` as any value, or None for no values)."""
    mean = column.mean()
    if not isinstance(mean, (int, float)):
        raise TypeError(f"column {column.name!r} has no numeric mean: {mean!r}")
    return float(mean)


def _one_judge(selector: Selector, table: pl.DataFrame, confidence: float, resamples: int,
               seed: int) -> tuple[pl.DataFrame, dict[str, Any]]:
    batch = to_batch(table)
    picks = select(selector, batch)
    low, high = bootstrap_ci(picks["correct"].cast(pl.Float64), confidence, resamples, seed)
    generation_failed = _generation_failed(table)
    judged = table.select(
        (~pl.col("judge_ok") & ~generation_failed).sum().alias("judge_failed"),
        generation_failed.sum().alias("generation_failed"),
        (pl.col("final_pred").is_null() & pl.col("judge_ok")).sum().alias("judge_missing_final"),
        pl.col("n_missing").sum().alias("judge_missing_steps"),
    ).row(0, named=True)
    row = {
        "n_tasks": picks.height,
        "n_candidates": table.height,
        "accuracy": _mean(picks["correct"]),
        "accuracy_expected": _mean(picks["expected"]),
        "ci_low": low,
        "ci_high": high,
        "pass_at_n": _mean(picks["pass_any"]),
        "random": _mean(picks["random"]),
        **{k: int(v) for k, v in judged.items()},
        "generation_failed": int(judged["generation_failed"]) if "generation_failed" in table.columns else None,
        # a comparing judge's pick was made among all N candidates: it says nothing about k of them
        "best_of_k": None if selector.verdicts else _best_of_k(selector, batch, confidence, resamples, seed),
    }
    return picks, row


def _best_of_k(selector: Selector, batch: Any, confidence: float, resamples: int, seed: int) -> dict[str, Any]:
    """The expected accuracy with k of the N candidates, k = 1..N, with intervals (bon.selectors.best_of_k)."""
    bok = curve(selector, batch, seed=seed)
    k_ci = bootstrap_cis([column[~np.isnan(column)] for column in bok.per_task.T], confidence, resamples, seed)
    return {"method": bok.method, "k": bok.ks.tolist(), "accuracy": [float(x) for x in bok.mean],
            "ci_low": [c[0] for c in k_ci], "ci_high": [c[1] for c in k_ci], "std_error": bok.std_error.tolist()}


def _by_judge(table: pl.DataFrame) -> Iterable[tuple[tuple[Any, ...], pl.DataFrame]]:
    """(judge,), rows per judge in order of appearance; one judge's table is passed as is (no copy of it)."""
    judges = table.get_column("judge")
    if judges.eq_missing(judges[0]).all():
        return [((judges[0],), table)]
    return table.group_by("judge", maintain_order=True)


def _generation_failed(table: pl.DataFrame) -> pl.Expr:
    """Candidates whose generation failed before any step (live runs mark them; they were not judged,
    so they count here and not as judge failures). Recorded candidates have no such column: None."""
    return pl.col("generation_failed") if "generation_failed" in table.columns else pl.lit(False)


def _not_applicable(selector: Selector, table: pl.DataFrame, dataset: str, subset: str,
                    note: str) -> tuple[pl.DataFrame, list[Row]]:
    """A selection that cannot be scored: recorded with its reason, never given a number.

    A row (not an exception) so that one such cell does not abort a whole multirun sweep.
    """
    unknown = table["success"].null_count() == table.height
    rows = []
    for (judge,), part in table.group_by("judge", maintain_order=True):
        picks = select(SELECTORS["random"], part)
        rows.append(Row(dataset=dataset, subset=subset, judge=judge, selector=selector.name,
                        description=selector.description, oracle=selector.oracle, n_tasks=0,
                        n_candidates=0, accuracy=None, accuracy_expected=None, ci_low=None,
                        ci_high=None, pass_at_n=None if unknown else _mean(picks["pass_any"]),
                        random=None if unknown else _mean(picks["random"]), judge_failed=0,
                        generation_failed=int(part["generation_failed"].sum())
                        if "generation_failed" in part.columns else None,
                        judge_missing_final=0, judge_missing_steps=0, best_of_k=None, by_subset={}, note=note))
    return table.head(0).select("judge", "subset", "task_id"), rows


def evaluate(selector: Selector, table: pl.DataFrame, dataset: str, subset: str, confidence: float = 0.95,
             resamples: int = 9999, seed: int = 0) -> tuple[pl.DataFrame, list[Row]]:
    """Per-task selections and one summary row per judge (plus a per-subset breakdown).

    Vote-based selectors are evaluated only on tasks where some candidate has a final
    answer; the row's `note` says so, rather than silently scoring first-sample picks.
    """
    note = ""
    if table["success"].null_count() == table.height:
        return _not_applicable(selector, table, dataset, subset,
                               "not scored: no task has a reference answer (generation and judging only)")
    table, unscored = _drop_tasks_without_reference(table)
    if unscored:
        note = unscored
    if not selector.score_based:
        answered = tasks_with_answers(table)
        if answered.height == 0:
            return _not_applicable(selector, table, dataset, subset, (
                f"not applicable: selector {selector.name!r} votes on final answers, but no trajectory in subset "
                f"{subset!r} has one (AgentProcessBench releases answers for hotpotqa only)"))
        if answered.height < table.height:
            kept = sorted(answered["subset"].unique().to_list())
            note = "; ".join(filter(None, [note, f"evaluated only on tasks with final answers "
                                                 f"(subsets: {', '.join(kept)})"]))
        table = answered
    all_picks, rows = [], []
    for judge, part in _by_judge(table):
        picks, row = _one_judge(selector, part, confidence, resamples, seed)
        by_subset = {}
        if part["subset"].n_unique() > 1:
            for (name,), sub in picks.group_by("subset", maintain_order=True):
                by_subset[name] = {
                    "n_tasks": sub.height, "accuracy": _mean(sub["correct"]),
                    "accuracy_expected": _mean(sub["expected"]),
                    "pass_at_n": _mean(sub["pass_any"]), "random": _mean(sub["random"]),
                }
        rows.append(Row(dataset=dataset, subset=subset, judge=judge[0], selector=selector.name,
                        description=selector.description, oracle=selector.oracle, **row,
                        by_subset=by_subset, note=note))
        all_picks.append(picks.with_columns(pl.lit(selector.name).alias("selector")))
    return pl.concat(all_picks), rows

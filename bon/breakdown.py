"""Accuracy by model for mixed-model rollouts, and the mixture against each model at the same k.

For each model m with n_m candidates per task: its single-sample accuracy, its pass@n_m and the
selector's accuracy on its own candidates; next to them, what the mixture gives with the same
number of candidates, k = n_m, drawn at random from all N of the task: pass@k (exact,
1 - C(N-c, k) / C(N, k) with c successes) and the selector's best-of-k (bon.selectors.best_of_k,
tie-aware). That answers "is a mixture of models better than more samples of one model?" at equal
sample count. The selector is applied to a model's candidates alone, as if only that model had
run; a selector whose column was computed over all N (listwise_pick) keeps that column's values.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl

from bon.candidates import tasks_with_answers
from bon.errors import BonError
from bon.evaluate import _drop_tasks_without_reference
from bon.fmt import is_number, pct
from bon.metrics import bootstrap_bands
from bon.selectors import Selector, select, to_batch
from bon.selectors.best_of_k import curve
from bon.selectors.vectorized import GROUP_COLUMNS

UNKNOWN_MODEL = "(unknown)"
MIXTURE = "mixture"


def pass_at_k(n: int, c: int, k: int) -> float:
    """The chance that a uniformly random k-subset of n candidates, c of them right, holds a right one."""
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if values.size else float("nan")


def _bands(columns: list[np.ndarray], confidence: float, resamples: int, seed: int) -> list[tuple[float, float]]:
    """Bootstrap intervals over tasks (one set of resamples for every column)."""
    low, high = bootstrap_bands(np.column_stack(columns), confidence, resamples, seed)
    return [(float(a), float(b)) for a, b in zip(low, high)]


def _alone(judge: str, model: str, picks: pl.DataFrame, n: np.ndarray) -> dict[str, Any]:
    """The selection columns of one set of candidates per task (bon.selectors.select's picks)."""
    return {
        "judge": judge, "model": model, "n_tasks": picks.height,
        "n_per_task": int(n[0]) if np.all(n == n[0]) else float(np.mean(n)),
        "mean_success": _mean(picks["random"].to_numpy()),
        "pass_at_n": _mean(picks["pass_any"].cast(pl.Float64).to_numpy()),
        "accuracy": _mean(picks["correct"].cast(pl.Float64).to_numpy()),
        "accuracy_expected": _mean(picks["expected"].cast(pl.Float64).to_numpy()),
    }


def _one_judge(judge: str, part: pl.DataFrame, selector: Selector, confidence: float, resamples: int,
               seed: int) -> list[dict[str, Any]]:
    keys = [c for c in GROUP_COLUMNS if c in part.columns]
    batch = to_batch(part)
    bok = curve(selector, batch, seed=seed)
    n_all = batch.valid.sum(axis=1)
    right_all = (batch.success & batch.valid).sum(axis=1)
    index = batch.groups.with_row_index("_task")
    rows = []
    for model in sorted(part["model"].unique().to_list()):
        picks = select(selector, part.filter(pl.col("model") == model)).join(index, on=keys, how="left")
        t = picks["_task"].to_numpy()
        k = picks["n_candidates"].to_numpy()
        expected = picks["expected"].cast(pl.Float64).to_numpy()
        mixture = bok.per_task[t, k - 1]
        mixture_pass = np.array([pass_at_k(int(n_all[i]), int(right_all[i]), int(kk)) for i, kk in zip(t, k)])
        (low, high), (m_low, m_high), (g_low, g_high) = _bands([expected, mixture, mixture - expected],
                                                               confidence, resamples, seed)
        rows.append({
            **_alone(judge, model, picks, k), "ci_low": low, "ci_high": high,
            "mixture_pass_at_k": _mean(mixture_pass),
            "mixture_accuracy_at_k": _mean(mixture), "mixture_ci_low": m_low, "mixture_ci_high": m_high,
            "gain": _mean(mixture - expected), "gain_ci_low": g_low, "gain_ci_high": g_high,
            "best_of_k_method": bok.method,
        })
    picks = select(selector, batch)
    ((low, high),) = _bands([picks["expected"].cast(pl.Float64).to_numpy()], confidence, resamples, seed)
    rows.append({
        **_alone(judge, MIXTURE, picks, n_all), "ci_low": low, "ci_high": high,
        "mixture_pass_at_k": None, "mixture_accuracy_at_k": None, "mixture_ci_low": None, "mixture_ci_high": None,
        "gain": None, "gain_ci_low": None, "gain_ci_high": None, "best_of_k_method": bok.method,
    })
    return rows


def by_model(table: pl.DataFrame, selector: Selector, confidence: float = 0.95, resamples: int = 2000,
             seed: int = 0) -> list[dict[str, Any]]:
    """One row per (judge, model), then one `mixture` row per judge with all N candidates.

    Per model: n_tasks (tasks where it has candidates), n_per_task (its candidates per task; a mean
    when that varies), mean_success (its single-sample accuracy), pass_at_n (pass@n_m of its own
    candidates), accuracy / accuracy_expected (the selector on its candidates alone: the pick with
    ties to the lowest sample, and the tie-aware expectation, with ci_low/ci_high), and the
    mixture at k = n_m over random k-subsets of all N: mixture_pass_at_k, mixture_accuracy_at_k (with
    mixture_ci_*) and gain = mixture minus the model alone, paired by task (gain_ci_*). Intervals:
    percentile bootstrap over tasks. Tasks without a reference answer are left out, as in
    bon.evaluate; so are tasks without any final answer for a vote-based selector.
    """
    if "model" not in table.columns:
        raise BonError("a breakdown by model needs the candidate table's `model` column (from each trajectory's "
                       "metadata.model)")
    if table.height == 0 or table["success"].null_count() == table.height:
        return []
    table, _ = _drop_tasks_without_reference(table)
    if not selector.score_based:
        table = tasks_with_answers(table)
        if table.height == 0:
            return []
    table = table.with_columns(pl.col("model").cast(pl.Utf8).fill_null(UNKNOWN_MODEL))
    rows = []
    for (judge,), part in table.group_by("judge", maintain_order=True):
        rows += _one_judge(str(judge), part, selector, confidence, resamples, seed)
    return rows


def _pct(x: float | None) -> str:
    return pct(x, missing="-")


def _ci(low: float | None, high: float | None) -> str:
    return f"[{_pct(low)}, {_pct(high)}]" if is_number(low) else ""


def format_by_model(rows: list[dict[str, Any]]) -> str:
    """The printed table: each model alone against the mixture at the same k (percent)."""
    if not rows:
        return "by model: no scored tasks"
    judges = len({r["judge"] for r in rows}) > 1
    head = ([("judge", "<")] if judges else []) + [
        ("model", "<"), ("tasks", ">"), ("n", ">"), ("single", ">"), ("pass@n", ">"), ("selected", ">"),
        ("95% CI", ">"), ("mix pass@n", ">"), ("mix selected", ">"), ("gain", ">"), ("95% CI (gain)", ">")]
    body = []
    for r in rows:
        n = r["n_per_task"]
        cells = ([r["judge"]] if judges else []) + [
            r["model"], str(r["n_tasks"]), str(n) if isinstance(n, int) else f"{n:.1f}",
            _pct(r["mean_success"]), _pct(r["pass_at_n"]), _pct(r["accuracy_expected"]),
            _ci(r["ci_low"], r["ci_high"]), _pct(r["mixture_pass_at_k"]), _pct(r["mixture_accuracy_at_k"]),
            "-" if r["gain"] is None else f"{100 * r['gain']:+.1f}", _ci(r["gain_ci_low"], r["gain_ci_high"])]
        body.append(cells)
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, (h, _) in enumerate(head)]
    line = "  ".join(f"{h:{a}{w}}" for (h, a), w in zip(head, widths))
    out = [line, "-" * len(line)]
    out += ["  ".join(f"{c:{a}{w}}" for c, (_, a), w in zip(cells, head, widths)) for cells in body]
    out.append("single: one sample's accuracy; selected: the selector on that model's n candidates (tie-aware); "
               "mix: the same k = n drawn from all of a task's candidates")
    return "\n".join(out)

"""Best-of-k curves against a brute-force reference: every k-subset, the per-task Python selector."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from bon import candidates, selectors
from bon.selectors import best_of_k
from bon.selectors.library import SELECTORS


def random_table(rng: np.random.Generator, n_tasks: int, n_max: int):
    rows = []
    for t in range(n_tasks):
        for s in range(int(rng.integers(1, n_max + 1))):
            n = int(rng.integers(1, 6))
            n_pos = int(rng.integers(0, n + 1))
            n_neg = int(rng.integers(0, n - n_pos + 1))
            first = None if n_neg == 0 else int(rng.integers(0, n))
            rows.append({
                "task_id": f"t{t}", "subset": "x", "sample": s, "judge": "j", "n_steps": n, "n_pos": n_pos,
                "n_neg": n_neg, "n_missing": 0, "pos_ratio": n_pos / n,
                "first_error": None if first is None else 2 * first + 2,
                "clean_prefix": 1.0 if first is None else first / n,
                "final_pred": [1, -1, None][int(rng.integers(0, 3))], "judge_ok": True,
                "answer": [None, "Paris", "paris.", "Lyon", "Nice"][int(rng.integers(0, 5))],
                "success": bool(rng.random() < 0.5),
            })
    return candidates.table(rows)


def brute_force(selector, table, k: int) -> dict[str, float]:
    """Per task: mean over all k-subsets of the tie-aware success of the Python selector; NaN when N < k."""
    out = {}
    for (task,), part in table.sort("sample").group_by("task_id", maintain_order=True):
        rows = part.to_dicts()
        if len(rows) < k:
            out[task] = float("nan")
            continue
        values = []
        for combo in itertools.combinations(rows, k):
            top = selector.top_set(list(combo))
            values.append(np.mean([combo[i]["success"] for i in top]))
        out[task] = float(np.mean(values))
    return out


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_curve_matches_brute_force_over_all_subsets(name):
    rng = np.random.default_rng(7)
    table = random_table(rng, n_tasks=40, n_max=6)
    selector = SELECTORS[name]
    batch = selectors.to_batch(table)
    curve = best_of_k.curve(selector, batch)
    order = batch.groups["task_id"].to_list()
    for k in range(1, 7):
        reference = brute_force(selector, table, k)
        got = curve.per_task[:, k - 1]
        expected = np.array([reference[t] for t in order])
        np.testing.assert_allclose(got, expected, atol=1e-12, err_msg=f"{name} k={k}")


def test_monte_carlo_estimate_is_close_and_reports_its_error():
    rng = np.random.default_rng(3)
    table = random_table(rng, n_tasks=300, n_max=6)
    batch = selectors.to_batch(table)
    exact = best_of_k.curve(selectors.majority, batch)
    estimate = best_of_k.curve(selectors.majority, batch, exact_budget=0, draws=64)
    assert exact.method == "enumeration" and estimate.method.startswith("monte_carlo")
    assert np.all(estimate.std_error[1:-1] > 0)  # k=1 and k=N are the same for every draw
    # within 4 standard errors at every k (k=1 is exact either way)
    assert np.all(np.abs(estimate.mean - exact.mean) <= 4 * estimate.std_error + 1e-12)


def test_closed_form_endpoints_are_random_and_full_selection(apb_root):
    from bon import datasets

    table = datasets.candidate_table({"name": "agentprocessbench", "subset": "all", "root": str(apb_root)},
                                     {"kind": "replay", "name": "Kimi-K2.5"})
    batch = selectors.to_batch(table)
    for name in ("final", "pos_count", "two_stage", "pass_at_n"):
        curve = best_of_k.curve(SELECTORS[name], batch)
        picks = selectors.select(SELECTORS[name], batch)
        assert curve.mean[0] == pytest.approx(picks["random"].mean())
        assert curve.mean[-1] == pytest.approx(picks["expected"].mean())
    oracle = best_of_k.curve(selectors.pass_at_n, batch).mean
    assert np.all(np.diff(oracle) >= 0)  # Pass@k never decreases with k

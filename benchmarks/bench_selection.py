"""Benchmark: vectorised selection over a large synthetic candidate table vs the per-task Python loop.

    python benchmarks/bench_selection.py                       # 100,000 tasks x 16 candidates
    python benchmarks/bench_selection.py --tasks 20000 --candidates 8 --loop-tasks 1000
    python benchmarks/bench_selection.py --profile             # also cProfile the vectorised pipeline

Target: building the dense batch + `select` for every built-in selector + the best-of-k
curve for every built-in selector takes < 4 s in total at 100,000 x 16 (issue 16).
`bench_selection_reference.py` times `select(two_stage)` against a direct numpy reference.

The table is generated with numpy and polars expressions only (no Python loop per row).
Vectorised timings are the best of `--repeats` (default 3) runs with time.perf_counter.
Each repeat starts from a fresh `to_batch` so the batch's column cache is cold, as in a real run.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import sys
import time
from collections.abc import Callable

import numpy as np
import polars as pl

from bon.candidates import SCHEMA
from bon.selectors import SELECTORS, Selector, select, to_batch
from bon.selectors.best_of_k import curve

TARGET_S = 4.0
SUBSETS = ("hotpotqa", "gaia_dev", "bfcl", "tau2")


# --------------------------------------------------------------------------- data

def synthetic_table(n_tasks: int, n_cand: int, seed: int = 0) -> pl.DataFrame:
    """A candidate table with SCHEMA's columns, internally consistent and with success tied to features."""
    rng = np.random.default_rng(seed)
    rows = n_tasks * n_cand
    task = np.repeat(np.arange(n_tasks), n_cand)
    sample = np.tile(np.arange(n_cand, dtype=np.int32), n_tasks)

    # latent: per-task difficulty + per-candidate quality -> ground truth success
    difficulty = rng.normal(0.0, 1.2, n_tasks)[task]
    quality = rng.normal(0.0, 1.0, rows)
    success = rng.random(rows) < 1.0 / (1.0 + np.exp(-(quality - difficulty)))

    n_steps = rng.integers(1, 31, rows).astype(np.int32)
    judge_ok = rng.random(rows) >= 0.02  # 2% failed judge calls

    # step labels: successful trajectories get more +1 steps; a few labels missing
    p_pos = np.clip(0.55 + 0.25 * success + 0.08 * quality, 0.02, 0.98)
    n_missing = rng.binomial(n_steps, 0.03).astype(np.int32)
    labelled = n_steps - n_missing
    n_pos = rng.binomial(labelled, p_pos).astype(np.int32)
    n_neg = (labelled - n_pos).astype(np.int32)
    # failed judge: no labels at all
    n_pos = np.where(judge_ok, n_pos, 0).astype(np.int32)
    n_neg = np.where(judge_ok, n_neg, 0).astype(np.int32)
    n_missing = np.where(judge_ok, n_missing, n_steps).astype(np.int32)
    pos_ratio = n_pos / n_steps  # n_steps >= 1

    # first -1 at step position k, with room for the other -1 steps after it: k in [0, n_steps - n_neg]
    has_err = n_neg > 0
    k_first = np.floor(rng.random(rows) * (n_steps - n_neg + 1)).astype(np.int32)
    first_error = np.where(has_err, 2 + 2 * k_first, -1).astype(np.int32)  # assistant msgs at 2, 4, 6, ...
    clean_prefix = np.where(has_err, k_first / n_steps, 1.0)

    # outcome label: +1 mostly for successes, sometimes missing, never when the judge failed
    says_yes = rng.random(rows) < np.where(success, 0.85, 0.25)
    final_missing = (rng.random(rows) < 0.04) | ~judge_ok
    final_pred = np.where(says_yes, 1, -1).astype(np.int8)

    # answers: a few strings per task; successes mostly agree on answer 0; ~10% have no answer
    answer_id = np.where(success & (rng.random(rows) < 0.85), 0, rng.integers(0, 4, rows))
    answer_missing = rng.random(rows) < 0.10
    variant = rng.integers(0, 3, rows)  # surface forms that normalise (squad) to the same answer

    df = pl.DataFrame({
        "_task": task, "_aid": answer_id, "_amiss": answer_missing, "_var": variant,
        "_fe_null": ~has_err, "_fp_null": final_missing,
        "sample": sample, "n_steps": n_steps, "n_pos": n_pos, "n_neg": n_neg, "n_missing": n_missing,
        "pos_ratio": pos_ratio, "first_error": first_error, "clean_prefix": clean_prefix,
        "final_pred": final_pred, "judge_ok": judge_ok, "success": success,
    })
    base = pl.format("answer {} {}", pl.col("_task"), pl.col("_aid"))
    answer = (pl.when(pl.col("_amiss")).then(None)
              .when(pl.col("_var") == 0).then(base)
              .when(pl.col("_var") == 1).then(pl.format("The {}.", base.str.to_uppercase()))
              .otherwise(pl.format("  {}!", base)))
    df = df.with_columns(
        pl.format("t{}", pl.col("_task").cast(pl.String).str.zfill(7)).alias("task_id"),
        pl.col("_task").mod(len(SUBSETS)).replace_strict(dict(enumerate(SUBSETS)),
                                                        return_dtype=pl.String).alias("subset"),
        pl.lit("synthetic").alias("judge"),
        pl.when(pl.col("_fe_null")).then(None).otherwise(pl.col("first_error")).alias("first_error"),
        pl.when(pl.col("_fp_null")).then(None).otherwise(pl.col("final_pred")).alias("final_pred"),
        answer.alias("answer"),
    )
    return df.select([pl.col(c).cast(t) for c, t in SCHEMA.items()])


def check_consistency(df: pl.DataFrame) -> None:
    bad = df.select(
        (pl.col("n_pos") + pl.col("n_neg") + pl.col("n_missing") != pl.col("n_steps")).sum().alias("counts"),
        ((pl.col("n_neg") > 0) != pl.col("first_error").is_not_null()).sum().alias("first_error"),
        (pl.col("first_error").is_null() & (pl.col("clean_prefix") != 1.0)).sum().alias("clean_prefix"),
        (~pl.col("judge_ok") & pl.col("final_pred").is_not_null()).sum().alias("final_pred"),
        ((pl.col("pos_ratio") - pl.col("n_pos") / pl.col("n_steps")).abs() > 1e-12).sum().alias("pos_ratio"),
        (~pl.col("n_steps").is_between(1, 30)).sum().alias("n_steps"),
    ).row(0, named=True)
    broken = {k: v for k, v in bad.items() if v}
    if broken:
        raise SystemExit(f"synthetic table is inconsistent: {broken}")


# --------------------------------------------------------------------------- timing

def best_of(repeats: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def time_vectorised(table: pl.DataFrame, repeats: int) -> dict:
    """Best-of-`repeats` per part; every repeat uses a fresh batch (cold column cache)."""
    t_batch: list[float] = []
    sel_t = {name: [] for name in SELECTORS}
    cur_t = {name: [] for name in SELECTORS}
    methods: dict[str, str] = {}
    end_to_end = []
    for _ in range(repeats):
        t_start = time.perf_counter()
        batch = to_batch(table)
        t_batch.append(time.perf_counter() - t_start)
        for name, sel in SELECTORS.items():
            t0 = time.perf_counter()
            select(sel, batch)
            sel_t[name].append(time.perf_counter() - t0)
        for name, sel in SELECTORS.items():
            t0 = time.perf_counter()
            c = curve(sel, batch)
            cur_t[name].append(time.perf_counter() - t0)
            methods[name] = c.method
        end_to_end.append(time.perf_counter() - t_start)
    return {
        "batch": min(t_batch),
        "select": {k: min(v) for k, v in sel_t.items()},
        "curve": {k: min(v) for k, v in cur_t.items()},
        "methods": methods,
        "end_to_end": min(end_to_end),
    }


def per_task_lists(table: pl.DataFrame) -> list[list[dict]]:
    """Each task's candidates as row dicts, in sample order (baseline input; not timed)."""
    rows = table.sort(["judge", "subset", "task_id", "sample"]).to_dicts()
    return [list(g) for _, g in itertools.groupby(rows, key=lambda r: (r["judge"], r["subset"], r["task_id"]))]


def time_loop(tasks: list[list[dict]], selector: Selector) -> tuple[float, list[int]]:
    t0 = time.perf_counter()
    picks = [rows[selector(rows)]["sample"] for rows in tasks]
    return time.perf_counter() - t0, picks


# --------------------------------------------------------------------------- report

def fmt_s(x: float) -> str:
    return f"{x * 1000:9.1f} ms" if x < 10 else f"{x:9.2f} s "


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="best-of for vectorised timings")
    ap.add_argument("--loop-tasks", type=int, default=2_000, help="subsample size for the per-task loop baseline")
    ap.add_argument("--profile", action="store_true", help="cProfile one vectorised pass and print the top functions")
    args = ap.parse_args(argv)

    print(f"python {sys.version.split()[0]}, numpy {np.__version__}, polars {pl.__version__} "
          f"({pl.thread_pool_size()} polars threads), {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    t0 = time.perf_counter()
    table = synthetic_table(args.tasks, args.candidates, args.seed)
    t_gen = time.perf_counter() - t0
    check_consistency(table)
    print(f"synthetic table: {args.tasks:,} tasks x {args.candidates} candidates = {table.height:,} rows "
          f"(generated in {t_gen:.2f} s, seed {args.seed})")
    s = table.select(pl.col("success").mean().alias("success"), pl.col("final_pred").is_null().mean().alias("fp_null"),
                     pl.col("answer").is_null().mean().alias("ans_null"), (~pl.col("judge_ok")).mean().alias("failed"),
                     pl.col("first_error").is_null().mean().alias("no_err"))
    print("  " + ", ".join(f"{k}={v:.3f}" for k, v in s.row(0, named=True).items()))

    # ---- vectorised
    v = time_vectorised(table, args.repeats)
    print(f"\nVectorised (best of {args.repeats}, fresh batch per repeat)")
    print(f"  {'part':<34}{'time':>12}")
    print(f"  {'to_batch':<34}{fmt_s(v['batch'])}")
    for name, t in v["select"].items():
        print(f"  {'select ' + name:<34}{fmt_s(t)}")
    sum_select = sum(v["select"].values())
    print(f"  {'select: all ' + str(len(SELECTORS)) + ' selectors':<34}{fmt_s(sum_select)}")
    for name, t in v["curve"].items():
        print(f"  {'best_of_k.curve ' + name:<34}{fmt_s(t)}   method: {v['methods'][name]}")
    sum_curve = sum(v["curve"].values())
    print(f"  {'curve: all ' + str(len(SELECTORS)) + ' selectors':<34}{fmt_s(sum_curve)}")
    total = v["batch"] + sum_select + sum_curve
    print(f"  {'TOTAL (sum of best parts)':<34}{fmt_s(total)}")
    print(f"  {'TOTAL (best end-to-end pass)':<34}{fmt_s(v['end_to_end'])}")

    # ---- per-task Python loop baseline on a subsample
    n_loop = min(args.loop_tasks, args.tasks)
    rng = np.random.default_rng(args.seed + 1)
    keep = np.sort(rng.choice(args.tasks, n_loop, replace=False))
    ids = pl.Series([f"t{i:07d}" for i in keep])
    sub = table.filter(pl.col("task_id").is_in(ids.implode()))
    t0 = time.perf_counter()
    tasks = per_task_lists(sub)
    t_prep = time.perf_counter() - t0
    sub_batch = to_batch(sub)
    scale = args.tasks / n_loop
    print(f"\nPer-task Python loop baseline: selector(rows) on {n_loop:,} random tasks, extrapolated "
          f"linearly x{scale:g} to {args.tasks:,} tasks")
    print(f"  (building the row-dict lists took {t_prep * 1000:.0f} ms for the subsample, not counted)")
    print(f"  {'selector':<20}{'loop subsample':>15}{'loop extrap.':>14}{'vectorised':>14}{'speed-up':>10}  agree")
    loop_total = 0.0
    for name, sel in SELECTORS.items():
        t, picks = time_loop(tasks, sel)
        vec_picks = select(sel, sub_batch)["picked_sample"].to_list()
        agree = sum(a == b for a, b in zip(picks, vec_picks))
        extrap = t * scale
        loop_total += extrap
        vt = v["select"][name]
        print(f"  {name:<20}{fmt_s(t):>15}{fmt_s(extrap):>14}{fmt_s(vt):>14}{extrap / vt:>9.0f}x  "
              f"{agree}/{len(picks)}")
    vec_sel_total = v["batch"] + sum_select
    print(f"  {'ALL (vs batch+select)':<20}{'':>15}{fmt_s(loop_total):>14}{fmt_s(vec_sel_total):>14}"
          f"{loop_total / vec_sel_total:>9.0f}x")
    print("  speed-up = extrapolated loop time / vectorised select time (ALL: vectorised includes to_batch)")

    print(f"\nTarget: batch + all selections + all best-of-k curves < {TARGET_S:.0f} s at {args.tasks:,} x "
          f"{args.candidates}: {total:.2f} s -> {'PASS (under target)' if total < TARGET_S else 'FAIL (over target)'}")

    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        batch = to_batch(table)
        for sel in SELECTORS.values():
            select(sel, batch)
        for sel in SELECTORS.values():
            curve(sel, batch)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(25)
        print("\ncProfile of one vectorised pass (cumulative):")
        print(out.getvalue())
    return 0 if total < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())

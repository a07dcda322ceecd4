"""Benchmark: bon's `select(two_stage, table)` beside a direct numpy reference of the same selection.

    python benchmarks/bench_selection_reference.py                 # 100,000 tasks x 16 candidates
    python benchmarks/bench_selection_reference.py --tasks 20000 --candidates 8 --runs 9

The reference is written here, in plain numpy, for this benchmark only: Final -> %Pos
(keep the candidates the judge calls a success, all of them if none is; then the highest
pos_ratio, null ranked worst; ties to the lowest sample index), with the same outputs as
bon (picked sample, correct, tie-aware expected, n_tied, random, pass_any). It is given
what the synthetic table guarantees and bon cannot assume: rows come task by task, every
task has exactly N candidates in sample order, so it only reshapes. bon starts from the same
polars table and finds the tasks itself (`to_batch`), so the ratio includes that work.

Both start from the same built table (generation not timed), run alternately `--runs` times
(default 7) and report the median. The script checks that both pick the same sample and give
the same correct/expected/n_tied/random/pass_any on every task, then reports the peak memory
one bon selection adds: numpy allocations (tracemalloc) and the process's resident-set
high-water mark (which also sees polars' own allocations; Linux only).

Target: bon / reference <= 2.0x.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_selection import synthetic_table  # noqa: E402

from bon.selectors import select, two_stage  # noqa: E402

TARGET_RATIO = 2.0


def reference_two_stage(table: pl.DataFrame, n_cand: int) -> dict[str, np.ndarray]:
    """Final -> %Pos in numpy on a table laid out task by task, N candidates each, in sample order."""
    shape = (table.height // n_cand, n_cand)
    final_pred = table.get_column("final_pred").to_numpy().reshape(shape)  # float, NaN = null
    pos_ratio = table.get_column("pos_ratio").to_numpy().reshape(shape)
    success = table.get_column("success").to_numpy().reshape(shape)
    sample = table.get_column("sample").to_numpy().reshape(shape)
    judged = final_pred == 1
    alive = judged | ~judged.any(axis=1, keepdims=True)  # fall back to all candidates
    value = np.where(np.isnan(pos_ratio), -np.inf, pos_ratio)
    top = alive & (value == np.where(alive, value, -np.inf).max(axis=1, keepdims=True))
    pick = top.argmax(axis=1)  # lowest slot = lowest sample
    rows = np.arange(shape[0])
    n_tied = top.sum(axis=1)
    n_right = success.sum(axis=1)
    return {"picked_sample": sample[rows, pick], "correct": success[rows, pick],
            "expected": (success & top).sum(axis=1) / n_tied, "n_tied": n_tied,
            "random": n_right / n_cand, "pass_any": n_right > 0}


def check_agreement(table: pl.DataFrame, n_cand: int) -> int:
    """Every task: bon's row equals the reference's (matched by task_id; bon sorts its tasks by key)."""
    ref = reference_two_stage(table, n_cand)
    ref_ids = table.get_column("task_id").to_numpy()[::n_cand]
    mine = select(two_stage, table)
    where = pl.DataFrame({"task_id": ref_ids, "_i": np.arange(ref_ids.size)})
    index = mine.join(where, on="task_id", how="left", maintain_order="left").get_column("_i").to_numpy()
    if mine.height != ref_ids.size or np.isnan(index.astype(float)).any():
        raise SystemExit(f"bon found {mine.height} tasks, the reference {ref_ids.size}")
    bad = 0
    for name, want in ref.items():
        got = mine.get_column(name).to_numpy()
        same = np.isclose(got, want[index], rtol=0, atol=1e-12) if name in ("expected", "random") else \
            got == want[index]
        bad = max(bad, int((~same).sum()))
    return bad


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def peak_memory(table: pl.DataFrame) -> tuple[float, float | None]:
    """(numpy peak MiB via tracemalloc, resident-set high-water growth MiB or None) of one selection."""
    tracemalloc.start()
    select(two_stage, table)
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = None
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current resident set
        before = _status_kib("VmHWM")
        select(two_stage, table)
        rss = (_status_kib("VmHWM") - before) / 1024
    except OSError:
        pass
    return traced / 2**20, rss


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise OSError(field)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--candidates", type=int, default=16)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    table = synthetic_table(args.tasks, args.candidates, args.seed)
    print(f"numpy {np.__version__}, polars {pl.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"table: {args.tasks:,} tasks x {args.candidates} = {table.height:,} rows, "
          f"{table.estimated_size() / 2**20:.0f} MiB")
    bad = check_agreement(table, args.candidates)
    print(f"agreement: {'every task identical' if not bad else f'{bad} tasks differ'}")

    select(two_stage, table)  # warm-up: imports, polars thread pool
    mine, ref = [], []
    for _ in range(args.runs):
        mine.append(timed(lambda: select(two_stage, table)))
        ref.append(timed(lambda: reference_two_stage(table, args.candidates)))
    m, r = statistics.median(mine), statistics.median(ref)
    ratio = m / r
    print(f"\nselect(two_stage, table), median of {args.runs} alternating runs")
    print(f"  bon (to_batch + select)   {m * 1000:8.1f} ms   (min {min(mine) * 1000:.1f})")
    print(f"  numpy reference           {r * 1000:8.1f} ms   (min {min(ref) * 1000:.1f})")
    print(f"  ratio                     {ratio:8.2f}x   target <= {TARGET_RATIO:.1f}x -> "
          f"{'PASS' if ratio <= TARGET_RATIO else 'FAIL'}")

    traced, rss = peak_memory(table)
    print(f"\npeak memory of one selection: numpy {traced:.0f} MiB (tracemalloc), "
          + (f"resident set +{rss:.0f} MiB (VmHWM)" if rss is not None else "resident set not measurable here"))
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0 if ratio <= TARGET_RATIO and not bad else 1


if __name__ == "__main__":
    sys.exit(main())

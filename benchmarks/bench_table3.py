"""Benchmark: Table 3 (`python -m bon.prm_eval`) and a replay run, each beside a plain reference.

    BON_DATA_DIR=/path/to/agentprocessbench python benchmarks/bench_table3.py [--runs 7]

The reference for Table 3 is the work of AgentProcessBench's `eval/compare.py`, re-implemented here in
plain Python (the upstream script cannot be fetched offline): read the human labels and every recorded
judge's outputs with `json`, and count StepAcc and FirstErrAcc per judge and subset (and pooled), then
print the table. `python benchmarks/bench_table3.py --reference` runs only that, importing nothing but
the standard library. Before timing, the reference's counts are checked to equal bon's exactly.

Measured, as medians of paired runs (bon and reference alternate, so load from other work hits both):
1. whole process: `python -m bon.prm_eval judge.name=all dataset.subset=all` vs the reference script;
2. computation only, in this process (in-memory caches cleared each run): `prm_eval.score` and its
   table vs the reference's function;
3. a replay run `python -m bon.run dataset=agentprocessbench dataset.subset=all judge=replay
   judge.name=GPT-5.2` vs `python -c "import polars, numpy, hydra"` (target: ratio <= 2.0).
bon keeps each label file's checked labels in a cache (bon.datasets.apb_cache; here a temporary
BON_CACHE_DIR), so 1 and 2 are each measured twice:
- cold: the cache emptied before every run, so every file is parsed and checked (a first run, or the
  first after the data changed); shown for comparison, no target;
- warm: the cache present, files unchanged (every later run): target ratio <= 2.0 (whole process) and
  <= 0.5 (in process).
The reference has no cache: it parses every file every time. It also checks that neither bon command
imports scipy. Exit code 0 when every target is met.
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

SUBSETS = ("hotpotqa", "gaia_dev", "bfcl", "tau2")


# ---- the reference: plain Python over the raw files, as the upstream evaluation script works ----------

def _rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _first_error(labels: dict) -> int | None:
    return min((int(k) for k, v in labels.items() if v == -1), default=None)


def reference_counts(root: Path) -> dict[str, dict[str, list[int]]]:
    """judge -> subset -> [steps, steps correct, trajectories, first errors correct], `avg` pooled."""
    human = {s: _rows(root / "data" / "AnswerOnly" / f"{s}_final.jsonl") for s in SUBSETS}
    out: dict[str, dict[str, list[int]]] = {}
    for judge_dir in sorted((root / "eval" / "results").iterdir()):
        if not judge_dir.is_dir():
            continue
        per_subset: dict[str, list[int]] = {}
        for subset in SUBSETS:
            (path,) = judge_dir.glob(f"{subset}__*.jsonl")
            judged = {r["record_id"]: r.get("step_labels") or {} for r in _rows(path)}
            counts = [0, 0, 0, 0]
            for h in human[subset]:
                predicted = judged.get(h["record_id"], {})
                for index, label in h["step_labels"].items():
                    counts[0] += 1
                    counts[1] += predicted.get(index) == label
                counts[2] += 1
                counts[3] += _first_error(h["step_labels"]) == _first_error(predicted)
            per_subset[subset] = counts
        per_subset["avg"] = [sum(c[i] for c in per_subset.values()) for i in range(4)]
        out[judge_dir.name.strip()] = per_subset
    return out


def reference_table(root: Path) -> str:
    counts = reference_counts(root)
    lines = ["judge " + " ".join(f"{s:>13}" for s in (*SUBSETS, "avg"))]
    for judge, per_subset in counts.items():
        cells = " ".join(f"{100 * c[1] / c[0]:6.1f}/{100 * c[3] / c[2]:<6.1f}" for c in per_subset.values())
        lines.append(f"{judge} {cells}")
    return "\n".join(lines)


def data_dir() -> Path:
    import os

    value = os.environ.get("BON_DATA_DIR")
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "agentprocessbench"
    path = Path(value) if value else default
    if not (path / "data" / "AnswerOnly").is_dir():
        raise SystemExit(f"bench_table3: no AgentProcessBench release at {path} (set BON_DATA_DIR)")
    return path


# ---- the benchmark ---------------------------------------------------------------------------------------

def _bon_table(root: Path) -> tuple[dict, str]:
    from bon import prm_eval
    from bon.datasets import agentprocessbench as apb

    for name in ("load_records", "load_judge", "trajectories", "human_columns"):  # (as far as --checkout has them)
        if hasattr(apb, name):
            getattr(apb, name).cache_clear()  # every run starts from the files (or the label cache), like a new process
    scores = prm_eval.score({"name": "agentprocessbench", "subset": "all", "root": str(root)},
                            {"kind": "replay", "name": "all"})
    rows = prm_eval.table_rows(scores) if hasattr(prm_eval, "table_rows") else prm_eval.to_frame(scores)
    return scores, prm_eval.format_table(rows)


def _check_same_counts(root: Path, empty_cache: Callable[[], None]) -> None:
    """bon's counts, parsed (cache emptied) and then from the cache, equal the reference's exactly."""
    want = reference_counts(root)
    for how in ("parsed", "cached"):
        if how == "parsed":
            empty_cache()
        scores, _ = _bon_table(root)
        ours = {judge: {subset: [s.n_steps, s.n_step_correct, s.n_trajectories, s.n_first_error_correct]
                        for subset, s in per_subset.items()} for judge, per_subset in scores.items()}
        if ours != want:
            raise SystemExit(f"bench_table3: bon.prm_eval ({how}) and the reference disagree on the counts")


def _timed_process(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, float]:
    """(wall, CPU) seconds of one command; CPU (user + system of the child) is less hit by other load."""
    import resource
    import subprocess
    import time

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"bench_table3: failed (exit {proc.returncode}): {' '.join(cmd)}\n{proc.stderr[-2000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def _timed_call(fn: Callable[[], object]) -> tuple[float, float]:
    import time

    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _paired(name: str, bon: Callable[[], tuple[float, float]], reference: Callable[[], tuple[float, float]],
            runs: int, target: float | None) -> bool:
    """Alternate bon and the reference `runs` times; print median wall and CPU times and the wall ratio."""
    import statistics

    ours, theirs = [], []
    for _ in range(runs):
        ours.append(bon())
        theirs.append(reference())
    wall_a, wall_b = (statistics.median(w for w, _ in x) for x in (ours, theirs))
    cpu_a, cpu_b = (statistics.median(c for _, c in x) for x in (ours, theirs))
    ratio = wall_a / wall_b
    ok = target is None or ratio <= target
    verdict = "no target" if target is None else f"target <= {target:.1f}x: {'PASS' if ok else 'FAIL'}"
    print(f"{name}\n  wall: bon {wall_a:6.3f} s  reference {wall_b:6.3f} s  ratio {ratio:5.2f}x  "
          f"(median of paired ratios {statistics.median(a[0] / b[0] for a, b in zip(ours, theirs)):.2f}x)  "
          f"{verdict}\n"
          f"  CPU:  bon {cpu_a:6.3f} s  reference {cpu_b:6.3f} s  ratio {cpu_a / cpu_b:5.2f}x")
    return ok


def _imports_scipy(cmd_args: list[str], module: str, env: dict[str, str], cwd: str) -> bool:
    import subprocess

    probe = ("import atexit, runpy, sys\n"
             "atexit.register(lambda: sys.stderr.write('BENCH_SCIPY=%d\\n' % ('scipy' in sys.modules)))\n"
             f"sys.argv = [{module!r}, *sys.argv[1:]]\n"
             f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)\n")
    proc = subprocess.run([sys.executable, "-c", probe, *cmd_args], env=env, cwd=cwd, capture_output=True, text=True)
    if "BENCH_SCIPY=" not in proc.stderr:
        raise SystemExit(f"bench_table3: the import probe of {module} did not report:\n{proc.stderr[-2000:]}")
    return "BENCH_SCIPY=1" in proc.stderr


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os
    import shutil
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="paired runs per measurement (medians reported)")
    ap.add_argument("--reference", action="store_true", help="only run the reference and print its table")
    ap.add_argument("--checkout", type=Path, help="time the bon package in this directory instead (e.g. an older "
                    "`git archive` of bon/ and conf/), for before/after figures")
    args = ap.parse_args(argv)
    root = data_dir()
    if args.reference:
        print(reference_table(root))
        return 0

    tmp_dir = tempfile.TemporaryDirectory(prefix="bon_bench_table3_")
    tmp = tmp_dir.name
    cache = Path(tmp) / "cache"  # bon's label cache for this benchmark only: emptied for the cold figures

    def empty_cache() -> None:
        shutil.rmtree(cache, ignore_errors=True)

    os.environ["BON_CACHE_DIR"] = str(cache)
    env = {**os.environ, "BON_DATA_DIR": str(root)}
    if args.checkout:
        sys.path.insert(0, str(args.checkout.resolve()))
        env["PYTHONPATH"] = str(args.checkout.resolve())
    import bon

    print(f"bon from {Path(bon.__file__).parent}")
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    print(f"BON_DATA_DIR={root}; {len(reference_counts(root))} recorded judges x {len(SUBSETS)} subsets")
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} (1, 5, 15 min); "
          f"{os.cpu_count()} cores")
    _check_same_counts(root, empty_cache)
    print("counts: bon.prm_eval equals the reference for every judge and subset, parsed and from its cache")

    results = []
    with tmp_dir:
        counter = iter(range(10**6))
        prm = ["dataset.subset=all", "judge=replay", "judge.name=all"]
        replay = ["dataset=agentprocessbench", "dataset.subset=all", "judge=replay", "judge.name=GPT-5.2"]

        def bon_prm() -> tuple[float, float]:
            return _timed_process([sys.executable, "-m", "bon.prm_eval", *prm,
                                   f"hydra.run.dir={tmp}/p{next(counter)}"], env, tmp)

        def bon_replay() -> tuple[float, float]:
            return _timed_process([sys.executable, "-m", "bon.run", *replay,
                                   f"hydra.run.dir={tmp}/r{next(counter)}"], env, tmp)

        reference = [sys.executable, str(Path(__file__).resolve()), "--reference"]
        imports = [sys.executable, "-c", "import polars, numpy, hydra"]

        def cold(timed: Callable[[], tuple[float, float]]) -> Callable[[], tuple[float, float]]:
            return lambda: (empty_cache(), timed())[1]  # emptied before the clock starts

        bon_prm(), _timed_process(reference, env, tmp), bon_replay()  # warm-up: page cache, .pyc files
        in_process = lambda: _timed_call(lambda: _bon_table(root))  # noqa: E731
        print(f"\nmedians of {args.runs} paired runs; cold: bon's label cache emptied before each run (every "
              f"file parsed and checked), warm: cache present (files unchanged); the reference parses every time")
        results.append(_paired("Table 3, whole process, cold", cold(bon_prm),
                               lambda: _timed_process(reference, env, tmp), args.runs, None))
        results.append(_paired("Table 3, whole process, warm", bon_prm, lambda: _timed_process(reference, env, tmp),
                               args.runs, 2.0))
        results.append(_paired("Table 3, computation in process, cold", cold(in_process),
                               lambda: _timed_call(lambda: reference_table(root)), args.runs, None))
        in_process()  # the cache filled again
        results.append(_paired("Table 3, computation in process, warm", in_process,
                               lambda: _timed_call(lambda: reference_table(root)), args.runs, 0.5))
        results.append(_paired("replay run vs import polars/numpy/hydra", bon_replay,
                               lambda: _timed_process(imports, env, tmp), args.runs, 2.0))
        scipy_prm = _imports_scipy([*prm, f"hydra.run.dir={tmp}/probe_p"], "bon.prm_eval", env, tmp)
        scipy_run = _imports_scipy([*replay, f"hydra.run.dir={tmp}/probe_r"], "bon.run", env, tmp)
    yes_no = {True: "yes", False: "no"}
    print(f"\nscipy imported: bon.prm_eval {yes_no[scipy_prm]}, replay bon.run {yes_no[scipy_run]}")
    return 0 if all(results) and not (scipy_prm or scipy_run) else 1


if __name__ == "__main__":
    sys.exit(main())

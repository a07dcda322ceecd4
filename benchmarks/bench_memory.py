"""Memory per candidate of a simulator run, end to end: peak resident memory above a tiny run's, per candidate.

    python benchmarks/bench_memory.py [--tasks 50000 100000 200000] [--n 16] [--selectors majority two_stage]
                                      [--profile gaia_dev]

Each size is one `python -m bon.run dataset=sim` in a fresh child process (Hydra, generation, judging,
selection, best-of-k, the bootstrap and writing the outputs), so its peak is the kernel's ru_maxrss for
that child alone. The baseline is the same command with 100 tasks (interpreter, imports, Hydra). Prints
KB per candidate = (peak - baseline) / candidates per size and selector, and the largest figure beside
bon.memory.PER_CANDIDATE, the estimate behind the warning before a run that would not fit (exit 1 when
the measured figure is more than 10% above it: the warning would then promise too little).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bon import memory

WRAPPER = ("import resource, subprocess, sys\n"
           "proc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)\n"
           "if proc.returncode: sys.exit(proc.stderr[-2000:])\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n")


def peak_bytes(n_tasks: int, n: int, selector: str, profile: str, out: Path) -> int:
    """Peak resident memory of one `bon.run` with this many tasks (a wrapper process of its own waits for it,
    so RUSAGE_CHILDREN is this run's alone)."""
    cmd = [sys.executable, "-m", "bon.run", "dataset=sim", f"dataset.n_tasks={n_tasks}", f"generator.n={n}",
           f"selector={selector}", f"dataset.profile={profile}", f"hydra.run.dir={out}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(f"bon.run failed for {n_tasks} tasks, selector={selector}:\n{proc.stderr}")
    return int(proc.stdout.strip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[50_000, 100_000, 200_000])
    parser.add_argument("--n", type=int, default=16, help="samples per task (generator.n)")
    parser.add_argument("--selectors", nargs="+", default=["majority", "two_stage"])
    parser.add_argument("--profile", default="gaia_dev", help="dataset.profile (tau2 has the longest trajectories)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for selector in args.selectors:
            base = peak_bytes(100, args.n, selector, args.profile, Path(tmp) / "base")
            print(f"profile={args.profile} selector={selector}: baseline (100 tasks) {base / 2**20:.0f} MB")
            for n_tasks in args.tasks:
                peak = peak_bytes(n_tasks, args.n, selector, args.profile, Path(tmp) / f"{selector}-{n_tasks}")
                candidates = n_tasks * args.n
                per = (peak - base) / candidates
                results.append({"selector": selector, "tasks": n_tasks, "candidates": candidates,
                                "peak_mb": peak / 2**20, "baseline_mb": base / 2**20, "bytes_per_candidate": per})
                print(f"  {n_tasks:>8,} tasks x {args.n} = {candidates:>10,} candidates: peak {peak / 2**20:6.0f} MB, "
                      f"{per / 1024:.3f} KB per candidate", flush=True)
    worst = max(r["bytes_per_candidate"] for r in results)
    print(f"largest: {worst / 1024:.3f} KB per candidate; bon.memory.PER_CANDIDATE = {memory.PER_CANDIDATE} bytes "
          f"({memory.PER_CANDIDATE / 1024:.3f} KB)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if worst <= 1.1 * memory.PER_CANDIDATE else 1


if __name__ == "__main__":
    sys.exit(main())

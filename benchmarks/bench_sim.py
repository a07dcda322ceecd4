"""Simulator speed: generate, judge and evaluate 100,000 tasks x 16 candidates (target < 5 s).

    python benchmarks/bench_sim.py [--tasks 100000] [--candidates 16] [--profile gaia_dev]

Also times `python -m bon.run` with no arguments end to end (target < 3 s).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

from bon.datasets import sim
from bon.evaluate import evaluate
from bon.selectors import SELECTORS
from bon.sim import model

CONF = Path(__file__).resolve().parents[1] / "conf"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--candidates", type=int, default=16)
    parser.add_argument("--profile", default="gaia_dev")
    parser.add_argument("--selector", default="two_stage")
    args = parser.parse_args()
    dataset = yaml.safe_load((CONF / "dataset" / "sim.yaml").read_text()) | {"profile": args.profile}
    judge_cfg = yaml.safe_load((CONF / "judge" / "sim.yaml").read_text())
    prof, judge = sim.profile(dataset), sim.judge_model(judge_cfg, args.profile)
    timings = {}
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    trajs = model.generate(prof, model.sample_tasks(prof, args.tasks, rng), args.candidates, rng)
    timings["generate"] = time.perf_counter() - start
    t = time.perf_counter()
    predicted, final, failed = model.judge(judge, trajs, rng)
    timings["judge"] = time.perf_counter() - t
    t = time.perf_counter()
    table = model.candidate_table(trajs, predicted, final, failed, judge.name, prof.name)
    timings["candidate table"] = time.perf_counter() - t
    t = time.perf_counter()
    _, rows = evaluate(SELECTORS[args.selector], table, "sim", prof.name, resamples=2000)
    timings[f"evaluate {args.selector} (select, best-of-k, bootstrap)"] = time.perf_counter() - t
    total = time.perf_counter() - start
    steps = int(trajs.lengths.sum())
    print(f"SYNTHETIC: {args.tasks:,} tasks x {args.candidates} candidates, profile {args.profile}, {steps:,} steps")
    for name, seconds in timings.items():
        print(f"  {name:<52} {seconds * 1000:8.0f} ms")
    print(f"  {'total':<52} {total * 1000:8.0f} ms   target < 5000 ms: {'PASS' if total < 5 else 'FAIL'}")
    print(f"  accuracy {100 * rows[0].accuracy:.1f}%  random {100 * rows[0].random:.1f}%  "
          f"pass@N {100 * rows[0].pass_at_n:.1f}%")
    walls = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "bon.run", "hydra.run.dir=out"], cwd=tmp, check=True,
                           capture_output=True)
            walls.append(time.perf_counter() - t)
    print(f"python -m bon.run (no arguments): best {min(walls):.2f} s of 3   target < 3 s: "
          f"{'PASS' if min(walls) < 3 else 'FAIL'}")
    return 0 if total < 5 and min(walls) < 3 else 1


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: a Hydra multirun sweep of the simulator, per job, and how many times it composes a config.

    python benchmarks/bench_sweep.py [--runs 3]

Times, as a subprocess (wall clock and CPU, interpreter start included), the 12-job sweep

    python -m bon.run -m selector=final,two_stage,pos_count,pos_ratio dataset.profile=hotpotqa,gaia_dev,tau2

and counts the configs it composes. Hydra alone composes each job twice (once to check the batch before
launching it, once in the launcher) plus the sweep's own config: 1 + 2 x 12 = 25; bon hands the launcher
the checked config (bon.config._each_job_composed_once): 1 + 12 = 13. No data, key or network needed.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

SWEEP = ["-m", "selector=final,two_stage,pos_count,pos_ratio", "dataset.profile=hotpotqa,gaia_dev,tau2"]
JOBS = 4 * 3

# bon.run as `python -m` runs it, counting Hydra's compositions and reporting them at exit.
_PROBE = """
import atexit, runpy, sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
count, original = [0], ConfigLoaderImpl.load_configuration
def counted(self, *args, **kwargs):
    count[0] += 1
    return original(self, *args, **kwargs)
ConfigLoaderImpl.load_configuration = counted
atexit.register(lambda: sys.stderr.write(f"BENCH_COMPOSITIONS={count[0]}\\n"))
sys.argv = ["bon.run", *sys.argv[1:]]
runpy.run_module("bon.run", run_name="__main__", alter_sys=True)
"""


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_sweep(cwd: str, probe: bool) -> tuple[float, float, int | None]:
    command = [sys.executable, "-c", _PROBE] if probe else [sys.executable, "-m", "bon.run"]
    with tempfile.TemporaryDirectory() as out:
        cpu, start = children_cpu(), time.perf_counter()
        proc = subprocess.run([*command, *SWEEP, f"hydra.sweep.dir={out}"], cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, "HYDRA_FULL_ERROR": "1"})
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if proc.returncode != 0:
        raise SystemExit(f"bench_sweep: the sweep failed:\n{proc.stderr[-3000:]}")
    found = [line for line in proc.stderr.splitlines() if line.startswith("BENCH_COMPOSITIONS=")]
    return wall, cpu, int(found[-1].split("=")[1]) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="timed sweeps (default 3); the median is printed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cwd:
        _, _, compositions = one_sweep(cwd, probe=True)  # also warms the bytecode and file caches
        times = [one_sweep(cwd, probe=False)[:2] for _ in range(args.runs)]
    wall = statistics.median(t[0] for t in times)
    cpu = statistics.median(t[1] for t in times)
    print(f"{JOBS}-job sweep ({' '.join(SWEEP)}), median of {args.runs} at load average {os.getloadavg()[0]:.1f}:")
    print(f"  wall {wall:.2f} s ({wall / JOBS:.2f} s a job), CPU {cpu:.2f} s ({cpu / JOBS:.2f} s a job)")
    print(f"  configs composed: {compositions} (Hydra alone: {1 + 2 * JOBS}; once per job: {1 + JOBS})")


if __name__ == "__main__":
    main()

"""Benchmark: the replay path `python -m bon.run ...` end to end, and that it never imports litellm.

    BON_DATA_DIR=/path/to/agentprocessbench python benchmarks/bench_replay.py [--runs 5]

Times, as a subprocess (wall clock including interpreter start-up and Hydra), the command

    python -m bon.run dataset=agentprocessbench dataset.subset=all judge=replay \
        judge.name=GPT-5.2 selector=two_stage hydra.run.dir=<temp dir>

Target: < 3 s (best of --runs). Also checks that litellm is not imported on this path
(sys.modules at interpreter exit, and `-X importtime`), and lists the 10 slowest imports
by cumulative time.

BON_DATA_DIR: taken from the environment; if unset, defaults to
../shared/data/agentprocessbench relative to the repository root when that exists.
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 3.0
REPO = Path(__file__).resolve().parent.parent
OVERRIDES = ["dataset=agentprocessbench", "dataset.subset=all", "judge=replay", "judge.name=GPT-5.2",
             "selector=two_stage"]

# Runs bon.run as `python -m` would, then reports at exit (after Hydra has finished) whether litellm was loaded.
_PROBE = """
import atexit, runpy, sys
def _report():
    mods = sorted(m for m in sys.modules if m == "litellm" or m.startswith("litellm."))
    sys.stderr.write("BENCH_LITELLM_MODULES=" + ",".join(mods) + "\\n")
atexit.register(_report)
sys.argv = ["bon.run", *sys.argv[1:]]
runpy.run_module("bon.run", run_name="__main__", alter_sys=True)
"""


def data_dir() -> str:
    value = os.environ.get("BON_DATA_DIR")
    if value:
        return value
    default = (REPO / ".." / "shared" / "data" / "agentprocessbench").resolve()
    if default.is_dir():
        return str(default)
    raise SystemExit(f"bench_replay: BON_DATA_DIR is not set and the default {default} does not exist.\n"
                     f"Set BON_DATA_DIR to the AgentProcessBench release directory (it holds data/AnswerOnly/).")


def run(cmd: list[str], env: dict[str, str], cwd: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench_replay: command failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return wall, proc


def parse_importtime(stderr: str) -> list[tuple[int, int, int, str]]:
    """(self_us, cumulative_us, depth, module) per `import time:` line."""
    out = []
    for line in stderr.splitlines():
        m = re.match(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)", line)
        if m:
            out.append((int(m.group(1)), int(m.group(2)), (len(m.group(3)) - 1) // 2, m.group(4)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="timed runs (best and median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs first (page cache, .pyc files)")
    ap.add_argument("--python", default=sys.executable, help="interpreter to run bon.run with")
    args = ap.parse_args(argv)

    env = {**os.environ, "BON_DATA_DIR": data_dir(), "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPROFILEIMPORTTIME", None)
    print(f"interpreter: {args.python}")
    print(f"BON_DATA_DIR={env['BON_DATA_DIR']}")
    print(f"command: python -m bon.run {' '.join(OVERRIDES)} hydra.run.dir=<tmp>")

    with tempfile.TemporaryDirectory(prefix="bon_bench_replay_") as tmp:
        def cmd(tag: str, *pre: str) -> list[str]:
            return [args.python, *pre, "-m", "bon.run", *OVERRIDES, f"hydra.run.dir={tmp}/{tag}"]

        for i in range(args.warmup):
            run(cmd(f"warmup{i}"), env, tmp)
        walls = []
        last = None
        for i in range(args.runs):
            wall, last = run(cmd(f"run{i}"), env, tmp)
            walls.append(wall)
            print(f"  run {i + 1}: {wall:.3f} s")
        if last is not None and "wrote" not in last.stdout:
            raise SystemExit(f"bench_replay: bon.run did not report writing its summary:\n{last.stdout}")
        print("bon.run output (last run):")
        print("  " + last.stdout.strip().replace("\n", "\n  "))
        best, median = min(walls), statistics.median(walls)
        print(f"\nend-to-end wall clock over {args.runs} runs ({args.warmup} untimed warm-up): "
              f"best {best:.3f} s, median {median:.3f} s, worst {max(walls):.3f} s")
        ok_time = best < TARGET_S
        print(f"target < {TARGET_S:.0f} s: {'PASS' if ok_time else 'FAIL'} (best {best:.3f} s; median "
              f"{'also under' if median < TARGET_S else 'over'} target)")

        # litellm check 1: sys.modules at interpreter exit
        _, probe = run([args.python, "-c", _PROBE, *OVERRIDES, f"hydra.run.dir={tmp}/probe"], env, tmp)
        found = re.search(r"^BENCH_LITELLM_MODULES=(.*)$", probe.stderr, re.M)
        if found is None:
            raise SystemExit(f"bench_replay: the sys.modules probe did not report:\n{probe.stderr}")
        in_modules = [m for m in found.group(1).split(",") if m]

        # litellm check 2 and import profile: -X importtime
        wall_it, it = run(cmd("importtime", "-X", "importtime"), env, tmp)
        imports = parse_importtime(it.stderr)
        in_importtime = sorted({m for _, _, _, m in imports if m == "litellm" or m.startswith("litellm.")})

    litellm = bool(in_modules or in_importtime)
    print(f"\nlitellm imported: {'yes' if litellm else 'no'}"
          f"  (sys.modules at exit: {len(in_modules)} litellm modules; -X importtime: {len(in_importtime)})")
    if litellm:
        print(f"  modules: {', '.join((in_modules or in_importtime)[:10])}")

    total_us = sum(c for _, c, d, _ in imports if d == 0)
    print(f"\n-X importtime run: {wall_it:.3f} s wall (importtime adds overhead); {len(imports)} modules, "
          f"top-level imports total {total_us / 1e6:.3f} s")
    print("top 10 imports by cumulative time (depth 0 = not nested in another import: module level or a lazy "
          "import inside a function):")
    print(f"  {'cumulative':>11} {'self':>9}  depth  module")
    for self_us, cum_us, depth, mod in sorted(imports, key=lambda r: -r[1])[:10]:
        print(f"  {cum_us / 1000:8.1f} ms {self_us / 1000:6.1f} ms  {depth:>5}  {mod}")
    return 0 if ok_time and not litellm else 1


if __name__ == "__main__":
    sys.exit(main())

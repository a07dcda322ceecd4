"""Benchmark: how long `workers=N` takes to answer its first calls, and the CPU its processes spend.

    python benchmarks/bench_workers_start.py            # workers = 1, 2, 4
    python benchmarks/bench_workers_start.py --workers 2 8

Each N runs in a fresh interpreter against the loopback test server (tests/llm_server.py), so every
run starts from nothing: the first calls wait for litellm's import in the process that forks the
workers (bon.llm.worker), then each worker's first call (litellm's lazy set-up). Printed per N: the
wall time from the client's start to 4·N answered calls, and the CPU of the forking process and of the
workers (from /proc: Linux only). Before workers were forked, each imported litellm itself.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = """
import asyncio, os, sys, time
sys.path.insert(0, {tests!r})
from llm_server import FakeLLMServer
from bon.llm import LLMClient

def cpu_s(pid):
    fields = open(f"/proc/{{pid}}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

n = {n}
os.environ["BENCH_KEY"] = "not-a-real-key"
with FakeLLMServer() as server:
    async def go():
        start = time.perf_counter()
        async with LLMClient("openai/bench", api_base=server.base_url, api_key_env="BENCH_KEY", workers=n,
                             prices={{"input_per_mtok": 0.0, "output_per_mtok": 0.0}}) as client:
            results = await asyncio.gather(*(client.complete([{{"role": "user", "content": str(i)}}])
                                             for i in range(4 * n)))
            wall = time.perf_counter() - start
            assert all(r.ok for r in results), results
            workers = client.pool.pids
            forker = int(open(f"/proc/{{workers[0]}}/stat").read().rsplit(")", 1)[1].split()[1])
            return wall, cpu_s(forker), sum(cpu_s(p) for p in workers)
    wall, forker, workers = asyncio.run(go())
print(f"workers={{n}}: {{4 * n}} calls answered {{wall:.2f}} s after the start; CPU: forking process "
      f"{{forker:.2f}} s (the litellm import), workers {{workers:.2f}} s")
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    args = p.parse_args(argv)
    for n in args.workers:
        code = CHILD.format(tests=str(ROOT / "tests"), n=n)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return 1
        print(proc.stdout.strip())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

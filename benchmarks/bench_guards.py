"""Figures for the live run's guards: rpm over real 60 s windows from a cold start, and a dead endpoint.

    python benchmarks/bench_guards.py                  # both parts (about 2.5 min)
    python benchmarks/bench_guards.py --part outage    # only the closed-port run (about 15 s)

rpm: a fresh process (litellm not yet imported when its first request is admitted) sends `--n`
requests with rpm=R and the default 60 s period to the test server, which runs in its own process
and logs every arrival. Printed: the most arrivals in any sliding 60 s window (must be <= R) and
the sustained rate (must be >= 0.9 R per minute while work remains).

outage: `python -m bon.run` with the generator pointed at a closed port on 127.0.0.1 and the judge
at the test server. Printed: wall time to exit, exit code, the error line and the judge requests.
No network: everything is on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import max_in_window  # noqa: E402

COLD_CLIENT = """
import asyncio, sys
import bon.llm
assert "litellm" not in sys.modules
client = bon.llm.LLMClient("openai/test-model", api_base=sys.argv[1], concurrency=int(sys.argv[3]),
                           rpm=int(sys.argv[4]), timeout=30)

async def go():
    async with client:
        done = await asyncio.gather(*(client.complete([{"role": "user", "content": f"judge {i}"}])
                                      for i in range(int(sys.argv[2]))))
    print(sum(r.ok for r in done), "ok")

asyncio.run(go())
"""


class Server:
    """tests/llm_server.py in a child process."""

    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "llm_server.py"), "--latency",
                                      str(latency)], stdout=subprocess.PIPE, text=True)
        self.base = f"http://127.0.0.1:{int(self.proc.stdout.readline().split()[1])}/v1"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base + "/stats", timeout=10) as r:
            return json.load(r)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def rpm(n: int, r: int, concurrency: int, latency: float) -> None:
    server = Server(latency)
    try:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", COLD_CLIENT, server.base, str(n), str(concurrency), str(r)],
                             capture_output=True, text=True, timeout=n / r * 62 + 120, cwd=ROOT)
        wall = time.perf_counter() - t0
        arrivals = sorted(server.stats()["arrivals"])
    finally:
        server.close()
    if out.returncode != 0:
        sys.exit(f"client failed:\n{out.stderr}")
    worst = max_in_window(arrivals, 60.0)
    # Requests go in bursts of up to R per window; the (n - R) requests before the last burst took
    # from the first arrival to the last burst's start: that is the rate while work remained.
    sustained = (n - r) / (arrivals[n - r] - arrivals[0]) * 60
    print(f"rpm: cold start, rpm={r} (60 s windows), concurrency {concurrency}, {n} requests, "
          f"{latency * 1000:.0f} ms server latency, client wall {wall:.1f} s ({out.stdout.strip()})")
    print(f"  max {worst} arrivals in any sliding 60 s window (limit {r}); sustained {sustained:.1f} per minute "
          f"= {sustained / r:.3f} R (>= 0.9 R wanted); requests 1, R+1, 2R+1, ... arrived at "
          + ", ".join(f"{arrivals[i] - arrivals[0]:.1f} s" for i in range(0, n, r)))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def outage() -> None:
    server = Server(0.0)
    port = closed_port()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            tasks = Path(tmp) / "tasks.jsonl"
            tasks.write_text("".join(json.dumps({"task_id": f"t{i}", "question": "What is 2+3?", "answer": "5"})
                                     + "\n" for i in range(10)))
            env = {**os.environ, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "bon.run", "dataset=tasks", f"dataset.path={tasks}",
                                   "generator=local", "judge=local", f"generator.api_base=http://127.0.0.1:{port}/v1",
                                   f"judge.api_base={server.base}", f"cache.dir={tmp}/cache",
                                   f"hydra.run.dir={tmp}/out"], capture_output=True, text=True, env=env, timeout=300)
            wall = time.perf_counter() - t0
        judge_requests = server.stats()["count"]
    finally:
        server.close()
    error = next((line for line in proc.stderr.splitlines() if line.startswith("error:")), "(no error line)")
    print(f"outage: 10 tasks x 4 samples, generator at closed port {port}: exit code {proc.returncode} after "
          f"{wall:.1f} s (process start, Hydra and the litellm import included); {judge_requests} judge requests")
    print(f"  {error}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("all", "rpm", "outage"), default="all")
    p.add_argument("--rpm", type=int, default=30)
    p.add_argument("--n", type=int, default=90, help="requests in the rpm part (n / rpm windows)")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--latency", type=float, default=0.5, help="server latency in the rpm part (seconds)")
    a = p.parse_args()
    print(f"{os.cpu_count()} CPUs, load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if a.part in ("all", "outage"):
        outage()
    if a.part in ("all", "rpm"):
        rpm(a.n, a.rpm, a.concurrency, a.latency)


if __name__ == "__main__":
    main()

"""Speed, memory and rate-limit figures of the LLM-call layer against the local test server.

    python benchmarks/bench_llm.py                 # all three parts (about 90 s on 2 cores)
    python benchmarks/bench_llm.py --mem-calls 0   # skip the memory part

The server runs in its own process (tests/llm_server.py), so the CPU figures are the client's:
litellm + our limiter, retries, cache and accounting. No network: everything is on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from llm_server import max_in_window  # noqa: E402

from bon.llm import LLMClient, ResponseCache  # noqa: E402
from bon.llm.transport import import_litellm  # noqa: E402


@contextmanager
def server(latency: float) -> Iterator[str]:
    """A test server in a child process; yields its api_base."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "llm_server.py"), "--latency", str(latency)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline().split()[1])
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.kill()
        proc.wait()


def stats(api_base: str) -> dict:
    with urllib.request.urlopen(api_base + "/stats", timeout=10) as r:
        return json.load(r)


def rss_mb() -> float:
    """Current resident set size (not the peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def batch(client: LLMClient, first: int, n: int) -> int:
    results = await asyncio.gather(*(client.complete([{"role": "user", "content": f"judge trajectory {i}"}])
                                      for i in range(first, first + n)))
    return sum(r.ok for r in results)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(n: int, concurrency: int, latency: float, model: str, workers: int) -> float:
    """One timed batch; prints its figures and returns wall / ideal."""
    with server(latency) as base:
        async def go():
            c = LLMClient(model, api_base=base, concurrency=concurrency, timeout=30, workers=workers)
            async with c:
                await batch(c, -concurrency, concurrency)  # warm up: import, connections, workers
                pids = c.pool.pids if c.pool else []
                before = [cpu_seconds(p) for p in pids]
                t0, c0 = time.perf_counter(), time.process_time()
                ok = await batch(c, 0, n)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                cpu_workers = sum(cpu_seconds(p) - b for p, b in zip(pids, before))
                return ok, wall, cpu, cpu_workers
        ok, wall, cpu, cpu_workers = asyncio.run(go())
        peak = stats(base)["max_in_flight"]
    ideal = n / concurrency * latency
    split = f" (this process {cpu / n * 1000:.2f} + workers {cpu_workers / n * 1000:.2f})" if workers else ""
    print(f"  {ok}/{n} ok, wall {wall:.2f} s = {wall / ideal:.2f}x ideal {ideal:.2f} s "
          f"(target <= 1.25x), {n / wall:.0f} req/s, CPU {(cpu + cpu_workers) / n * 1000:.2f} ms/request{split}, "
          f"server saw <= {peak} in flight")
    return wall / ideal


def memory(calls: int, concurrency: int) -> None:
    step = max(1, calls // 4)
    with server(0.0) as base, tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache("readwrite", tmp)

        async def go():
            c = LLMClient("openai/test-model", api_base=base, concurrency=concurrency, timeout=30, cache=cache)
            async with c:
                await batch(c, -1000, 1000)  # warm up
                marks = [(0, rss_mb())]
                t0 = time.perf_counter()
                for done in range(0, calls, step):
                    await batch(c, done, min(step, calls - done))
                    marks.append((min(done + step, calls), rss_mb()))
                return marks, time.perf_counter() - t0, c.stats
        marks, wall, st = asyncio.run(go())
        cache.close()
        size = sum(f.stat().st_size for f in Path(tmp).iterdir()) / 1e6
    print(f"  {calls} calls (cache readwrite, {size:.1f} MB on disk) in {wall:.1f} s; RSS after warm-up "
          f"and every {step}: " + ", ".join(f"{mb:.0f} MB" for _, mb in marks)
          + f"; growth {marks[-1][1] - marks[0][1]:+.1f} MB ({st.ok} ok, {st.failed} failed)")


def rate(rpm: int, period: float, periods: int, concurrency: int, latency: float, warm: bool) -> None:
    n = rpm * periods
    with server(latency) as base:
        async def go():
            if warm:  # open the connection pool first (an unthrottled client shares litellm's sessions)
                await batch(LLMClient("openai/test-model", api_base=base, concurrency=concurrency), -concurrency,
                            concurrency)
            c = LLMClient("openai/test-model", api_base=base, concurrency=concurrency, rpm=rpm,
                          rpm_period_s=period, timeout=30)
            start = stats(base)["count"]
            async with c:
                await batch(c, 0, n)
            return start
        start = asyncio.run(go())
        arrivals = stats(base)["arrivals"][start:]
    arrivals.sort()
    worst = max_in_window(arrivals, period)
    # Admission comes in bursts of up to R per (period + guard), so measure the sustained rate from
    # the first arrival to the start of the last R: (n - R) requests in that time.
    steady = (n - rpm) / (arrivals[n - rpm] - arrivals[0]) * period
    print(f"  {'warm' if warm else 'cold'} start, rpm={rpm} per {period:g} s, concurrency {concurrency}, {n} requests "
          f"in {arrivals[-1] - arrivals[0]:.1f} s: max {worst} in any {period:g} s window at the server "
          f"(limit {rpm}); sustained {steady:.1f} per {period:g} s = {steady / rpm:.2f} R (>= 0.9 R wanted)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--mem-calls", type=int, default=10_000)
    p.add_argument("--rpm", type=int, default=50)
    p.add_argument("--period", type=float, default=4.0)
    p.add_argument("--periods", type=int, default=4)
    p.add_argument("--repeat", type=int, default=3, help="throughput runs (the figures vary with machine load)")
    p.add_argument("--configs", default="openai/test-model:0,hosted_vllm/test-model:0,hosted_vllm/test-model:2",
                   help="throughput configurations, MODEL:WORKERS separated by commas (provider prefixes: "
                        "openai/ goes through the OpenAI SDK, hosted_vllm/ through litellm's own HTTP handler)")
    a = p.parse_args()
    import_litellm()  # here, so that its seconds are not charged to a phase
    print(f"litellm {importlib.metadata.version('litellm')}, {os.cpu_count()} CPUs, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"throughput: {a.n} requests, {a.latency * 1000:.0f} ms server latency, concurrency {a.concurrency}")
    best = {}
    for config in a.configs.split(","):
        model, workers = config.rsplit(":", 1)
        print(f" {model}, workers={workers}:")
        best[config] = min(throughput(a.n, a.concurrency, a.latency, model, int(workers)) for _ in range(a.repeat))
    met = [c for c, ratio in best.items() if ratio <= 1.25]
    print("  best of each: " + ", ".join(f"{c} {r:.2f}x" for c, r in best.items())
          + f"; target <= 1.25x met by: {', '.join(met) or 'none'}")
    if a.mem_calls:
        print("memory:")
        memory(a.mem_calls, a.concurrency)
    print("rate limit:")
    for warm in (False, True):
        rate(a.rpm, a.period, a.periods, a.concurrency, a.latency, warm)
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()

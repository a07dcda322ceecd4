"""transport=native against a raw aiohttp client and transport=litellm: wall time and CPU per request.

    python benchmarks/bench_native.py               # 1,000 requests, concurrency 64, 100 ms server, 3 rounds
    python benchmarks/bench_native.py --rounds 5

One server process (tests/llm_server.py, 100 ms per reply) serves every client; each measurement runs in a
fresh interpreter (so litellm's import, threads and loggers never touch the raw or native figures), warms up
with one batch of `concurrency` requests, then times `n` requests. The raw client is what any Python program
must spend: one aiohttp session, a semaphore, json in and out. The figures are the medians over the rounds
(the clients take turns within each round, so machine load hits them alike). Targets (issue 16):
native <= 1.2x the raw client's wall time and <= 2x its CPU per request.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

CLIENTS = {
    "raw": "raw aiohttp client",
    "native": "bon, transport=native (openai/)",
    "litellm": "bon, transport=litellm (hosted_vllm/, its cheapest path)",
    "litellm-openai": "bon, transport=litellm (openai/, through the OpenAI SDK)",
}


def prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"judge trajectory {i}"}]


async def raw_batch(session, url: str, first: int, n: int, concurrency: int) -> int:
    sem = asyncio.Semaphore(concurrency)
    headers = {"Authorization": "Bearer no-key", "Content-Type": "application/json"}

    async def one(i: int) -> bool:
        async with sem:
            body = json.dumps({"model": "test-model", "messages": prompt(i)}).encode()
            async with session.post(url, data=body, headers=headers) as r:
                data = json.loads(await r.read())
            return bool(data["choices"][0]["message"]["content"])

    return sum(await asyncio.gather(*(one(i) for i in range(first, first + n))))


async def measure(client: str, base: str, n: int, concurrency: int) -> dict:
    """Warm up, then time n requests: wall seconds and this process's CPU seconds."""
    if client == "raw":
        import aiohttp

        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            url = base + "/chat/completions"
            await raw_batch(session, url, -concurrency, concurrency, concurrency)
            t0, c0 = time.perf_counter(), time.process_time()
            ok = await raw_batch(session, url, 0, n, concurrency)
            return {"ok": ok, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}
    from bon.llm import LLMClient

    model, transport = {"native": ("openai/test-model", "native"), "litellm": ("hosted_vllm/test-model", "litellm"),
                        "litellm-openai": ("openai/test-model", "litellm")}[client]
    c = LLMClient(model, api_base=base, concurrency=concurrency, timeout=30, transport=transport)

    async def batch(first: int, count: int) -> int:
        results = await asyncio.gather(*(c.complete(prompt(i)) for i in range(first, first + count)))
        return sum(r.ok for r in results)

    async with c:
        await batch(-concurrency, concurrency)
        t0, c0 = time.perf_counter(), time.process_time()
        ok = await batch(0, n)
        return {"ok": ok, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}


def child(client: str, base: str, n: int, concurrency: int) -> dict:
    """One measurement in a fresh interpreter."""
    proc = subprocess.run([sys.executable, __file__, "--child", client, "--base", base, "--n", str(n),
                           "--concurrency", str(concurrency)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"})
    if proc.returncode != 0:
        raise SystemExit(f"{client} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clients", default="raw,native,litellm,litellm-openai")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(asyncio.run(measure(a.child, a.base, a.n, a.concurrency))))
        return
    from bench_llm import server

    clients = a.clients.split(",")
    print(f"{a.n} requests, concurrency {a.concurrency}, {a.latency * 1000:.0f} ms server, {os.cpu_count()} CPUs, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; medians of {a.rounds} rounds")
    runs: dict[str, list[dict]] = {c: [] for c in clients}
    with server(a.latency) as base:
        for _ in range(a.rounds):
            for c in clients:
                runs[c].append(child(c, base, a.n, a.concurrency))
    ideal = a.n / a.concurrency * a.latency
    med = {c: {k: statistics.median(r[k] for r in rs) for k in ("wall", "cpu")} for c, rs in runs.items()}
    raw = med.get("raw")
    for c in clients:
        m, ok = med[c], min(r["ok"] for r in runs[c])
        line = (f"  {CLIENTS[c]:<58} wall {m['wall']:.2f} s ({m['wall'] / ideal:.2f}x ideal {ideal:.2f} s), "
                f"CPU {m['cpu'] / a.n * 1000:.2f} ms/request, {ok}/{a.n} ok")
        if raw and c != "raw":
            line += f"; vs raw: {m['wall'] / raw['wall']:.2f}x wall, {m['cpu'] / raw['cpu']:.1f}x CPU"
        print(line)
    if raw and "native" in med:
        wall, cpu = med["native"]["wall"] / raw["wall"], med["native"]["cpu"] / raw["cpu"]
        met = wall <= 1.2 and cpu <= 2.0
        print(f"native vs raw: {wall:.2f}x wall (target <= 1.2x), {cpu:.2f}x CPU (target <= 2x): "
              f"{'met' if met else 'NOT met'}")
        sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()

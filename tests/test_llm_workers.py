"""`workers=N`: HTTP attempts made by worker processes, over real HTTP to the loopback server."""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from llm_server import (  # noqa: F401 - pytest fixtures
    FAKE_KEY,
    FAKE_KEY_ENV,
    FakeLLMServer,
    llm_env_fixture,
    llm_server_fixture,
    rate_limited,
    text,
    tool_call,
    unauthorized,
)

from bon.errors import BonError
from bon.llm import LLMClient, transport

pytestmark = pytest.mark.usefixtures("llm_env")
MODEL = "openai/test-model"


def client(server, **kw) -> LLMClient:
    kw.setdefault("api_key_env", FAKE_KEY_ENV)
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("timeout", 5.0)
    return LLMClient(MODEL, api_base=server.base_url, **kw)


def parent(pid: int) -> int:
    """The parent's pid, from /proc/<pid>/stat (the field after the state, past the parenthesised name)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def gone(pid: int, within_s: float = 5.0) -> bool:
    """The process has exited and been reaped (a worker's exit is seen before the kernel has released it)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def ask(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}]


def echo(body: dict) -> object:
    """Answers each question with its own number, so replies cannot be mixed up between requests."""
    content = body["messages"][-1]["content"]
    if content == "use a tool":
        return tool_call("calculator", {"expression": "1+1"}, call_id="call_7")
    return text(f"answer to {content}", prompt_tokens=11, completion_tokens=3)


@pytest.fixture(params=["forked", "spawned"])
def start(request, monkeypatch) -> str:
    """Both ways workers start: forked from the process that imported litellm (Linux), or each a process of
    its own that imports it (elsewhere: forking after some macOS frameworks are set up is unsafe). The other
    tests run the forked workers only: the pool above the start is the same (each spawned worker costs a
    litellm import)."""
    monkeypatch.setattr(transport, "FORK_WORKERS", request.param == "forked")
    return request.param


def test_workers_give_the_same_results_as_in_process_calls(llm_env):
    with FakeLLMServer(echo) as server:
        async def go(workers: int):
            async with client(server, workers=workers, concurrency=8, prices={"input_per_mtok": 1,
                                                                             "output_per_mtok": 2}) as c:
                results = await asyncio.gather(*(c.complete(ask(i)) for i in range(40)),
                                               c.complete([{"role": "user", "content": "use a tool"}]))
                return results, (c.pool.pids if c.pool else []), c.stats
        # one worker (each costs a litellm import); the killed-worker test below runs two at once
        pooled, pids, stats = asyncio.run(go(1))
        assert len(pids) == 1 and os.getpid() not in pids
        here, _, _ = asyncio.run(go(0))
        assert server.count == 82 and server.max_in_flight <= 8
    for a, b in zip(pooled, here):
        assert a.ok and (a.message, a.finish_reason, a.prompt_tokens, a.completion_tokens, a.cost_usd) == (
            b.message, b.finish_reason, b.prompt_tokens, b.completion_tokens, b.cost_usd)
    assert [r.content for r in pooled[:40]] == [f"answer to question {i}" for i in range(40)]
    assert pooled[40].tool_calls[0]["function"] == {"name": "calculator", "arguments": '{"expression": "1+1"}'}
    assert stats.ok == 41 and stats.cost_usd == pytest.approx(40 * (11 + 2 * 3) / 1e6 + pooled[40].cost_usd)


def test_retries_and_failures_are_the_clients_not_the_workers(llm_server):
    llm_server.script(rate_limited(retry_after=0), text("after a 429"), unauthorized(f"bad key {FAKE_KEY}"))

    async def go():
        async with client(llm_server, workers=1) as c:
            first = await c.complete(ask(1))
            second = await c.complete(ask(2))
            return first, second, c.stats
    first, second, stats = asyncio.run(go())
    assert first.ok and first.content == "after a 429" and first.attempts == 2
    assert not second.ok and second.reason == "auth" and second.attempts == 1  # never retried
    assert FAKE_KEY not in (second.error or "")
    assert (stats.requests, stats.retries, llm_server.count) == (3, 1, 3)


def test_a_killed_worker_is_replaced_and_its_calls_retried(llm_env):
    with FakeLLMServer(echo, latency=1.0) as server:
        async def go():
            async with client(server, workers=2, concurrency=16) as c:
                calls = [asyncio.create_task(c.complete(ask(i))) for i in range(12)]
                while server.count < 12:  # every call is in flight at the server
                    await asyncio.sleep(0.05)
                victim = c.pool.pids[0]
                forked_by = {parent(pid) for pid in c.pool.pids}
                os.kill(victim, signal.SIGKILL)
                results = await asyncio.gather(*calls)
                return results, victim, c.pool.pids, c.stats, forked_by, {parent(pid) for pid in c.pool.pids}
        results, victim, pids, stats, forked_by, forked_by_now = asyncio.run(go())
    assert all(r.ok for r in results)
    assert [r.content for r in results] == [f"answer to question {i}" for i in range(12)]
    assert stats.retries >= 1 and victim not in pids and len(pids) == 2
    # the workers and the replacement were forked by one process (the one litellm import), not by this one
    assert len(forked_by) == 1 and forked_by != {os.getpid()} and forked_by_now == forked_by


def test_ctrl_c_for_the_process_group_leaves_the_workers_to_the_run(llm_server):
    # a terminal's Ctrl-C reaches the workers and the process that forks them, too: the run decides
    async def go():
        async with client(llm_server, workers=1) as c:
            first = await c.complete(ask(1))
            (worker,) = c.pool.pids
            os.kill(worker, signal.SIGINT)
            os.kill(parent(worker), signal.SIGINT)
            await asyncio.sleep(0.2)
            return first, await c.complete(ask(2)), worker, c.pool.pids
    first, second, worker, pids = asyncio.run(go())
    assert first.ok and second.ok and second.content == "ok" and pids == [worker]


def test_cancelling_a_call_cancels_the_workers_attempt_and_close_stops_the_workers(llm_env, start):
    with FakeLLMServer(lambda body: text("slow", latency=30)) as server:
        async def go():
            c = client(server, workers=1, timeout=60)
            task = asyncio.create_task(c.complete(ask(1)))
            while server.count < 1:
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            worker = c.pool._workers[0]
            pending = dict(worker.pending)
            pids = c.pool.pids
            await c.aclose()
            return pending, pids, worker.exited_on_its_own
        pending, pids, on_its_own = asyncio.run(go())
    assert pending == {} and len(pids) == 1 and on_its_own  # the worker exited when its input ended, unkilled
    assert gone(pids[0])


def test_the_calling_process_never_imports_litellm_with_workers(llm_server, tmp_path: Path):
    script = textwrap.dedent(f"""
        import asyncio, os, sys
        from bon.llm import LLMClient, transport
        async def go():
            async with LLMClient("{MODEL}", api_base="{llm_server.base_url}", workers=1,
                                 api_key_env="{FAKE_KEY_ENV}") as c:
                r = await c.complete([{{"role": "user", "content": "hi"}}])
                assert r.ok, r
        asyncio.run(go())
        print("litellm" in sys.modules)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_bad_worker_counts_are_refused(bad):
    with pytest.raises(BonError, match="workers must be an integer >= 0"):
        LLMClient(MODEL, workers=bad)


def test_non_ascii_text_crosses_the_worker_pipe_intact(llm_env):
    with FakeLLMServer(echo) as server:
        async def go():
            async with client(server, workers=1) as c:
                return await c.complete([{"role": "user", "content": "Zürich → 東京 ✓"}])
        result = asyncio.run(go())
        sent = server.requests[0].body["messages"][-1]["content"]
    assert sent == "Zürich → 東京 ✓" and result.content == "answer to Zürich → 東京 ✓"

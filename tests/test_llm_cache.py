"""The persistent response cache: keys, modes, zero-request re-runs, several processes, SIGKILL."""
from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from llm_server import FAKE_KEY, FAKE_KEY_ENV, llm_env_fixture, llm_server_fixture, text, unauthorized  # noqa: F401 - pytest fixtures

from bon.errors import BonError
from bon.llm import LLMClient, ResponseCache, cache_key, default_cache_dir

pytestmark = pytest.mark.usefixtures("llm_env")
MODEL = "openai/test-model"


def ask(i: int) -> list[dict]:
    return [{"role": "user", "content": f"question {i}"}]


def answer(body: dict) -> str:
    """The test server's reply: derived from the question, so a row can be checked against its key."""
    return "answer to " + body["messages"][-1]["content"]


def run_calls(server, cache: ResponseCache | None, calls: list[dict], **kw):
    """Run `complete(**call)` for each call on a fresh client; return (results, stats)."""
    c = LLMClient(MODEL, api_base=server.base_url, api_key_env=FAKE_KEY_ENV, cache=cache,
                  backoff_base_s=0.01, **kw)

    async def go():
        async with c:
            return await asyncio.gather(*(c.complete(**call) for call in calls))
    try:
        return asyncio.run(go()), c.stats
    finally:
        if cache is not None:
            cache.close()


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


# ---------------------------------------------------------------- keys


def test_key_depends_on_what_determines_the_reply_and_nothing_else():
    msgs = [{"role": "user", "content": "hi"}]
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    base = cache_key(MODEL, msgs, None, {"temperature": 0.7, "max_tokens": 10}, 0)
    assert base == cache_key(MODEL, [dict(reversed(list(msgs[0].items())))], [], {"max_tokens": 10, "temperature": 0.7}, 0)
    transport = {"temperature": 0.7, "max_tokens": 10, "api_key": FAKE_KEY, "api_base": "http://x", "timeout": 3,
                 "num_retries": 0, "max_retries": 0, "extra_headers": {"Authorization": FAKE_KEY},
                 "aws_secret_access_key": FAKE_KEY, "my_secret": FAKE_KEY, "seed": None}
    assert base == cache_key(MODEL, msgs, None, transport, 0)
    others = {
        cache_key(MODEL, msgs, None, {"temperature": 0.7, "max_tokens": 10}, 1),
        cache_key(MODEL, msgs, None, {"temperature": 0.8, "max_tokens": 10}, 0),
        cache_key(MODEL, msgs, tools, {"temperature": 0.7, "max_tokens": 10}, 0),
        cache_key("openai/other", msgs, None, {"temperature": 0.7, "max_tokens": 10}, 0),
        cache_key(MODEL, msgs + [{"role": "assistant", "content": "x"}], None, {"temperature": 0.7, "max_tokens": 10}, 0),
        cache_key(MODEL, msgs, None, {"temperature": 0.7, "max_tokens": 10, "seed": 1}, 0),
    }
    assert base not in others and len(others) == 6


def test_unknown_mode_is_a_clear_error(tmp_path):
    with pytest.raises(BonError, match="readwrite"):
        ResponseCache("sometimes", tmp_path)


def test_default_dir_follows_bon_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("BON_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "llm"
    assert ResponseCache().path == tmp_path / "llm" / "responses.sqlite"


def test_a_cache_dir_that_is_a_file_is_refused_at_once(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(BonError, match="cache.dir .* is a file, not a directory"):
        ResponseCache("readwrite", tmp_path / "f")
    ResponseCache("off", tmp_path / "f")  # no cache, nothing to refuse


def test_a_file_that_is_not_sqlite_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "responses.sqlite").write_bytes(b"not a database" * 500)
    for mode in ("read", "readwrite"):
        with pytest.raises(BonError, match="delete it .* cache.mode=off"):
            ResponseCache(mode, tmp_path)


def test_damage_found_mid_run_is_said_once_and_the_run_goes_on(llm_server, tmp_path, caplog):
    """Pages damaged behind a valid header: one error with the path and the remedy, then calls go to the API."""
    cache = ResponseCache("readwrite", tmp_path)
    for i in range(400):
        cache.put(f"k{i}", MODEL, {"content": "x" * 200})
    cache.close()
    with sqlite3.connect(tmp_path / "responses.sqlite") as db:  # fold the WAL into the main file
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    raw = bytearray((tmp_path / "responses.sqlite").read_bytes())
    raw[4096:] = b"\xff" * (len(raw) - 4096)  # keep page 1 (header and schema), wreck every other page
    (tmp_path / "responses.sqlite").write_bytes(bytes(raw))
    damaged = ResponseCache("readwrite", tmp_path)  # the header is fine: the damage shows only on use
    results, stats = run_calls(llm_server, damaged, [{"messages": ask(i)} for i in range(5)])
    assert all(r.ok for r in results) and llm_server.count == 5
    said = [r for r in caplog.records if "responses.sqlite" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in said]
    assert "delete it" in said[0].getMessage() and "cache.mode=off" in said[0].getMessage()


# ---------------------------------------------------------------- behaviour through the client


def test_a_second_identical_run_makes_zero_requests(llm_server, tmp_path):
    llm_server.responder = answer
    calls = [{"messages": ask(i), "sample": s} for i in range(4) for s in range(2)]
    first, s1 = run_calls(llm_server, ResponseCache("readwrite", tmp_path), calls, temperature=0.7)
    assert llm_server.count == 8 and s1.cache_hits == 0
    second, s2 = run_calls(llm_server, ResponseCache("readwrite", tmp_path), calls, temperature=0.7)
    assert llm_server.count == 8  # nothing new reached the server
    assert s2.cache_hits == 8 and s2.requests == 0 and s2.cost_usd == 0 and s2.tokens == 0
    assert all(r.cached and r.attempts == 0 for r in second)
    assert [r.message for r in second] == [r.message for r in first]
    assert [(r.prompt_tokens, r.completion_tokens) for r in second] == [(r.prompt_tokens, r.completion_tokens) for r in first]
    # a new sample index or a new sampling parameter is a new request
    run_calls(llm_server, ResponseCache("readwrite", tmp_path), [{"messages": ask(0), "sample": 2}], temperature=0.7)
    assert llm_server.count == 9
    run_calls(llm_server, ResponseCache("readwrite", tmp_path), [{"messages": ask(0), "sample": 0}], temperature=0.1)
    assert llm_server.count == 10


def test_failures_are_not_cached(llm_server, tmp_path):
    llm_server.script(unauthorized(), text("now it works"))
    [r1], _ = run_calls(llm_server, ResponseCache("readwrite", tmp_path), [{"messages": ask(0)}])
    [r2], _ = run_calls(llm_server, ResponseCache("readwrite", tmp_path), [{"messages": ask(0)}])
    assert r1.reason == "auth" and r2.ok and not r2.cached and llm_server.count == 2
    assert len(ResponseCache("read", tmp_path)) == 1


def test_modes(llm_server, tmp_path):
    llm_server.responder = answer
    call = [{"messages": ask(1)}]
    # off: never touches the disk
    run_calls(llm_server, ResponseCache("off", tmp_path / "off"), call)
    run_calls(llm_server, ResponseCache("off", tmp_path / "off"), call)
    assert llm_server.count == 2 and not (tmp_path / "off").exists()
    # read: hits only; a miss is fetched but not stored (and no file is created)
    run_calls(llm_server, ResponseCache("read", tmp_path), call)
    assert llm_server.count == 3 and not (tmp_path / "responses.sqlite").exists()
    # readwrite stores; read then hits
    run_calls(llm_server, ResponseCache("readwrite", tmp_path), call)
    [hit], _ = run_calls(llm_server, ResponseCache("read", tmp_path), call)
    assert llm_server.count == 4 and hit.cached
    # write: always calls, and replaces the row
    llm_server.script(text("fresh"))
    [w], _ = run_calls(llm_server, ResponseCache("write", tmp_path), call)
    assert llm_server.count == 5 and not w.cached
    [hit], _ = run_calls(llm_server, ResponseCache("readwrite", tmp_path), call)
    assert hit.cached and hit.content == "fresh" and llm_server.count == 5
    assert len(ResponseCache("read", tmp_path)) == 1  # one row per key


def test_the_key_never_reaches_the_cache_files(llm_server, tmp_path):
    llm_server.responder = answer
    run_calls(llm_server, ResponseCache("readwrite", tmp_path), [{"messages": ask(i)} for i in range(5)])
    assert llm_server.requests[0].headers["authorization"] == f"Bearer {FAKE_KEY}"
    files = list(tmp_path.iterdir())
    assert any(f.name == "responses.sqlite" for f in files)
    for f in files:
        assert FAKE_KEY.encode() not in f.read_bytes(), f.name


def test_cached_cost_is_reported_as_saved_not_spent(llm_server, tmp_path):
    llm_server.script(text("x", prompt_tokens=1000, completion_tokens=1000))
    prices = {"input_per_mtok": 1.0, "output_per_mtok": 3.0}
    _, live = run_calls(llm_server, ResponseCache("readwrite", tmp_path), [{"messages": ask(0)}], prices=prices)
    [r], again = run_calls(llm_server, ResponseCache("readwrite", tmp_path), [{"messages": ask(0)}], prices=prices)
    assert live.cost_usd == pytest.approx(0.004) and r.cost_usd == pytest.approx(0.004) and r.cached
    assert again.cost_usd == 0 and again.saved_cost_usd == pytest.approx(0.004)


# ---------------------------------------------------------------- several processes, and crashes

def child(base_url: str, cache_dir: str, first: int, last: int, conc: int) -> None:
    """A second process running the same kind of workload on the same cache file."""
    async def main():
        c = LLMClient(MODEL, api_base=base_url, api_key_env=FAKE_KEY_ENV, cache=ResponseCache("readwrite", cache_dir),
                      concurrency=conc, backoff_base_s=0.01)
        async with c:
            rs = await asyncio.gather(*(c.complete(ask(i)) for i in range(first, last)))
        return all(r.ok for r in rs)
    sys.exit(0 if asyncio.run(main()) else 1)


def spawn(server, cache_dir, first, last, conc=8) -> multiprocessing.Process:
    """Fork (litellm is already imported here, so a child starts in milliseconds, not seconds)."""
    proc = multiprocessing.get_context("fork").Process(
        target=child, args=(server.base_url, str(cache_dir), first, last, conc), daemon=True)
    proc.start()
    return proc


def check_rows(cache_dir: Path) -> dict[str, dict]:
    """integrity_check passes and every row parses and answers the question its key stands for."""
    path = cache_dir / "responses.sqlite"
    assert integrity(path) == "ok"
    expected = {cache_key(MODEL, ask(i), None, {}, 0): f"answer to question {i}" for i in range(1000)}
    rows = {}
    with ResponseCache("read", cache_dir) as cache:
        for key, model, value in cache.rows():
            assert model == MODEL and value["message"]["content"] == expected[key]
            rows[key] = value
    return rows


def test_two_processes_share_one_cache(llm_server, tmp_path):
    llm_server.responder = answer
    llm_server.latency = 0.002
    # overlapping ranges: both processes race on questions 40..79
    procs = [spawn(llm_server, tmp_path, 0, 80), spawn(llm_server, tmp_path, 40, 120)]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    rows = check_rows(tmp_path)
    assert len(rows) == 120
    before = llm_server.count
    assert 120 <= before <= 160
    results, stats = run_calls(llm_server, ResponseCache("readwrite", tmp_path), [{"messages": ask(i)} for i in range(120)])
    assert llm_server.count == before and stats.cache_hits == 120


def test_sigkill_mid_run_leaves_a_consistent_cache_and_resume_makes_only_the_missing_calls(llm_server, tmp_path):
    llm_server.responder = answer
    llm_server.latency = 0.05  # 15 rounds of 16 calls take 0.75 s or more: the kill after 30 lands mid-run
    n = 240
    proc = spawn(llm_server, tmp_path, 0, n, conc=16)
    path = tmp_path / "responses.sqlite"
    deadline = time.monotonic() + 60
    stored = 0
    while time.monotonic() < deadline:
        if path.exists():
            try:
                with sqlite3.connect(path, timeout=5) as conn:
                    stored = conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
            except sqlite3.OperationalError:
                stored = 0  # the table may not exist yet
        if stored >= 30:
            break
        time.sleep(0.01)
    proc.kill()  # SIGKILL
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL
    rows = check_rows(tmp_path)
    assert 30 <= len(rows) < n, "the child must be killed mid-run"
    before = llm_server.count
    results, stats = run_calls(llm_server, ResponseCache("readwrite", tmp_path), [{"messages": ask(i)} for i in range(n)],
                               concurrency=16)
    assert all(r.ok for r in results)
    assert llm_server.count - before == n - len(rows)  # only the missing calls
    assert stats.cache_hits == len(rows)
    assert len(check_rows(tmp_path)) == n


RAW_WRITER = textwrap.dedent("""
    import sys
    from bon.llm import ResponseCache
    cache = ResponseCache("readwrite", sys.argv[1])
    i = int(sys.argv[2])
    print("ready", flush=True)
    while True:
        cache.put(f"k{i}", "m", {"i": i, "message": {"content": "x" * (i % 5000)}})
        i += 1
""")


def test_repeated_sigkill_during_raw_writes_never_corrupts(tmp_path):
    for round_ in range(3):
        p = subprocess.Popen([sys.executable, "-c", RAW_WRITER, str(tmp_path), str(round_ * 1_000_000)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.05 + 0.07 * round_)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=10)
        assert integrity(tmp_path / "responses.sqlite") == "ok"
        with ResponseCache("read", tmp_path) as cache:
            rows = list(cache.rows())
        assert rows and all(v["message"]["content"] == "x" * (v["i"] % 5000) and k == f"k{v['i']}"
                            for k, _, v in rows)


def test_a_provider_that_edits_the_tool_schemas_does_not_change_the_next_cache_key(llm_server, tmp_path):
    """litellm strips `additionalProperties` from tool schemas for hosted_vllm/ models, in place: the client
    hands it copies, so the caller's schemas and the cache key of a repeated request stay the same."""
    llm_server.responder = lambda body: text("ok")
    schema = {"type": "function", "function": {"name": "calc", "description": "compute", "parameters": {
        "type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"],
        "additionalProperties": False}}}
    tools = [schema]
    before = repr(tools)

    async def go():
        async with LLMClient("hosted_vllm/m", api_base=llm_server.base_url, cache=ResponseCache("readwrite", tmp_path),
                             max_attempts=1) as client:
            first = await client.complete(ask(0), tools=tools)
            second = await client.complete(ask(0), tools=tools)
            return first, second

    first, second = asyncio.run(go())
    assert first.ok and second.ok and second.cached  # the repeated request is a cache hit
    assert repr(tools) == before and llm_server.count == 1

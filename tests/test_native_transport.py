"""transport=native against transport=litellm: the same scripted server, the same records, bodies, failures and cache.

Both clients talk real HTTP to tests/llm_server.py on 127.0.0.1; litellm is never mocked. Each comparison runs
the litellm client first, then the native one, on the same script, and compares what a user relies on: the
CallResult records, the request bodies the server received, the failure kinds, retries and the shared cache.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from commands import run_in_process
from llm_server import (  # noqa: F401 - pytest fixtures
    FAKE_KEY,
    FAKE_KEY_ENV,
    FakeLLMServer,
    Reply,
    bad_request,
    context_window,
    hang,
    http_error,
    llm_env_fixture,
    llm_server_fixture,
    malformed,
    max_in_window,
    rate_limited,
    server_error,
    text,
    tool_call,
    unauthorized,
    unavailable,
)
from test_live import live_command, responder

from bon.errors import BonError
from bon.llm import LLMClient, ResponseCache
from bon.llm import native as native_mod

pytestmark = pytest.mark.usefixtures("llm_env")

TOOLS = [{"type": "function", "function": {
    "name": "calculator", "description": "Evaluate an arithmetic expression.", "strict": True,
    "parameters": {"type": "object", "properties": {"expression": {"type": "string", "pattern": "^[0-9+*/() -]+$"}},
                   "required": ["expression"], "additionalProperties": False}}}]
CONVERSATION = [
    {"role": "system", "content": "You are careful.", "name": None},
    {"role": "user", "content": [{"type": "text", "text": "What is 2+3? See"},
                                 {"type": "image_url", "image_url": "http://127.0.0.1/x.png"}]},
    {"role": "assistant", "content": None, "reasoning_content": "add them",
     "tool_calls": [{"id": "call_a", "type": "function", "function": {"name": "calculator",
                                                                     "arguments": "{\"expression\": \"2+3\"}"}}]},
    {"role": "tool", "tool_call_id": "call_a", "name": "calculator", "content": "5"},
]
REPLIES = [  # one of each kind of answer the records must carry through unchanged
    text("The answer is 5.", prompt_tokens=1200, completion_tokens=30),
    tool_call("final_answer", {"answer": "5"}, call_id="call_b", content="Done."),
    Reply(text="thinking done", reasoning="first add, then check", finish_reason="length"),
    Reply(text="ok", finish_reason="eos"),  # a server's own word for stop: litellm says "stop"
    Reply(body=json.dumps({"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "cached prefix", "reasoning": "r"},
         "finish_reason": None}], "usage": {"prompt_tokens": 1000, "completion_tokens": 100,
                                            "prompt_tokens_details": {"cached_tokens": 400}}}).encode()),
    Reply(body=b'{"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": "no usage"},'
               b' "finish_reason": "stop"}]}'),
]
RECORD = ("status", "model", "message", "finish_reason", "prompt_tokens", "completion_tokens", "cost_usd",
          "attempts", "cached", "reason", "reasoning")


def make(server: FakeLLMServer, transport: str, model: str, **kw) -> LLMClient:
    kw.setdefault("api_key_env", FAKE_KEY_ENV)
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("timeout", 5.0)
    return LLMClient(model, api_base=server.base_url, transport=transport, **kw)


def calls(client: LLMClient, *requests: dict) -> list:
    """Make the calls one after another (the script's order) on a fresh loop, then close the client."""
    async def go():
        async with client:
            return [await client.complete(**({"messages": CONVERSATION} | r)) for r in requests]
    return asyncio.run(go())


def both(server: FakeLLMServer, script: list, model: str, requests: list[dict], **kw) -> dict:
    """{transport: (records, request bodies, request headers)} for the same script and calls."""
    out = {}
    for transport in ("litellm", "native"):
        server.reset()
        server.script(*script)
        results = calls(make(server, transport, model, **kw), *requests)
        out[transport] = ([{k: getattr(r, k) for k in RECORD} for r in results],
                          [r.body for r in server.requests], [r.headers for r in server.requests])
    return out


@pytest.mark.parametrize("model", ["openai/gpt-4o-mini", "hosted_vllm/test-model"])
def test_same_records_and_same_request_bodies(llm_server, model):
    requests = [{"tools": TOOLS, "temperature": 0.7, "seed": 3, "max_tokens": 256}] + [{}] * (len(REPLIES) - 1)
    got = both(llm_server, REPLIES, model, requests, top_p=None)
    (records_l, bodies_l, headers_l), (records_n, bodies_n, headers_n) = got["litellm"], got["native"]
    assert records_n == records_l
    assert [r["status"] for r in records_n] == ["ok"] * len(REPLIES)
    assert bodies_n == bodies_l  # model without its prefix, messages, tools, parameters: as litellm sends them
    assert bodies_n[0]["model"] == model.split("/", 1)[1] and "top_p" not in bodies_n[0]
    assert [h["authorization"] for h in headers_n] == [h["authorization"] for h in headers_l] == \
        [f"Bearer {FAKE_KEY}"] * len(REPLIES)
    if model.startswith("openai/"):  # litellm prices gpt-4o-mini: native must price it the same, cached tokens too
        assert all(r["cost_usd"] is not None and r["cost_usd"] > 0 for r in records_n[:-1])
    else:
        assert all(r["cost_usd"] is None for r in records_n)


def test_configured_prices_take_precedence_on_both_paths(llm_server):
    prices = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
    got = both(llm_server, [text("x", prompt_tokens=1000, completion_tokens=500)], "openai/gpt-4o-mini", [{}],
               prices=prices)
    assert got["native"][0] == got["litellm"][0]
    assert got["native"][0][0]["cost_usd"] == pytest.approx(1000 * 1e-6 + 500 * 2e-6)


FAULTS = {
    "429": rate_limited(retry_after=1), "500": server_error(), "502": server_error(502), "503": unavailable(),
    "401": unauthorized(), "403": http_error(403, "forbidden"), "404": http_error(404, "no such model"),
    "408": http_error(408, "request timeout"), "413": http_error(413, "too large"), "422": http_error(422, "bad"),
    "context": context_window(), "400": bad_request(), "malformed": malformed(), "not json": Reply(body=b"hello"),
    "html 500": Reply(status=500, body=b"<html>oops</html>"), "no choices": Reply(body=b'{"id": "x", "choices": []}'),
    "choices missing": Reply(body=b'{"id": "x"}'), "error in a 200": Reply(body=b'{"error": {"message": "bad"}}'),
    "hang": hang(10),
}


@pytest.mark.parametrize("model", ["openai/test-model", "hosted_vllm/test-model"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_failure_kinds_match_litellm(llm_server, fault, model):
    got = both(llm_server, [FAULTS[fault]], model, [{}], max_attempts=1, timeout=1.0)
    [lite], [nat] = got["litellm"][0], got["native"][0]
    assert nat["status"] == "failed" and nat["attempts"] == lite["attempts"] == 1
    if model.startswith("hosted_vllm/") and fault in ("malformed", "not json"):
        # the one deliberate difference: litellm's hosted_vllm/ calls an unparseable 200 "error" (never retried),
        # its openai/ path "server_error" (retried, as bon.llm.retry means for unparseable bodies): native does that
        assert (lite["reason"], nat["reason"]) == ("error", "server_error")
    else:
        assert nat["reason"] == lite["reason"]


def test_refused_connection_is_a_connection_failure_on_both(llm_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    reasons = {}
    for transport in ("litellm", "native"):
        c = LLMClient("openai/test-model", api_base=f"http://127.0.0.1:{port}/v1", transport=transport,
                      max_attempts=1, timeout=2.0)
        [r] = asyncio.run(_one(c))
        reasons[transport] = (r.reason, r.error.split(":")[0])
    assert reasons["native"] == reasons["litellm"] == ("connection", "ConnectionRefusedError")


async def _one(c: LLMClient) -> list:
    async with c:
        return [await c.complete(CONVERSATION)]


def test_retries_on_429_and_500_are_counted_alike(llm_server):
    script = [rate_limited(retry_after=0), server_error(), text("finally")]
    got = both(llm_server, script, "openai/test-model", [{}], max_attempts=3)
    for transport in ("litellm", "native"):
        [record], bodies, _ = got[transport]
        assert (record["status"], record["attempts"], record["message"]["content"]) == ("ok", 3, "finally")
        assert len(bodies) == 3
    gave_up = both(llm_server, [server_error(), server_error()], "openai/test-model", [{}], max_attempts=2)
    assert gave_up["native"][0] == gave_up["litellm"][0]
    assert gave_up["native"][0][0]["reason"] == "server_error"


def test_the_key_is_sent_but_never_in_an_error(llm_server):
    llm_server.script(unauthorized(f"key {FAKE_KEY} rejected"))
    [r] = calls(make(llm_server, "native", "openai/test-model", max_attempts=1), {})
    assert r.reason == "auth" and FAKE_KEY not in r.error and FAKE_KEY not in repr(r)
    assert llm_server.requests[0].headers["authorization"] == f"Bearer {FAKE_KEY}"


@pytest.mark.parametrize("writer,reader", [("litellm", "native"), ("native", "litellm")])
def test_a_cache_written_by_one_transport_is_read_by_the_other(llm_server, tmp_path, writer, reader):
    requests = [{"tools": TOOLS, "temperature": 0.7, "seed": s} for s in range(3)]
    llm_server.script(*REPLIES[:3])
    with ResponseCache("readwrite", tmp_path) as cache:
        first = calls(make(llm_server, writer, "openai/gpt-4o-mini", cache=cache), *requests)
    made = llm_server.count
    with ResponseCache("readwrite", tmp_path) as cache:
        again = calls(make(llm_server, reader, "openai/gpt-4o-mini", cache=cache), *requests)
    assert made == 3 and llm_server.count == made  # every answer from the cache: no request
    assert all(r.cached for r in again)
    assert [(r.message, r.prompt_tokens, r.completion_tokens, r.cost_usd) for r in again] == \
        [(r.message, r.prompt_tokens, r.completion_tokens, r.cost_usd) for r in first]


def test_the_limiter_bounds_native_concurrency(llm_env):
    with FakeLLMServer(latency=0.05) as server:
        c = make(server, "native", "openai/test-model", concurrency=4)

        async def go():
            async with c:
                return await asyncio.gather(*(c.complete([{"role": "user", "content": str(i)}]) for i in range(24)))
        results = asyncio.run(go())
    assert all(r.ok for r in results) and server.count == 24
    assert server.max_in_flight <= 4


def test_native_rpm_holds_in_every_window_of_the_server_log(llm_env):
    """rpm counted where the user would count it: the server's own arrival times, every sliding window."""
    period, rpm = 0.5, 4
    with FakeLLMServer(latency=0.02) as server:
        c = make(server, "native", "openai/test-model", concurrency=8, rpm=rpm, rpm_period_s=period)

        async def go():
            async with c:
                return await asyncio.gather(*(c.complete([{"role": "user", "content": str(i)}]) for i in range(12)))
        results = asyncio.run(go())
        arrivals = server.arrivals
    assert all(r.ok for r in results) and len(arrivals) == 12
    assert max_in_window(arrivals, period) <= rpm
    assert max(arrivals) - min(arrivals) >= 2 * period  # three windows' worth: the limit did hold them back


def test_native_prices_as_litellm_does_for_every_openai_model():
    """The price table read without litellm against litellm's own cost function, over every openai/ chat model
    of the table (tiers above 128k/200k/272k tokens included) and some models it must not price."""
    from bon.llm.transport import import_litellm

    litellm = import_litellm()
    table = native_mod.price_table()
    models = [f"openai/{k}" for k, v in table.items() if v.get("litellm_provider") == "openai"
              and v.get("mode") == "chat" and "/" not in k]
    models += ["openai/deepseek-chat", "hosted_vllm/gpt-4o-mini", "openai/no-such-model", "hosted_vllm/llama"]
    assert len(models) > 50
    for model in models:
        for prompt, completion in ((1000, 200), (300_000, 10)):
            try:
                want = sum(litellm.cost_per_token(model=model, prompt_tokens=prompt, completion_tokens=completion))
            except Exception:  # noqa: BLE001 - litellm's bare Exception: it cannot price the model
                want = None
            got = native_mod.price(model, prompt, completion)
            assert (got is None) == (want is None), model
            if want is not None:
                assert got == pytest.approx(want, rel=1e-9, abs=1e-15), (model, prompt)


def test_other_providers_and_workers_are_refused_in_one_line(llm_server):
    with pytest.raises(BonError) as err:
        LLMClient("anthropic/claude-sonnet-4-5", transport="native", role="judge")
    assert "judge.transport" in str(err.value) and "litellm, native" in str(err.value)
    assert "\n" not in str(err.value)
    with pytest.raises(BonError, match="generator.workers=2 applies to generator.transport=litellm only"):
        make(llm_server, "native", "openai/test-model", workers=2, role="generator")
    with pytest.raises(BonError, match="transport must be one of litellm, native"):
        make(llm_server, "httpx", "openai/test-model")
    with pytest.raises(BonError, match="needs generator.api_base"):
        LLMClient("hosted_vllm/m", transport="native", role="generator")


def test_a_native_run_never_imports_litellm(llm_server, tmp_path):
    """In a fresh interpreter: calls with a retry, a failure, a cache write and a price lookup, then a check."""
    llm_server.script(server_error(), text("ok", prompt_tokens=10, completion_tokens=2), unauthorized())
    script = textwrap.dedent(f"""
        import asyncio, sys
        from bon.llm import LLMClient, ResponseCache
        async def go():
            with ResponseCache("readwrite", {str(tmp_path)!r}) as cache:
                async with LLMClient("openai/gpt-4o-mini", api_base={llm_server.base_url!r}, transport="native",
                                     api_key_env={FAKE_KEY_ENV!r}, backoff_base_s=0.01, cache=cache) as c:
                    ok = await c.complete([{{"role": "user", "content": "hi"}}])
                    failed = await c.complete([{{"role": "user", "content": "again"}}])
                    return ok, failed, c.price_known()
        ok, failed, known = asyncio.run(go())
        assert ok.ok and ok.attempts == 2 and ok.cost_usd > 0 and known, ok
        assert failed.reason == "auth", failed
        print("litellm imported:", any(m == "litellm" or m.startswith("litellm.") for m in sys.modules))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("litellm imported: False")


# --------------------------------------------------------------------------- a whole run


def _live(tmp_path: Path, server: FakeLLMServer, *extra: str, out: str) -> tuple[dict, list, list, bool | None]:
    """`python -m bon.run` on the live path; its summary, trajectories, judgements and whether it imported litellm.
    The litellm run stays in this process (None: not asked); the native run gets a fresh interpreter, where
    importing litellm would show."""
    command, env = live_command(tmp_path, server, "selector=two_stage", f"cache.dir={tmp_path / out}-cache",
                                *extra, out=out)
    imported = None
    if "generator.transport=native" in extra:
        flag = tmp_path / f"{out}.litellm"
        probe = (f"import atexit, runpy, sys; atexit.register(lambda: open({str(flag)!r}, 'w').write("
                 f"str(any(m.split('.')[0] == 'litellm' for m in sys.modules)))); "
                 f"sys.argv = {['bon.run', *command[3:]]!r}; runpy.run_module('bon.run', run_name='__main__', "
                 f"alter_sys=True)")
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path, env=env,
                              timeout=180)
        imported = flag.read_text() == "True"
    else:
        proc = run_in_process("bon.run", *command[3:], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / out
    read = lambda name: [json.loads(line) for line in (run_dir / name).read_text().splitlines()]  # noqa: E731
    return (json.loads((run_dir / "summary.json").read_text()), read("trajectories.jsonl"), read("judgements.jsonl"),
            imported)


def fixed_ids(body: dict) -> object:
    """test_live's responder with tool-call ids that do not depend on arrival order (they are in the next prompt)."""
    reply = responder(body)
    if isinstance(reply, Reply) and reply.tool_calls:
        reply = dataclasses.replace(reply, tool_calls=tuple({**c, "id": f"call_{c['name']}"} for c in reply.tool_calls))
    return reply


def test_a_live_run_gives_the_same_summary_on_both_transports(tmp_path):
    bodies = {}
    for transport in ("litellm", "native"):
        with FakeLLMServer(fixed_ids) as server:
            extra = (f"generator.transport={transport}", f"judge.transport={transport}")
            result = _live(tmp_path, server, *extra, out=transport)
            bodies[transport] = sorted(json.dumps(r.body, sort_keys=True) for r in server.requests)
        if transport == "litellm":
            lite = result
        else:
            nat = result
    assert bodies["native"] == bodies["litellm"] and len(bodies["native"]) == 24  # the same requests, each made
    (summary_l, traj_l, judg_l, _), (summary_n, traj_n, judg_n, imported_n) = lite, nat
    assert imported_n is False  # a whole native run, in its own interpreter
    for key in ("accuracy", "random", "n_tasks", "n_candidates"):
        assert summary_n[key] == summary_l[key], key
    assert (summary_n["accuracy"], summary_n["n_candidates"]) == (1.0, 8)
    for stage in ("generation", "judging"):
        for key in ("calls", "ok", "failed", "prompt_tokens", "completion_tokens", "cost_usd", "unpriced"):
            assert summary_n["usage"][stage][key] == summary_l["usage"][stage][key], (stage, key)

    def answers(rows: list) -> list:
        return sorted((t["task_id"], t.get("sample"), t["answer"]) for t in rows)
    assert answers(traj_n) == answers(traj_l)
    assert sorted(json.dumps(j.get("step_labels") or j.get("labels"), sort_keys=True) for j in judg_n) == \
        sorted(json.dumps(j.get("step_labels") or j.get("labels"), sort_keys=True) for j in judg_l)


def test_a_live_run_refuses_native_for_another_provider(tmp_path):
    with FakeLLMServer(responder) as server:
        command, env = live_command(tmp_path, server, "judge=anthropic", "judge.transport=native",
                                    f"judge.api_base={server.base_url}", "judge.api_key_env=BON_TEST_KEY")
        proc = run_in_process("bon.run", *command[3:], cwd=tmp_path, env=env)  # the same exit code and stderr
        assert server.count == 0
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "judge.transport" in proc.stderr and "litellm, native" in proc.stderr

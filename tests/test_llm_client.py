"""The live LLM-call layer over real HTTP: litellm -> 127.0.0.1 test server (no network, no mocks)."""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import time

import pytest
from llm_server import (  # noqa: F401 - pytest fixtures
    FAKE_KEY,
    FAKE_KEY_ENV,
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
    verdict,
)

from bon.errors import BonError
from bon.llm import Limiter, LLMClient

pytestmark = pytest.mark.usefixtures("llm_env")
MODEL = "openai/test-model"
USER = [{"role": "user", "content": "What is 2 + 2?"}]


def client(server, **kw) -> LLMClient:
    """A client for the test server with fast backoff (tests override what they measure)."""
    kw.setdefault("api_key_env", FAKE_KEY_ENV)
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("timeout", 5.0)
    return LLMClient(kw.pop("model", MODEL), api_base=server.base_url, **kw)


def run(c: LLMClient, *calls: dict):
    """Run calls (kwargs for complete) concurrently on a fresh event loop; close litellm after."""
    async def go():
        async with c:
            return await asyncio.gather(*(c.complete(**({"messages": USER} | call)) for call in calls))
    return asyncio.run(go())


def test_text_reply_and_what_went_over_the_wire(llm_server):
    llm_server.script(text("4"))
    c = client(llm_server, temperature=0.2)
    [r] = run(c, {"max_tokens": 50})
    assert r.ok and r.status == "ok" and not r.cached
    assert r.message == {"role": "assistant", "content": "4"} and r.content == "4"
    assert r.finish_reason == "stop" and r.attempts == 1
    assert r.prompt_tokens > 0 and r.completion_tokens > 0 and r.latency_s > 0
    [req] = llm_server.requests
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert req.body["model"] == "test-model" and req.body["messages"] == USER
    assert req.body["temperature"] == 0.2 and req.body["max_tokens"] == 50
    assert req.headers.get("x-stainless-retry-count", "0") == "0"
    assert c.stats.calls == 1 and c.stats.requests == 1 and c.stats.tokens == r.prompt_tokens + r.completion_tokens


def test_tool_call_reply(llm_server):
    tools = [{"type": "function", "function": {"name": "calc", "description": "arithmetic",
                                               "parameters": {"type": "object", "properties": {"expr": {"type": "string"}}}}}]
    llm_server.script(tool_call("calc", {"expr": "2+2"}, call_id="call_1"))
    [r] = run(client(llm_server), {"tools": tools})
    assert r.finish_reason == "tool_calls"
    assert r.tool_calls == [{"id": "call_1", "type": "function",
                             "function": {"name": "calc", "arguments": '{"expr": "2+2"}'}}]
    assert llm_server.requests[0].body["tools"] == tools


def test_judge_verdicts_and_reasoning_come_back_intact(llm_server):
    llm_server.script(verdict({2: 1, 4: -1}, final=-1, reasoning="Step 4 uses the wrong year."))
    [r] = run(client(llm_server), {})
    block = r.content.rsplit("```json", 1)[1].split("```")[0]
    assert json.loads(block) == {"steps": {"2": 1, "4": -1}, "final": -1}
    assert r.reasoning == "Step 4 uses the wrong year." and "reasoning_content" not in r.message


def test_transient_faults_are_retried_until_success(llm_server):
    llm_server.script(rate_limited(), server_error(500), unavailable(), malformed(), text("done"))
    c = client(llm_server, max_attempts=5)
    [r] = run(c, {})
    assert r.ok and r.content == "done" and r.attempts == 5
    assert llm_server.count == 5
    assert c.stats.retries == 4 and c.stats.requests == 5 and c.stats.failed == 0


def test_a_hang_past_the_timeout_is_retried(llm_server):
    llm_server.script(hang(30), text("late but fine"))
    t0 = time.monotonic()
    [r] = run(client(llm_server, timeout=0.5), {})
    assert r.ok and r.attempts == 2 and llm_server.count == 2
    assert time.monotonic() - t0 < 5


def test_retry_after_seconds_is_honoured(llm_server):
    llm_server.script(rate_limited(retry_after=1), text("ok"))
    [r] = run(client(llm_server), {})
    first, second = llm_server.arrivals
    assert r.ok and r.attempts == 2
    assert second - first >= 1.0


def test_retry_after_http_date_is_honoured(llm_server):
    when = time.time() + 2
    llm_server.script(rate_limited(retry_after=email.utils.formatdate(when, usegmt=True)), text("ok"))
    [r] = run(client(llm_server), {})
    first, second = llm_server.arrivals
    assert r.ok and r.attempts == 2
    assert second - first >= 0.9  # the date has whole-second resolution: at least 1 s after the 429


def test_a_retry_after_longer_than_max_delay_gives_up_at_once(llm_server):
    llm_server.script(rate_limited(retry_after=120))
    [r] = run(client(llm_server, max_delay_s=5), {})
    assert r.status == "failed" and r.reason == "rate_limit" and r.attempts == 1
    assert "120" in r.error and llm_server.count == 1


def test_gives_up_after_max_attempts_with_the_reason(llm_server):
    llm_server.responder = lambda body: server_error(500)
    c = client(llm_server, max_attempts=3)
    [r] = run(c, {})
    assert r.status == "failed" and r.reason == "server_error" and r.attempts == 3
    assert "injected 500" in r.error and r.message is None
    assert llm_server.count == 3
    assert c.stats.failed == 1 and c.stats.failures == {"server_error": 1} and c.stats.retries == 2


@pytest.mark.parametrize("fault,reason", [
    (unauthorized(), "auth"),
    (http_error(403, "Permission denied"), "auth"),
    (context_window(), "context_window"),
    (http_error(400, "prompt is too long: 200000 tokens > 100000 maximum"), "context_window"),
    (bad_request(), "bad_request"),
    (http_error(404, "The model does not exist"), "not_found"),
])
def test_permanent_errors_are_recorded_not_retried(llm_server, fault, reason):
    llm_server.script(fault, text("never reached"))
    [r] = run(client(llm_server, max_attempts=5), {})
    assert r.status == "failed" and r.attempts == 1 and llm_server.count == 1
    assert r.reason == reason


def test_concurrency_bound_is_what_the_server_sees(llm_server):
    llm_server.latency = 0.15
    results = run(client(llm_server, concurrency=3), *({"sample": i} for i in range(12)))
    assert all(r.ok for r in results)
    assert llm_server.max_in_flight == 3


def test_rpm_bound_per_period(llm_server):
    period, rpm = 0.5, 4
    c = client(llm_server, concurrency=8, rpm=rpm, rpm_period_s=period)
    results = run(c, *({"sample": i} for i in range(12)))
    assert all(r.ok for r in results)
    arrivals = llm_server.arrivals
    assert max_in_window(arrivals, period) <= rpm
    span = max(arrivals) - min(arrivals)
    assert 2 * period <= span < 2 * period + 2.0  # three windows' worth, without stalling


def test_a_request_counts_against_the_rate_from_when_it_is_known_to_have_arrived(llm_server):
    # Admission time is not arrival time (litellm's first call alone can take longer than a short
    # period), so budget is counted from completion: the next two wait for the first two + period.
    llm_server.latency = 0.4
    period = 0.3
    run(client(llm_server, concurrency=8, rpm=2, rpm_period_s=period), *({"sample": i} for i in range(4)))
    a = sorted(llm_server.arrivals)
    assert a[2] - a[1] >= 0.4 + period - 0.05
    assert max_in_window(a, period) <= 2


def test_every_retry_passes_the_rate_limiter_again(llm_server):
    llm_server.script(server_error(500), server_error(500), text("ok"))
    period = 0.4
    [r] = run(client(llm_server, rpm=1, rpm_period_s=period), {})
    a = llm_server.arrivals
    assert r.ok and r.attempts == 3
    assert a[1] - a[0] >= period and a[2] - a[1] >= period


def test_a_limiter_can_be_shared_and_reused_across_event_loops(llm_server):
    llm_server.latency = 0.05
    shared = Limiter(concurrency=2)
    for _ in range(2):  # a second asyncio.run must not trip over primitives bound to the first loop
        async def go():
            a, b = client(llm_server, limiter=shared), client(llm_server, limiter=shared, model="openai/other")
            try:
                return await asyncio.gather(*(x.complete(USER, sample=i) for i in range(4) for x in (a, b)))
            finally:
                await a.aclose()
        assert all(r.ok for r in asyncio.run(go()))
    assert llm_server.max_in_flight == 2


def test_cancellation_propagates_and_frees_the_slot(llm_server):
    llm_server.script(hang(30))
    c = client(llm_server, concurrency=1)

    async def go():
        task = asyncio.create_task(c.complete(USER))
        while llm_server.count == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert c.limiter.in_flight == 0
        r = await c.complete(USER, sample=1)  # the single slot is free again
        await c.aclose()
        return r
    assert asyncio.run(go()).ok


def test_unknown_model_has_unknown_cost_not_a_crash(llm_server, caplog):
    c = client(llm_server, role="judge")
    assert not c.price_known()
    with caplog.at_level(logging.WARNING, logger="bon.llm.client"):
        run(c, {}, {"sample": 1})
    r = c.stats
    assert r.unpriced == 2 and r.to_dict()["cost_complete"] is False and r.unpriced_models == ["openai/test-model"]
    assert r.postfix()["cost"] == "unpriced" and r.postfix()["tok"] != "0"
    hints = [rec.getMessage() for rec in caplog.records if "no price known" in rec.getMessage()]
    assert len(hints) == 1 and "openai/test-model" in hints[0] and "judge.prices" in hints[0]  # said once
    assert client(llm_server, prices={"input_per_mtok": 1, "output_per_mtok": 2}).price_known()


def test_configured_prices_are_applied_to_tokens(llm_server):
    llm_server.script(text("x", prompt_tokens=1000, completion_tokens=500))
    c = client(llm_server, prices={"input_per_mtok": 2.0, "output_per_mtok": 8.0})
    [r] = run(c, {})
    assert (r.prompt_tokens, r.completion_tokens) == (1000, 500)
    assert r.cost_usd == pytest.approx(0.002 + 0.004)
    assert c.stats.cost_usd == pytest.approx(0.006) and c.stats.unpriced == 0


def test_litellm_price_data_for_a_known_model(llm_server):
    import litellm
    llm_server.script(text("x", prompt_tokens=1000, completion_tokens=500))
    [r] = run(client(llm_server, model="openai/gpt-4o-mini"), {})
    info = litellm.model_cost["gpt-4o-mini"]
    assert r.cost_usd == pytest.approx(1000 * info["input_cost_per_token"] + 500 * info["output_cost_per_token"])


def test_bad_prices_are_a_clear_error(llm_server):
    with pytest.raises(BonError, match="input_per_mtok"):
        client(llm_server, prices={"input": 1})


def test_a_missing_key_variable_is_a_clear_error_naming_it(monkeypatch, llm_server):
    monkeypatch.delenv("BON_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(BonError, match="BON_TEST_NO_SUCH_KEY"):
        LLMClient(MODEL, api_key_env="BON_TEST_NO_SUCH_KEY")


def test_a_custom_api_base_never_gets_the_providers_default_key(monkeypatch, llm_server):
    monkeypatch.setenv("OPENAI_API_KEY", FAKE_KEY)
    [r] = run(client(llm_server, api_key_env=None), {})
    assert r.ok
    assert FAKE_KEY not in llm_server.requests[0].headers["authorization"]


def test_the_key_never_reaches_logs_output_or_results(llm_server, caplog, capfd):
    caplog.set_level(logging.DEBUG)  # the root at DEBUG, as a careless Hydra config might set it
    llm_server.script(text("fine"), server_error(500), text("fine again"),
                      unauthorized(message=f"Incorrect API key provided: {FAKE_KEY}"))
    c = client(llm_server, max_attempts=2)
    results = [run(c, {}, ), run(c, {"sample": 1}), run(c, {"sample": 2})]
    flat = [r for batch in results for r in batch]
    assert [r.status for r in flat] == ["ok", "ok", "failed"] and flat[2].reason == "auth"
    assert all(r.headers["authorization"] == f"Bearer {FAKE_KEY}" for r in llm_server.requests)  # it was used
    out, err = capfd.readouterr()
    texts = [caplog.text, out, err, repr(c), json.dumps([r.to_dict() for r in flat]), json.dumps(c.stats.to_dict())]
    assert all(FAKE_KEY not in t for t in texts)
    assert "Give Feedback" not in out + err  # litellm's banner on every exception is switched off
    assert "***" in flat[2].error
    assert logging.getLogger("LiteLLM").getEffectiveLevel() >= logging.WARNING


def test_stats_merge_and_summary_fields(llm_server):
    llm_server.script(text("a", prompt_tokens=10, completion_tokens=5), unauthorized())
    a, b = client(llm_server, prices={"input_per_mtok": 1, "output_per_mtok": 1}), client(llm_server)
    run(a, {})
    run(b, {})
    total = a.stats.merge(b.stats)
    d = total.to_dict()
    assert (d["calls"], d["ok"], d["failed"], d["tokens"], d["failures"]) == (2, 1, 1, 15, {"auth": 1})
    assert d["cost_usd"] == pytest.approx(15e-6) and d["cost_complete"] is True
    assert total.postfix() == {"failed": "1", "cached": "0", "tok": "15", "cost": "$0.0000"}


COLD_START_CLIENT = """
import asyncio, sys
import bon.llm
assert "litellm" not in sys.modules, "litellm must not be imported before the first request is admitted"
client = bon.llm.LLMClient("openai/test-model", api_base=sys.argv[1], concurrency=8, rpm=4, rpm_period_s=2.0)

async def go():
    async with client:
        return await asyncio.gather(*(client.complete([{"role": "user", "content": "hi"}], sample=i)
                                      for i in range(12)))

assert all(r.ok for r in asyncio.run(go()))
"""


def test_rpm_holds_at_the_server_from_a_cold_start(llm_server, tmp_path):
    """The first request is admitted before litellm is imported (seconds): the limit still holds in
    every window of the server's own arrival log, counted from when each request was really sent."""
    import subprocess
    import sys

    script = tmp_path / "cold.py"
    script.write_text(COLD_START_CLIENT)
    subprocess.run([sys.executable, str(script), llm_server.base_url], check=True, timeout=120)
    arrivals = llm_server.arrivals
    assert len(arrivals) == 12
    assert max_in_window(arrivals, 2.0) <= 4


def test_rpm_holds_at_the_server_with_worker_processes(llm_server):
    """Workers import litellm in their own process; a request is dated from when a ready worker gets it."""
    c = client(llm_server, concurrency=8, rpm=3, rpm_period_s=1.5, workers=1)  # 8 calls queued for one worker
    assert all(r.ok for r in run(c, *({"sample": i} for i in range(9))))
    assert llm_server.count == 9 and max_in_window(llm_server.arrivals, 1.5) <= 3


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("model", ["openai/test-model", "hosted_vllm/test-model"])
def test_a_refused_connection_is_a_connection_failure(model):
    c = LLMClient(model, api_base=f"http://127.0.0.1:{closed_port()}/v1", max_attempts=2, backoff_base_s=0.01)
    [r] = run(c, {})
    assert r.status == "failed" and r.reason == "connection" and r.attempts == 2  # retried, as transient
    assert "ConnectionRefusedError" in r.error


def test_the_breaker_stops_calls_to_an_endpoint_that_never_answered():
    from bon.llm.guards import EndpointDown

    port = closed_port()
    c = LLMClient(MODEL, api_base=f"http://127.0.0.1:{port}/v1", max_attempts=3, backoff_base_s=0.01,
                  breaker_after=4, role="generator")
    with pytest.raises(EndpointDown) as caught:
        run(c, *({"sample": i} for i in range(10)))
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message and "ConnectionRefusedError" in message and "\n" not in message
    assert c.breaker.failures == 4  # tripped at the 4th failed request, not after every retry of every call
    with pytest.raises(EndpointDown):  # and stays tripped: no request is sent
        run(c, {"sample": 99})


def test_the_breaker_trips_on_a_rejected_key_but_not_once_the_endpoint_answered(llm_server):
    from bon.llm.guards import EndpointDown

    llm_server.script(*[unauthorized()] * 3)
    with pytest.raises(EndpointDown, match="unauthorized"):
        run(client(llm_server, breaker_after=3), *({"sample": i} for i in range(3)))
    assert llm_server.count == 3

    llm_server.reset()
    llm_server.script(text("ok"), *[unauthorized()] * 5)  # it answered once: later failures are just failures
    c = client(llm_server, breaker_after=3, concurrency=1)
    results = run(c, *({"sample": i} for i in range(6)))
    assert [r.reason for r in results] == [None] + ["auth"] * 5 and c.breaker.tripped is None


def test_a_call_budget_is_never_exceeded_and_refused_calls_are_failures(llm_server):
    from bon.llm.guards import Budget

    budget = Budget(calls=3)
    llm_server.latency = 0.05
    results = run(client(llm_server, concurrency=8, budget=budget), *({"sample": i} for i in range(7)))
    assert llm_server.count == 3
    assert sorted(r.reason or "ok" for r in results) == ["budget"] * 4 + ["ok"] * 3
    assert all(r.attempts == 0 for r in results if r.reason == "budget")  # not sent
    assert budget.stopped and budget.to_dict()["calls_made"] == 3 and budget.refused == 4


def test_a_usd_budget_stops_new_calls_once_spent(llm_server):
    from bon.llm.guards import Budget

    # 1000 + 1000 tokens at $1 + $3 per million: $0.004 per call; the cap is reached by the third call.
    budget = Budget(usd=0.01)
    c = client(llm_server, concurrency=1, budget=budget, prices={"input_per_mtok": 1.0, "output_per_mtok": 3.0})
    llm_server.responder = lambda body: text("x", prompt_tokens=1000, completion_tokens=1000)
    results = run(c, *({"sample": i} for i in range(6)))
    assert llm_server.count == 3 and [r.ok for r in results] == [True] * 3 + [False] * 3
    assert budget.spent_usd == pytest.approx(0.012) and budget.stopped
    assert "budget.usd=0.01" in results[-1].error

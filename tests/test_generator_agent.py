"""The agent loop and its tools over real HTTP: AgentGenerator -> LLMClient -> litellm -> 127.0.0.1 server."""
from __future__ import annotations

import asyncio
import json
import re
import time

import pytest
from llm_server import (  # noqa: F401 - pytest fixtures
    FAKE_KEY,
    FAKE_KEY_ENV,
    Reply,
    hang,
    llm_env_fixture,
    llm_server_fixture,
    text,
    tool_call,
    unauthorized,
)

from bon import tools as tool_registry
from bon.datasets.taskset import TaskSet
from bon.errors import BonError
from bon.generators.agent import DEFAULT_SYSTEM_PROMPT, AgentGenerator, _with_call_ids, final_answer_line
from bon.llm import LLMClient, ResponseCache
from bon.tools import ToolContext, run_tool
from bon.tools.basic import MAX_INT_BITS
from bon.types import Task

pytestmark = pytest.mark.usefixtures("llm_env")
MODEL = "openai/test-model"
TASK = Task("t1", "What is 6 times 7?", answer="42")


def make_agent(server, *, client_kw=None, **kw) -> AgentGenerator:
    ckw = {"api_key_env": FAKE_KEY_ENV, "backoff_base_s": 0.01, "timeout": 5.0, **(client_kw or {})}
    client = LLMClient(MODEL, api_base=server.base_url, **ckw)
    kw.setdefault("max_steps", 6)
    kw.setdefault("score", TaskSet("tasks", ()).score)  # the dataset's rule (GAIA's), as the pipeline passes it
    return AgentGenerator(client, tool_registry.get(["calculator", "final_answer"]), **kw)


def generate(agent: AgentGenerator, task: Task = TASK, sample: int = 0):
    async def go():
        async with agent.client:
            return await agent.generate(task, sample)
    return asyncio.run(go())


def generate_all(agent: AgentGenerator, tasks, **kw):
    async def go():
        async with agent.client:
            return await agent.generate_all(tasks, progress=False, **kw)
    return asyncio.run(go())


def solver(body: dict) -> Reply:
    """A scripted agent for any task: calculator on the question's numbers, then final_answer."""
    last = body["messages"][-1]
    if last["role"] == "user":
        a, b = re.findall(r"\d+", last["content"])
        return tool_call("calculator", {"expression": f"{a}*{b}"})
    return tool_call("final_answer", {"answer": last["content"]})


def tool_messages(traj) -> list[dict]:
    return [m for m in traj.messages if m["role"] == "tool"]


# --------------------------------------------------------------------------- full episodes


def test_calculator_then_final_answer_every_message_and_the_metadata(llm_server):
    llm_server.script(
        tool_call("calculator", {"expression": "6*7"}, call_id="call_a", content="Let me compute.",
                  prompt_tokens=100, completion_tokens=10),
        tool_call("final_answer", {"answer": "42"}, call_id="call_b", prompt_tokens=200, completion_tokens=20))
    agent = make_agent(llm_server, temperature=0.3, seed=7,
                       client_kw={"prices": {"input_per_mtok": 1.0, "output_per_mtok": 2.0}})
    traj = generate(agent, sample=2)

    assert traj.messages == (
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "What is 6 times 7?"},
        {"role": "assistant", "content": "Let me compute.", "tool_calls": [
            {"id": "call_a", "type": "function",
             "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}]},
        {"role": "tool", "tool_call_id": "call_a", "name": "calculator", "content": "42"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_b", "type": "function",
             "function": {"name": "final_answer", "arguments": '{"answer": "42"}'}}]},
        {"role": "tool", "tool_call_id": "call_b", "name": "final_answer", "content": "Final answer recorded: 42"},
    )
    assert (traj.task_id, traj.sample, traj.answer, traj.success) == ("t1", 2, "42", True)
    assert traj.step_indices == [2, 4]
    md = traj.metadata
    assert md["model"] == MODEL and md["stop_reason"] == "answer" and md["answer_source"] == "final_answer_tool"
    assert md["error"] is None and md["error_kind"] is None
    assert (md["n_steps"], md["llm_calls"], md["cached_calls"]) == (2, 2, 0)
    assert (md["prompt_tokens"], md["completion_tokens"]) == (300, 30)
    assert md["cost_usd"] == pytest.approx((300 * 1.0 + 30 * 2.0) / 1e6)
    assert md["latency_s"] >= md["llm_latency_s"] > 0
    assert md["tool_calls"] == [{"id": "call_a", "name": "calculator", "error_kind": None},
                                {"id": "call_b", "name": "final_answer", "error_kind": None}]
    assert md["tool_errors"] == 0 and md["temperature"] == 0.3 and md["seed"] == 9
    json.dumps(md)  # plain JSON, ready for the store

    first, second = (r.body for r in llm_server.requests)
    assert first["messages"] == list(traj.messages[:2])
    assert first["tools"] == [t.openai_schema() for t in agent.tools.values()]
    assert first["temperature"] == 0.3 and first["seed"] == 9  # seed + sample
    sent = second["messages"]  # the tool result goes back linked to the call that asked for it
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool"]
    assert sent[2]["tool_calls"][0]["id"] == "call_a" == sent[3]["tool_call_id"]
    assert sent[3]["name"] == "calculator" and sent[3]["content"] == "42"


def test_unknown_price_gives_unknown_cost(llm_server):
    llm_server.script(tool_call("final_answer", {"answer": "42"}))
    traj = generate(make_agent(llm_server))
    assert traj.metadata["cost_usd"] is None and traj.metadata["prompt_tokens"] > 0


def test_a_final_answer_line_ends_the_episode(llm_server):
    llm_server.script(text("Paris is the capital.\n**FINAL ANSWER:** Paris"))
    traj = generate(make_agent(llm_server), Task("q", "Capital of France?", answer="paris"))
    assert traj.answer == "Paris" and traj.success is True
    assert traj.metadata["stop_reason"] == "answer" and traj.metadata["answer_source"] == "final_answer_line"
    assert len(traj.messages) == 3 and llm_server.count == 1


def test_plain_text_without_a_tool_call_stops_with_no_answer(llm_server):
    llm_server.script(text("I am not sure."), text("Still not sure."))
    traj = generate(make_agent(llm_server))
    assert traj.answer is None and traj.success is False  # the task has a reference: no answer is a miss
    assert traj.metadata["stop_reason"] == "no_tool_call" and traj.metadata["answer_source"] is None
    unscored = generate(make_agent(llm_server), Task("q", "Anything?"))
    assert unscored.success is None  # no reference answer: left to the scorer


@pytest.mark.parametrize("reply,answer", [
    ("FINAL ANSWER: 42", "42"),
    ("Reasoning...\nFinal answer: Paris, France.", "Paris, France."),
    ("**Final Answer**: 3.14", "3.14"),
    ("> FINAL_ANSWER: yes", "yes"),
    ("FINAL ANSWER: draft\nthinking again\nFINAL ANSWER: final", "final"),
    ("FINAL ANSWER:\n\n  Tokyo  ", "Tokyo"),
    ("The final answer is 42", None),
    ("FINAL ANSWER:", None),
    (None, None),
])
def test_final_answer_line_parsing(reply, answer):
    assert final_answer_line(reply) == answer


def test_step_limit(llm_server):
    llm_server.responder = lambda body: tool_call("calculator", {"expression": "1+1"})
    traj = generate(make_agent(llm_server, max_steps=3))
    assert traj.metadata["stop_reason"] == "step_limit" and traj.answer is None
    assert traj.metadata["n_steps"] == 3 and llm_server.count == 3
    assert [m["role"] for m in traj.messages] == ["system", "user"] + ["assistant", "tool"] * 3


def test_an_llm_failure_mid_episode_keeps_the_trajectory(llm_server):
    llm_server.script(tool_call("calculator", {"expression": "6*7"}), unauthorized(f"Incorrect API key: {FAKE_KEY}"))
    traj = generate(make_agent(llm_server, client_kw={"max_attempts": 5}))
    md = traj.metadata
    assert md["stop_reason"] == "error" and md["error_kind"] == "auth" and "Incorrect API key" in md["error"]
    assert FAKE_KEY not in json.dumps(md)
    assert llm_server.count == 2  # 401 is not retried
    assert [m["role"] for m in traj.messages] == ["system", "user", "assistant", "tool"]
    assert (md["n_steps"], md["llm_calls"]) == (1, 2)
    assert traj.answer is None and traj.success is False


def test_the_trajectory_timeout_stops_a_hanging_episode(llm_server):
    llm_server.script(tool_call("calculator", {"expression": "6*7"}), hang(30))
    t0 = time.monotonic()
    traj = generate(make_agent(llm_server, trajectory_timeout_s=0.8, client_kw={"timeout": 20}))
    assert time.monotonic() - t0 < 5
    md = traj.metadata
    assert md["stop_reason"] == "timeout" and md["error_kind"] == "timeout" and "0.8" in md["error"]
    assert [m["role"] for m in traj.messages] == ["system", "user", "assistant", "tool"]
    assert md["llm_calls"] == 1 and traj.answer is None


def test_bad_tool_arguments_become_a_tool_error_and_the_episode_goes_on(llm_server):
    llm_server.script(
        tool_call("calculator", '{"expression": "6*', call_id="c1"),
        tool_call("calculator", {"expr": "6*7"}, call_id="c2"),
        tool_call("calculator", {"expression": "6*7"}, call_id="c3"),
        tool_call("final_answer", {"answer": "42"}, call_id="c4"))
    traj = generate(make_agent(llm_server))
    results = tool_messages(traj)
    assert results[0]["tool_call_id"] == "c1"
    assert results[0]["content"].startswith("error: arguments are not valid JSON")
    assert results[1]["content"] == "error: missing required argument(s): expression"
    assert results[2]["content"] == "42"
    assert traj.messages[2]["tool_calls"][0]["function"]["arguments"] == '{"expression": "6*'  # recorded as sent
    md = traj.metadata
    assert [c["error_kind"] for c in md["tool_calls"]] == ["bad_arguments", "bad_arguments", None, None]
    assert md["tool_errors"] == 2 and md["stop_reason"] == "answer" and traj.answer == "42"
    assert llm_server.requests[1].body["messages"][3]["content"].startswith("error: arguments are not valid JSON")


def test_an_unknown_tool_from_the_model_is_a_tool_error(llm_server):
    llm_server.script(tool_call("web_search", {"query": "6*7"}, call_id="w1"), text("FINAL ANSWER: 42"))
    traj = generate(make_agent(llm_server))
    [result] = tool_messages(traj)
    assert result == {"role": "tool", "tool_call_id": "w1", "name": "web_search",
                      "content": "error: unknown tool 'web_search'; available tools: calculator, final_answer"}
    assert traj.metadata["tool_calls"] == [{"id": "w1", "name": "web_search", "error_kind": "unknown_tool"}]
    assert traj.answer == "42" and traj.metadata["stop_reason"] == "answer"


def test_calls_after_final_answer_in_the_same_message_are_answered_but_not_run(llm_server):
    llm_server.script(Reply(text=None, tool_calls=(
        {"name": "final_answer", "arguments": {"answer": "42"}, "id": "f"},
        {"name": "calculator", "arguments": {"expression": "1+1"}, "id": "g"})))
    traj = generate(make_agent(llm_server))
    assert [m["tool_call_id"] for m in tool_messages(traj)] == ["f", "g"]  # every call has its reply
    assert traj.metadata["tool_calls"][1]["error_kind"] == "skipped" and traj.answer == "42"


def test_missing_tool_call_ids_are_filled_in():
    message = {"role": "assistant", "content": None,
               "tool_calls": [{"id": None, "function": {"name": "calculator", "arguments": "{}"}}]}
    out, calls = _with_call_ids(message, step=3)
    assert calls[0]["id"] == "call_3_0" == out["tool_calls"][0]["id"] and calls[0]["type"] == "function"
    assert message["tool_calls"][0]["id"] is None  # the original is untouched


# --------------------------------------------------------------------------- N samples per task


def test_n_samples_per_task_with_their_own_seed_and_cache_entry(llm_server, tmp_path):
    llm_server.responder = solver
    tasks = [Task("a", "What is 6 times 7?", answer="42"), Task("b", "What is 3 times 5?", answer="15")]
    cache = ResponseCache(cache_dir=tmp_path / "cache")
    agent = make_agent(llm_server, n=3, seed=10, temperature=0.7, client_kw={"cache": cache})
    trajs = generate_all(agent, tasks)
    assert [(t.task_id, t.sample) for t in trajs] == [(i, s) for i in "ab" for s in range(3)]
    assert [t.answer for t in trajs] == ["42"] * 3 + ["15"] * 3 and all(t.success for t in trajs)
    assert llm_server.count == 12
    seeds = sorted((r.body["messages"][1]["content"][8], r.body["seed"]) for r in llm_server.requests
                   if r.body["messages"][-1]["role"] == "user")
    assert seeds == [("3", 10), ("3", 11), ("3", 12), ("6", 10), ("6", 11), ("6", 12)]

    llm_server.reset()  # a second run is served from the cache, sample by sample
    again = generate_all(make_agent(llm_server, n=3, seed=10, temperature=0.7, client_kw={"cache": cache}), tasks)
    assert llm_server.count == 0
    assert [t.messages for t in again] == [t.messages for t in trajs]
    assert all(t.metadata["cached_calls"] == t.metadata["llm_calls"] == 2 for t in again)
    cache.close()


def test_duplicate_task_ids_are_refused(llm_server):
    with pytest.raises(BonError, match="unique"):
        generate_all(make_agent(llm_server), [TASK, TASK])


def test_bad_generator_settings_are_clear_errors(llm_server):
    with pytest.raises(BonError, match="max_steps"):
        make_agent(llm_server, max_steps=0)
    with pytest.raises(BonError, match="unique"):
        AgentGenerator(make_agent(llm_server).client, tool_registry.get("calculator") * 2)


# --------------------------------------------------------------------------- tools


def call(name: str, arguments, task: Task = TASK):
    tools = {t.name: t for t in tool_registry.get(tool_registry.names())}
    return asyncio.run(run_tool(tools, name, arguments, ToolContext(task), timeout_s=5))


@pytest.mark.parametrize("expression,result", [
    ("2 + 3 * 4", "14"), ("(2 + 3) * 4", "20"), ("-(3) ** 2", "-9"), ("7 // 2", "3"), ("7 % 3", "1"),
    ("10 / 4", "2.5"), ("0.1 + 0.2", "0.3"), ("2 ** -2", "0.25"), ("sqrt(16) + abs(-2)", "6"),
    ("round(pi, 3)", "3.142"), ("2 ** 1000 % 7", "2"), ("log(e)", "1"),
])
def test_calculator_arithmetic(expression, result):
    r = call("calculator", {"expression": expression})
    assert (r.content, r.error_kind) == (result, None)


@pytest.mark.parametrize("expression,kind", [
    ("__import__('os')", "bad_expression"),
    ("__import__('os').system('echo pwned')", "bad_expression"),
    ("(1).__class__", "bad_expression"),
    ("open('/etc/passwd')", "bad_expression"),
    ("x + 1", "bad_expression"),
    ("lambda: 1", "bad_expression"),
    ("'a' * 3", "bad_expression"),
    ("2 +", "bad_expression"),
    ("9 ** 9 ** 9", "too_large"),
    ("2 ** 100000", "too_large"),
    ("(10 ** 300) ** 10", "too_large"),
    ("(10 ** 900) * (10 ** 900)", "too_large"),
    ("1" * 1001, "too_large"),
    ("1 / 0", "math_error"),
    ("sqrt(-1)", "math_error"),
    ("(-8) ** 0.5", "math_error"),
])
def test_calculator_refuses_with_a_readable_error(expression, kind):
    t0 = time.monotonic()
    r = call("calculator", {"expression": expression})
    assert r.error_kind == kind and r.content.startswith("error: ") and r.answer is None
    assert time.monotonic() - t0 < 1


def test_calculator_integer_results_stay_within_the_size_cap():
    r = call("calculator", {"expression": "2 ** 999 * 3"})
    assert r.error_kind is None and int(r.content).bit_length() <= MAX_INT_BITS


def test_final_answer_tool_sets_the_answer():
    r = call("final_answer", '{"answer": "Paris"}')
    assert r.answer == "Paris" and r.error_kind is None
    assert call("final_answer", "{}").error_kind == "bad_arguments"
    assert call("final_answer", '{"answer": 42}').error_kind == "bad_arguments"


def test_registry():
    assert {"calculator", "final_answer"} <= set(tool_registry.names())
    [calc] = tool_registry.get(["calculator"])
    schema = calc.openai_schema()
    assert schema["type"] == "function" and schema["function"]["name"] == "calculator"
    assert schema["function"]["parameters"]["required"] == ["expression"]
    with pytest.raises(BonError, match="unknown tool 'search'; valid choices: calculator, final_answer"):
        tool_registry.get(["calculator", "search"])
    with pytest.raises(BonError, match="twice"):
        tool_registry.get(["calculator", "calculator"])
    assert tool_registry.get(["calculator"])[0] is not calc  # fresh instances


def test_a_crashing_or_hanging_tool_is_a_tool_error():
    class Broken(tool_registry.Tool):
        name, description, parameters = "broken", "raises", {"type": "object", "properties": {}}

        async def call(self, arguments, context):
            raise RuntimeError("disk on fire")

    class Slow(Broken):
        name = "slow"

        async def call(self, arguments, context):
            await asyncio.sleep(10)

    tools = {"broken": Broken(), "slow": Slow()}
    ctx = ToolContext(TASK)
    broken = asyncio.run(run_tool(tools, "broken", "{}", ctx))
    assert broken.error_kind == "exception" and "disk on fire" in broken.content
    slow = asyncio.run(run_tool(tools, "slow", "", ctx, timeout_s=0.05))
    assert slow.error_kind == "timeout"

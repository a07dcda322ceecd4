"""Step-level search (bon.generators.search) over real HTTP: one loopback server plays the agent and the PRM judge.

The agent is told apart from the judge by the request's model name. Each agent request carries
`seed = candidate_sample(slot, step, j)` (the generator's seed is 0), so the scripted agent knows which
candidate it is drawing and proposes a distinguishable step; the scripted judge labels the LAST
assistant step of the prompt it is shown. Tool side effects go through a `mark` tool that logs each
call and writes a file in the branch's own directory.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from pathlib import Path

import pytest
from llm_server import (
    FAKE_KEY_ENV,
    FakeLLMServer,
    Reply,
    hang,
    llm_env_fixture,  # noqa: F401 - pytest fixture
    text,
    tool_call,
    unauthorized,
    verdict,
)

from bon import tools as tool_registry
from bon.datasets.taskset import TaskSet
from bon.errors import BonError
from bon.generators.search import SearchGenerator, candidate_sample, compute_by_task
from bon.generators.store import TrajectoryStore
from bon.judges.llm import LLMJudge
from bon.judges.prompt import PREFIX_NOTE
from bon.llm import LLMClient, ResponseCache
from bon.tools import Tool, ToolContext, ToolResult
from bon.types import Task

pytestmark = pytest.mark.usefixtures("llm_env")

AGENT_TOKENS, JUDGE_TOKENS = (10, 2), (100, 5)  # (prompt, completion) the server reports per request
AGENT_PRICE, JUDGE_PRICE = (1.0, 2.0), (3.0, 4.0)  # USD per million (input, output)
DECODE = {candidate_sample(s, t, j): (s, t, j) for s in range(8) for t in range(8) for j in range(16)}


class Mark(Tool):
    """A tool with observable side effects: logs its call and writes <text>.txt in the branch's directory;
    replies with the files that directory holds."""

    name, description = "mark", "leave a mark"
    parameters = {"type": "object", "required": ["text"], "properties": {"text": {"type": "string"}}}

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def call(self, arguments: dict, context: ToolContext) -> ToolResult:
        self.calls.append(arguments["text"])
        if context.files_dir is None:
            return ToolResult("marked")
        (context.files_dir / f"{arguments['text']}.txt").write_text("x")
        return ToolResult("files: " + ", ".join(sorted(p.name for p in context.files_dir.iterdir())))


def last_step(prompt: str) -> str:
    """The text of the last assistant block of a judge prompt (the candidate), without the prefix note."""
    body = prompt.split(PREFIX_NOTE)[0]
    return body[body.rindex("] assistant"):]


def step_indices(prompt: str) -> list[int]:
    return [int(i) for i in re.findall(r"^\[(\d+)\] assistant", prompt, re.MULTILINE)]


def server_for(agent, judge) -> FakeLLMServer:
    """agent(seed, messages) -> Reply; judge(last step text) -> label, or a Reply to send as it is."""
    def respond(body):
        if body["model"].endswith("agent"):
            slot, step, j = DECODE[body["seed"]]
            return replace_tokens(agent(slot, step, j, body["messages"]), AGENT_TOKENS)
        prompt = body["messages"][-1]["content"]
        decision = judge(last_step(prompt))
        if isinstance(decision, Reply):
            return decision
        steps = step_indices(prompt)
        labels = {i: 1 for i in steps[:-1]} | {steps[-1]: decision}
        return verdict(labels, 1, prompt_tokens=JUDGE_TOKENS[0], completion_tokens=JUDGE_TOKENS[1])
    return FakeLLMServer(respond)


def replace_tokens(reply: Reply, tokens: tuple[int, int]) -> Reply:
    return reply if reply.status != 200 or reply.hang is not None else dataclasses.replace(reply, prompt_tokens=tokens[0],
                                                                 completion_tokens=tokens[1])


def marked(messages) -> str:
    """The text of the last mark call in the conversation so far."""
    for m in reversed(messages):
        for c in m.get("tool_calls") or []:
            if c["function"]["name"] == "mark":
                return json.loads(c["function"]["arguments"])["text"]
    return ""


def run(server, tasks, *, method, n=1, k=2, store=None, cache=None, mark=None, judge_kw=None, **kw):
    """generate_all with a fresh SearchGenerator; returns (trajectories, mark tool)."""
    mark = mark or Mark()
    kw.setdefault("score", TaskSet("tasks", ()).score)

    async def go():
        def client(name, price):
            return LLMClient(f"openai/{name}", api_base=server.base_url, api_key_env=FAKE_KEY_ENV, cache=cache,
                             backoff_base_s=0.01, timeout=5.0,
                             prices={"input_per_mtok": price[0], "output_per_mtok": price[1]})
        async with client("agent", AGENT_PRICE) as agent_client, client("judge", JUDGE_PRICE) as judge_client:
            judge = LLMJudge(judge_client, "prm", **(judge_kw or {}))
            generator = SearchGenerator(agent_client, [mark, *tool_registry.get(["final_answer"])], judge,
                                        method=method, k=k, n=n, seed=0, max_steps=kw.pop("max_steps", 6), **kw)
            try:
                return await generator.generate_all(tasks, store=store, progress=False)
            finally:
                await generator.aclose()
    return asyncio.run(go()), mark


def requests(server, role):
    return [r for r in server.requests if r.body["model"].endswith(role)]


def answer(value: str) -> Reply:
    return tool_call("final_answer", {"answer": value})


TASK = Task("t1", "Leave the right marks, then answer.", answer="a1")


# --------------------------------------------------------------------------- step-wise Best-of-N


def stepwise_agent(slot, step, j, messages):
    return tool_call("mark", {"text": f"c{j}"}) if step == 0 else answer(f"a{j}")


def stepwise_judge(step_text):
    return 1 if '"c1"' in step_text or '"a1"' in step_text else -1


def test_stepwise_runs_only_the_candidate_the_judge_labels_plus_one_and_counts_every_call():
    with server_for(stepwise_agent, stepwise_judge) as server:
        (traj,), mark = run(server, [TASK], method="stepwise", k=3)
        agent_requests, judge_requests = requests(server, "agent"), requests(server, "judge")

    assert mark.calls == ["c1"]  # c0 and c2 were judged, never run
    assert traj.answer == "a1" and traj.success is True and traj.metadata["stop_reason"] == "answer"
    roles = [m["role"] for m in traj.messages]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "tool"]
    assert traj.metadata["search_labels"] == {"2": 1, "4": 1}
    # every candidate was judged before any tool ran, in prefix mode, with the kept step's result in the history
    assert len(agent_requests) == 6 and len(judge_requests) == 6
    prompts = [r.body["messages"][-1]["content"] for r in judge_requests]
    assert all(PREFIX_NOTE in p for p in prompts)
    assert sum("[3] tool (mark)" in p for p in prompts) == 3  # step 1's candidates saw c1's result
    # compute: the discarded candidates and the judge calls are counted, against the server's log
    s = traj.metadata["search"]
    assert (s["method"], s["k"], s["width"], s["search_steps"]) == ("stepwise", 3, 1, 2)
    assert (s["agent_calls"], s["judge_calls"], s["judged"], s["judge_failures"]) == (6, 6, 6, 0)
    assert (s["agent_prompt_tokens"], s["agent_completion_tokens"]) == (6 * AGENT_TOKENS[0], 6 * AGENT_TOKENS[1])
    assert (s["judge_prompt_tokens"], s["judge_completion_tokens"]) == (6 * JUDGE_TOKENS[0], 6 * JUDGE_TOKENS[1])
    agent_usd = (60 * AGENT_PRICE[0] + 12 * AGENT_PRICE[1]) / 1e6
    judge_usd = (600 * JUDGE_PRICE[0] + 30 * JUDGE_PRICE[1]) / 1e6
    assert s["agent_cost_usd"] == pytest.approx(agent_usd) and s["judge_cost_usd"] == pytest.approx(judge_usd)
    assert s["cost_usd"] == pytest.approx(agent_usd + judge_usd) and s["tokens"] == 72 + 630
    assert traj.metadata["llm_calls"] == 6 and traj.metadata["cost_usd"] == pytest.approx(agent_usd)
    # distinct, reproducible draws: one sample index (seed offset) per (slot, step, candidate)
    assert sorted(r.body["seed"] for r in agent_requests) == sorted(
        candidate_sample(0, t, j) for t in range(2) for j in range(3))


def test_a_failed_judge_call_is_counted_ranks_last_and_never_becomes_a_label():
    def judge(step_text):
        if '"c0"' in step_text or "final_answer" in step_text:
            return text("I cannot decide.")  # no verdict: a failed judgement
        return -1

    with server_for(stepwise_agent, judge) as server:
        (traj,), mark = run(server, [TASK], method="stepwise", k=2)
    assert mark.calls == ["c1"]  # a -1 label beats a failed call
    assert traj.answer == "a0"  # every call failed at step 1: the lowest candidate index is kept
    assert traj.metadata["search_labels"] == {"2": -1, "4": None}
    assert traj.metadata["search"]["judge_failures"] == 3 and traj.metadata["search"]["judged"] == 4


def test_when_every_candidate_call_fails_the_trajectory_ends_with_the_error():
    def agent(slot, step, j, messages):
        return tool_call("mark", {"text": "m"}) if step == 0 else unauthorized()

    with server_for(agent, lambda step_text: 1) as server:
        (traj,), mark = run(server, [TASK], method="stepwise", k=2)
    md = traj.metadata
    assert md["stop_reason"] == "error" and md["error_kind"] == "auth" and traj.answer is None
    assert mark.calls == ["m"] and md["search"]["agent_errors"] == 2 and md["search"]["agent_calls"] == 4


# --------------------------------------------------------------------------- beam search


def beam_agent(slot, step, j, messages):
    if step == 0:
        return tool_call("mark", {"text": f"r{j}"})
    if step == 1:
        return tool_call("mark", {"text": f"{marked(messages)}-x{j}"})
    return answer(f"{marked(messages)}-{j}")


def beam_judge(step_text):
    if "final_answer" in step_text:
        return 1 if re.search(r'-0\\?"', step_text) else -1
    if '"r1"' in step_text or '"r3"' in step_text or '"r1-x' in step_text:
        return 1
    return 0 if '"r3-x' in step_text else -1


def test_beam_of_width_two_keeps_two_distinct_trajectories_with_isolated_branch_directories(tmp_path):
    attached = tmp_path / "data.txt"
    attached.write_text("attached")
    task = Task("t1", "Leave the right marks, then answer.", answer="r1-x0-0", files=(str(attached),))
    with server_for(beam_agent, beam_judge) as server:
        trajs, mark = run(server, [task], method="beam", n=2, k=2)
        agent_requests, judge_requests = requests(server, "agent"), requests(server, "judge")

    # step 0: the root proposes n*k = 4 marks, r1 and r3 survive; step 1: both children of r1 beat r3's
    # (labelled 0), so r3 is pruned and r1 forks; step 2: each branch answers with its -0 candidate
    assert sorted(mark.calls) == ["r1", "r1-x0", "r1-x1", "r3"]  # r0, r2 and r3's children never ran
    assert [t.answer for t in trajs] == ["r1-x0-0", "r1-x1-0"]
    assert [t.sample for t in trajs] == [0, 1] and trajs[0].success and not trajs[1].success
    listings = [[m["content"] for m in t.messages if m.get("name") == "mark"] for t in trajs]
    # each branch sees the files its own ancestors wrote and nothing of its sibling's or the pruned branch's
    assert listings[0] == ["files: data.txt, r1.txt", "files: data.txt, r1-x0.txt, r1.txt"]
    assert listings[1] == ["files: data.txt, r1.txt", "files: data.txt, r1-x1.txt, r1.txt"]
    assert Path(attached).read_text() == "attached" and sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]
    assert len(agent_requests) == 12 and len(judge_requests) == 12  # 4 per step, each judged once
    for t in trajs:  # one unit for the task, repeated on both trajectories
        s = t.metadata["search"]
        assert (s["method"], s["width"], s["k"], s["unit_trajectories"]) == ("beam", 2, 2, 2)
        assert (s["agent_calls"], s["judge_calls"]) == (12, 12)
    assert trajs[0].metadata["search_labels"] == {"2": 1, "4": 1, "6": 1}
    per_task = compute_by_task(trajs)["t1"]
    assert (per_task["units"], per_task["agent_calls"], per_task["judge_calls"]) == (1, 12, 12)
    assert per_task["tokens"] == 12 * sum(AGENT_TOKENS) + 12 * sum(JUDGE_TOKENS)


def test_beam_redoes_a_whole_task_when_any_of_its_samples_is_missing(tmp_path):
    with server_for(beam_agent, beam_judge) as server:
        trajs, _ = run(server, [TASK], method="beam", n=2, k=2, store=tmp_path / "t.jsonl")
    generator = SearchGenerator(LLMClient("openai/agent", api_base="http://127.0.0.1:9"),
                                tool_registry.get(["final_answer"]),
                                LLMJudge(LLMClient("openai/judge", api_base="http://127.0.0.1:9"), "prm"),
                                method="beam", n=2)
    assert generator.todo([TASK], {("t1", 0): trajs[0]}) == [(TASK, 0), (TASK, 1)]
    assert generator.todo([TASK], {("t1", 0): trajs[0], ("t1", 1): trajs[1]}) == []


@pytest.mark.parametrize("hang_at", [0, 1])
def test_a_beam_that_runs_out_of_time_still_yields_its_width_with_what_each_branch_did(hang_at):
    def agent(slot, step, j, messages):
        return hang(30) if step == hang_at else tool_call("mark", {"text": f"r{j}"})

    with server_for(agent, lambda step_text: 1) as server:
        trajs, mark = run(server, [TASK], method="beam", n=2, k=2, trajectory_timeout_s=2.0)
    assert [t.metadata["stop_reason"] for t in trajs] == ["timeout", "timeout"]
    assert all("2 s" in t.metadata["error"] and t.answer is None for t in trajs)
    steps_kept = [len(t.step_indices) for t in trajs]
    assert steps_kept == [hang_at, hang_at] and sorted(mark.calls) == (["r0", "r1"] if hang_at else [])


# --------------------------------------------------------------------------- DVTS


def test_dvts_yields_n_independent_subtrees():
    def agent(slot, step, j, messages):
        return answer(f"s{slot}-{j}")

    with server_for(agent, lambda step_text: 1 if re.search(r'-1\\?"', step_text) else -1) as server:
        trajs, _ = run(server, [TASK], method="dvts", n=3, k=2)
        agent_seeds = sorted(r.body["seed"] for r in requests(server, "agent"))
        judged = len(requests(server, "judge"))
    assert [(t.sample, t.answer) for t in trajs] == [(0, "s0-1"), (1, "s1-1"), (2, "s2-1")]
    assert agent_seeds == sorted(candidate_sample(s, 0, j) for s in range(3) for j in range(2)) and judged == 6
    assert [t.metadata["search"]["unit"] for t in trajs] == [0, 1, 2]
    assert all((t.metadata["search"]["agent_calls"], t.metadata["search"]["judge_calls"]) == (2, 2) for t in trajs)
    per_task = compute_by_task(trajs)["t1"]
    assert (per_task["units"], per_task["agent_calls"], per_task["judge_calls"]) == (3, 6, 6)


# --------------------------------------------------------------------------- caching and resume


def test_an_identical_prefix_is_judged_once_and_a_rerun_makes_no_request(tmp_path):
    cache = ResponseCache(cache_dir=tmp_path / "cache")

    def same(slot, step, j, messages):  # every candidate proposes the same step
        return answer("42")

    with server_for(same, lambda step_text: 1) as server:
        first, _ = run(server, [TASK], method="stepwise", n=2, k=2, cache=cache)
        assert len(requests(server, "agent")) == 4  # four distinct draws...
        assert len(requests(server, "judge")) == 1  # ...of one prefix, judged once for both runs
        for t in first:  # each independent run needed that judgement once: its compute, however it was served
            s = t.metadata["search"]
            assert (s["judged"], s["judge_repeats"], s["judge_calls"]) == (2, 1, 1)
            assert s["judge_prompt_tokens"] == JUDGE_TOKENS[0] and s["agent_prompt_tokens"] == 2 * AGENT_TOKENS[0]

        server.reset()
        again, _ = run(server, [TASK], method="stepwise", n=2, k=2, cache=cache)
        assert server.count == 0
    assert [t.messages for t in again] == [t.messages for t in first]
    for old, new in zip(first, again):  # the compute a method took does not change when it is served from cache
        changed = {"agent_cached", "judge_cached"}
        assert {f: v for f, v in new.metadata["search"].items() if f not in changed} == \
            {f: v for f, v in old.metadata["search"].items() if f not in changed}
        assert new.metadata["search"]["agent_cached"] == 2 and new.metadata["search"]["judge_cached"] == 1
    cache.close()


def test_trajectories_round_trip_through_the_store_and_resume_makes_no_request(tmp_path):
    store = tmp_path / "trajectories.jsonl"
    with server_for(stepwise_agent, stepwise_judge) as server:
        trajs, _ = run(server, [TASK], method="stepwise", n=2, k=3, store=store)
        loaded = TrajectoryStore(store).load()
        assert [loaded[("t1", s)] for s in range(2)] == trajs  # metadata["search"] and the labels included
        server.reset()
        resumed, mark = run(server, [TASK], method="stepwise", n=2, k=3, store=store)  # no response cache
        assert server.count == 0 and resumed == trajs and mark.calls == []


# --------------------------------------------------------------------------- bad settings


def test_bad_search_settings_are_one_line_errors():
    client = LLMClient("openai/agent", api_base="http://127.0.0.1:9")
    judge = LLMJudge(LLMClient("openai/judge", api_base="http://127.0.0.1:9"), "prm")
    final = tool_registry.get(["final_answer"])
    with pytest.raises(BonError, match="unknown generator.search 'mcts'; valid choices: beam, dvts, stepwise"):
        SearchGenerator(client, final, judge, method="mcts")
    with pytest.raises(BonError, match="generator.search_k must be an integer >= 1, got 0"):
        SearchGenerator(client, final, judge, k=0)
    with pytest.raises(BonError, match="needs a judge in prm mode"):
        SearchGenerator(client, final, LLMJudge(judge.client, "orm", mode="orm"))
    with pytest.raises(BonError, match="needs a process judge"):
        SearchGenerator(client, final, None)


def test_the_ranking_rule_label_first_then_share_then_distinct_then_order():
    from bon.generators.search import _Candidate

    def c(parent, index, label, share, repeat=False):
        return _Candidate(parent, index, {"role": "assistant", "content": f"{parent}.{index}"}, label, share, repeat)

    pool = [c(0, 0, None, 0.0), c(0, 1, 0, 1.0), c(0, 2, 1, 0.2), c(1, 0, 1, 0.9), c(1, 1, -1, 1.0),
            c(1, 2, 1, 0.9), c(0, 3, 1, 0.9, repeat=True)]
    ranked = [(x.parent, x.index) for x in sorted(pool, key=_Candidate.rank)]
    # +1 before 0 before -1 before a failed call; among +1, the larger share of +1 over the prefix; a
    # word-for-word repeat after every distinct candidate; then the lower parent slot and candidate index
    assert ranked == [(1, 0), (1, 2), (0, 2), (0, 1), (1, 1), (0, 0), (0, 3)]

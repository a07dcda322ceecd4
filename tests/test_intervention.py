"""Human-agent collaboration in the agent loop: policies, the stand-in human, and T, C, R in summary.json.

The live tests speak real HTTP to a loopback server that plays three models, told apart by the
request's model name: the agent, the judge (an online PRM), and the stronger helper.
"""
from __future__ import annotations

import asyncio
import json
import os
import re

import pytest
from commands import run_in_process
from llm_server import (
    FAKE_KEY_ENV,
    FakeLLMServer,
    llm_env_fixture,  # noqa: F401 - pytest fixture
    text,
    tool_call,
    verdict,
)

from bon import tools
from bon.datasets.taskset import TaskSet
from bon.errors import BonError
from bon.generators.agent import AgentGenerator
from bon.generators.intervention import (
    AGENT,
    HUMAN,
    Budgeted,
    FixedRate,
    ModelHelper,
    Never,
    PRMTriggered,
    Reflect,
    StepState,
    TerminalHuman,
    parse_human_line,
    policy_from_config,
    reward_summary,
)
from bon.judges.llm import LLMJudge
from bon.llm import LLMClient
from bon.types import Task, Trajectory

TASK = Task("t1", "What is 6 times 7?", answer="42")


def state(step: int, actors: list[str], task: Task = TASK, sample: int = 0) -> StepState:
    return StepState(task, sample, step, [], list(actors))


def decide(policy, s: StepState):
    return asyncio.run(policy.decide(s))


# --------------------------------------------------------------------------- policies offline


def test_fixed_rate_is_reproducible_and_hands_over_at_the_configured_rate():
    policy = FixedRate(0.3, seed=7)
    states = [state(step, [], Task(f"t{i}", "q"), sample) for i in range(50) for sample in range(4) for step in range(10)]
    first = [decide(policy, s).actor for s in states]
    assert first == [decide(FixedRate(0.3, seed=7), s).actor for s in states]  # same seed, same choices
    share = first.count(HUMAN) / len(first)
    assert abs(share - 0.3) < 0.03  # 2,000 independent draws: sd ~0.01
    other = [decide(FixedRate(0.3, seed=8), s).actor for s in states]
    assert other != first
    assert all(decide(FixedRate(0.0), s).actor == AGENT for s in states[:100])
    assert all(decide(FixedRate(1.0), s).actor == HUMAN for s in states[:100])


def test_budget_caps_interventions_and_says_why():
    policy = Budgeted(FixedRate(1.0), 2)
    assert decide(policy, state(0, [])).actor == HUMAN
    assert decide(policy, state(2, [HUMAN, AGENT])).actor == HUMAN
    capped = decide(policy, state(3, [HUMAN, AGENT, HUMAN]))
    assert capped.actor == AGENT and "budget of 2 spent" in capped.why
    assert policy.name == "rate+budget2"


def test_policy_config_errors_name_the_option():
    with pytest.raises(BonError, match=r"intervention.policy must be one of none, rate, prm, reflect; got 'sometimes'"):
        policy_from_config({"policy": "sometimes"})
    with pytest.raises(BonError, match="intervention.rate must be a number >= 0 and <= 1, got 1.5"):
        policy_from_config({"policy": "rate", "rate": 1.5})
    with pytest.raises(BonError, match="needs an online judge"):
        policy_from_config({"policy": "prm"})
    assert isinstance(policy_from_config({"policy": "none"}), Never)
    assert isinstance(policy_from_config({"policy": "rate", "rate": 0.1, "budget": 1}), Budgeted)


def test_a_typed_line_becomes_an_answer_a_tool_call_or_text():
    names = ["calculator", "final_answer"]
    answer = parse_human_line("answer: 42", names)
    assert answer["tool_calls"][0]["function"] == {"name": "final_answer", "arguments": '{"answer": "42"}'}
    call = parse_human_line('calculator {"expression": "6*7"}', names)
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"expression": "6*7"}
    assert parse_human_line("calculator {not json", names) == {"role": "assistant", "content": "calculator {not json"}
    assert parse_human_line("try the other page", names)["content"] == "try the other page"
    assert parse_human_line("answer: 42", ["calculator"])["content"] == "FINAL ANSWER: 42"


def test_reward_summary_by_hand():
    def traj(success, actors):
        return Trajectory("t", 0, success=success,
                          metadata={"actors": actors, "interventions": actors.count(HUMAN)})
    ts = [traj(True, [AGENT, AGENT]), traj(True, [HUMAN, AGENT, HUMAN]), traj(False, [HUMAN])]
    s = reward_summary(ts, 0.1)
    # T = 2/3, C = (0 + 2 + 1)/3 = 1, R = mean(1 - 0, 1 - 0.2, 0 - 0.1) = 1.7/3
    assert s["T"] == pytest.approx(2 / 3) and s["C"] == pytest.approx(1.0) and s["R"] == pytest.approx(1.7 / 3)
    assert s["interventions"] == 3 and s["steps"] == 6 and s["intervention_rate"] == pytest.approx(0.5)
    assert reward_summary([Trajectory("t", 0, metadata={"actors": [AGENT]})], 0.1)["R"] is None


# --------------------------------------------------------------------------- live, over loopback HTTP


def three_models(judge_reply=None):
    """agent: a wrong calculation, then a wrong answer; judge: -1 on a step that computed 6*8;
    helper: answers 42. So the PRM-triggered policy must hand over right after the first step."""
    calls = {"agent": 0, "judge": 0, "helper": 0}

    def respond(body):
        model = body["model"]
        messages = body["messages"]
        if model.endswith("agent"):
            calls["agent"] += 1
            if not any(m["role"] == "tool" for m in messages):
                return tool_call("calculator", {"expression": "6*8"})
            return tool_call("final_answer", {"answer": "48"})
        if model.endswith("judge"):
            calls["judge"] += 1
            if judge_reply is not None:
                return judge_reply
            prompt = messages[-1]["content"]
            steps = [int(line[1:line.index("]")]) for line in prompt.splitlines()
                     if line.startswith("[") and "] assistant" in line]
            return verdict({s: -1 if "6*8" in prompt else 1 for s in steps}, -1)
        calls["helper"] += 1
        return tool_call("final_answer", {"answer": "42"})
    return respond, calls


def client(server, name, **kw):
    return LLMClient(f"openai/{name}", api_base=server.base_url, api_key_env=FAKE_KEY_ENV, **kw)


def run_agent(server, policy_factory, helper_factory, n=1):
    async def go():
        agent_client, judge_client, helper_client = (client(server, n_) for n_ in ("agent", "judge", "helper"))
        async with agent_client, judge_client, helper_client:
            policy = policy_factory(LLMJudge(judge_client, "online", max_chars=None))
            agent = AgentGenerator(agent_client, tools.get(["calculator", "final_answer"]), n=n, max_steps=5,
                                   intervention=policy, helper=helper_factory(helper_client),
                                   score=TaskSet("tasks", ()).score)
            out = await agent.generate_all([TASK], progress=False)
            await agent.aclose()
            return out
    return asyncio.run(go())


@pytest.mark.usefixtures("llm_env")
def test_prm_triggered_policy_hands_over_exactly_after_a_minus_one():
    respond, calls = three_models()
    with FakeLLMServer(respond) as server:
        traj, = run_agent(server, PRMTriggered, ModelHelper)
    assert traj.metadata["actors"] == [AGENT, HUMAN]
    steps = traj.step_indices
    assert traj.metadata["online_labels"] == {str(steps[0]): -1}  # judged once: the agent's step only
    assert traj.metadata["interventions"] == 1 and traj.metadata["intervention_policy"] == "prm"
    assert traj.answer == "42" and traj.success is True
    assert calls == {"agent": 1, "judge": 1, "helper": 1}
    assert traj.metadata["llm_calls"] == 2  # agent + helper; the judge's calls are the judge's


@pytest.mark.usefixtures("llm_env")
def test_no_handover_while_the_judge_approves_and_a_failed_judge_call_is_counted_not_a_label():
    respond, calls = three_models(judge_reply=text("I cannot decide."))
    with FakeLLMServer(respond) as server:
        traj, = run_agent(server, PRMTriggered, ModelHelper)
    assert traj.metadata["actors"] == [AGENT, AGENT]
    assert traj.metadata["online_judge_failures"] == 1
    assert traj.metadata["online_labels"] == {str(traj.step_indices[0]): None}
    assert calls["helper"] == 0 and traj.answer == "48" and traj.success is False


@pytest.mark.usefixtures("llm_env")
def test_budget_zero_means_the_agent_always_acts():
    respond, calls = three_models()
    with FakeLLMServer(respond) as server:
        traj, = run_agent(server, lambda judge: Budgeted(PRMTriggered(judge), 0), ModelHelper)
    assert traj.metadata["actors"] == [AGENT, AGENT] and calls["helper"] == 0
    assert traj.metadata["online_labels"] == {str(traj.step_indices[0]): -1}  # the judge still said -1


@pytest.mark.usefixtures("llm_env")
def test_a_person_at_the_terminal_can_take_the_step():
    respond, calls = three_models()
    typed, shown = iter(["answer: 42"]), []
    with FakeLLMServer(respond) as server:
        traj, = run_agent(server, lambda judge: FixedRate(1.0),
                          lambda _: TerminalHuman(read=lambda: next(typed), write=shown.append))
    assert traj.metadata["actors"] == [HUMAN] and traj.success is True
    assert calls["agent"] == 0 and traj.metadata["cost_usd"] == 0.0
    assert "What is 6 times 7?" in shown[0] and "answer: <text>" in shown[0]


def test_a_policy_without_a_helper_is_refused():
    with pytest.raises(BonError, match="needs a helper"):
        AgentGenerator(LLMClient("openai/x", api_base="http://127.0.0.1:9"), tools.get(["final_answer"]),
                       intervention=FixedRate(0.5))


@pytest.mark.parametrize("transport", ["litellm", "native"])
def test_run_reports_t_c_r_in_summary(tmp_path, transport):
    """The same run through litellm and through transport=native for the agent, judge and helper alike."""
    respond, calls = three_models()
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"task_id": "t1", "question": TASK.question, "answer": "42"}) + "\n")
    env = {**os.environ, "BON_TEST_KEY": "sk-test", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with FakeLLMServer(respond) as server:
        args = ["dataset=tasks", f"dataset.path={tasks}", "generator=local", "judge=local",
                "generator.model=openai/agent", "judge.model=openai/judge", "generator.n=3",
                f"generator.api_base={server.base_url}", f"judge.api_base={server.base_url}",
                "generator.api_key_env=BON_TEST_KEY", "judge.api_key_env=BON_TEST_KEY",
                "intervention=prm", "intervention.lambda=0.25", "intervention.helper.model=openai/helper",
                f"intervention.helper.api_base={server.base_url}", "intervention.helper.api_key_env=BON_TEST_KEY",
                f"cache.dir={tmp_path / 'cache'}", "bootstrap_resamples=200", f"hydra.run.dir={tmp_path / 'out'}",
                f"generator.transport={transport}", f"judge.transport={transport}",
                f"intervention.helper.transport={transport}"]
        proc = run_in_process("bon.run", *args, cwd=tmp_path, env=env)
        helper_calls = [r for r in server.requests if r.body.get("model") == "helper"]
    assert proc.returncode == 0, proc.stderr
    assert len(helper_calls) == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    collab = summary["collaboration"]
    # every sample: agent step judged -1, helper answers 42 -> T = 1, C = 1, R = 1 - 0.25
    assert (collab["T"], collab["C"], collab["R"], collab["lambda"]) == (1.0, 1.0, 0.75, 0.25)
    assert collab["interventions"] == 3 and collab["steps"] == 6 and collab["intervention_rate"] == 0.5
    assert summary["usage"]["intervention"]["calls"] == 3 and summary["usage"]["online judging"]["calls"] == 3
    assert "collaboration (prm): 3 of 6 steps by the helper (50.0%)" in proc.stdout
    assert "R=T-0.25*C=0.750" in proc.stdout


def test_intervention_on_recorded_candidates_is_a_clear_error(tmp_path):
    proc = run_in_process("bon.run", "intervention=rate", f"hydra.run.dir={tmp_path}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "intervention=rate needs a live agent" in proc.stderr


def reflective_models():
    """agent: computes 6*8 (wrong) and answers 48, unless it has read a reflection prompt, after which it
    computes 6*7 and answers 42; judge: -1 on a step that computed 6*8, +1 otherwise."""
    respond, calls = three_models()

    def reflective(body):
        messages = body["messages"]
        if body["model"].endswith("agent") and any(m["role"] == "user" and "reflect" in str(m["content"])
                                                   for m in messages[2:]):
            calls["agent"] += 1
            tools_run = [m for m in messages if m["role"] == "tool"]
            if len(tools_run) < 2:
                return tool_call("calculator", {"expression": "6*7"})
            return tool_call("final_answer", {"answer": "42"})
        if body["model"].endswith("judge"):  # label each step by what it computed
            calls["judge"] += 1
            chunks = re.split(r"^\[(\d+)\] ", messages[-1]["content"], flags=re.M)
            labels = {int(i): -1 if "6*8" in chunk else 1 for i, chunk in zip(chunks[1::2], chunks[2::2])
                      if chunk.startswith("assistant")}
            return verdict(labels, 1)
        return respond(body)
    return reflective, calls


@pytest.mark.usefixtures("llm_env")
def test_reflect_asks_the_agent_itself_to_revise_after_a_minus_one():
    respond, calls = reflective_models()
    with FakeLLMServer(respond) as server:
        traj, = run_agent(server, lambda judge: Reflect(judge, near_limit=0), lambda _: None)
    assert traj.answer == "42" and traj.success is True  # revised after reading the reflection prompt
    assert traj.metadata["reflections"] == 1 and traj.metadata["interventions"] == 0
    assert traj.metadata["actors"] == [AGENT, AGENT, AGENT] and calls["helper"] == 0
    prompt = [m for m in traj.messages if m["role"] == "user"][1]
    first_step = traj.step_indices[0]
    assert f"message {first_step}" in prompt["content"]  # it names the step the judge labelled -1
    assert traj.metadata["online_labels"][str(first_step)] == -1


@pytest.mark.usefixtures("llm_env")
def test_reflect_reminds_near_the_step_limit_and_a_budget_caps_reflections():
    respond, calls = reflective_models()
    with FakeLLMServer(respond) as server:
        capped, = run_agent(server, lambda judge: Budgeted(Reflect(judge, near_limit=0), 0), lambda _: None)
    assert capped.metadata["reflections"] == 0 and capped.answer == "48"  # budget 0: no reflection
    state = StepState(TASK, 0, 3, [{"role": "user", "content": "q"}], [], max_steps=5)
    decision = asyncio.run(Reflect(judge=None, near_limit=2).decide(state))  # no agent step yet: no judge call
    assert decision.actor == AGENT and "2 step(s) left" in decision.reflect


def test_reflect_run_reports_reflections(tmp_path):
    respond, calls = reflective_models()
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(json.dumps({"task_id": "t1", "question": TASK.question, "answer": "42"}) + "\n")
    env = {**os.environ, "BON_TEST_KEY": "sk-test", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with FakeLLMServer(respond) as server:
        args = ["dataset=tasks", f"dataset.path={tasks}", "generator=local", "judge=local",
                "generator.model=openai/agent", "judge.model=openai/judge", "generator.n=2",
                f"generator.api_base={server.base_url}", f"judge.api_base={server.base_url}",
                "generator.api_key_env=BON_TEST_KEY", "judge.api_key_env=BON_TEST_KEY", "intervention=reflect",
                f"cache.dir={tmp_path / 'cache'}", "bootstrap_resamples=200", f"hydra.run.dir={tmp_path / 'out'}"]
        proc = run_in_process("bon.run", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    collab = summary["collaboration"]
    assert (collab["policy"], collab["reflections"], collab["interventions"], collab["T"]) == ("reflect", 2, 0, 1.0)
    assert "intervention" not in summary["usage"]  # no helper was built or called
    assert summary["usage"]["online judging"]["calls"] == calls["judge"] - 2  # the rest judged finished trajectories
    assert "reflection: 2 reflection prompts over 6 steps" in proc.stdout

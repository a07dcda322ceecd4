"""The library API for agent loops (bon.api) over real HTTP: litellm -> a scripted server on 127.0.0.1.

One server plays the agent and the judge, told apart by the request's model name. The agent's seed is
0, so a Best-of-N sample s is sent `seed = s` (a search candidate: `candidate_sample(slot, step, j)`)
and the scripted agent answers with a tag naming its draw; the scripted judge reads the tag in the
prompt it is shown and grades it, so a pick proves which candidate the judge preferred.
"""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from llm_server import FAKE_KEY_ENV, FakeLLMServer, Reply, llm_env_fixture, text, tool_call, verdict  # noqa: F401

import bon
from bon import selectors
from bon import tools as tool_registry
from bon.errors import BonError
from bon.generators.agent import AgentGenerator
from bon.generators.search import candidate_sample
from bon.judges.listwise import ListwiseJudge
from bon.judges.llm import LLMJudge
from bon.judges.prompt import PREFIX_NOTE
from bon.llm import LLMClient, ResponseCache
from bon.types import Judgement, Task, Trajectory

pytestmark = pytest.mark.usefixtures("llm_env")
ROOT = Path(__file__).resolve().parents[1]
AGENT_TOKENS, JUDGE_TOKENS = (10, 2), (100, 5)  # (prompt, completion) the server reports per request
TAG = re.compile(r"ans-(\d+)")
STEP = re.compile(r"^\[(\d+)\] assistant", re.MULTILINE)
DECODE = {candidate_sample(s, t, j): j for s in range(4) for t in range(4) for j in range(8)}
TASK = Task("t1", "Which draw is right?")


def answer(tag: int) -> Reply:
    return tool_call("final_answer", {"answer": f"ans-{tag}"}, prompt_tokens=AGENT_TOKENS[0],
                     completion_tokens=AGENT_TOKENS[1])


def grade(prompt: str, step: dict[int, int], final: dict[int, int]) -> Reply:
    """The judge's verdict on the tagged draw in `prompt`: every step labelled step[tag] (default +1),
    FINAL_RESULT final[tag] (default -1)."""
    tag = int(TAG.findall(prompt)[-1])
    labels = {int(i): step.get(tag, 1) for i in STEP.findall(prompt)}
    return verdict(labels, final.get(tag, -1), prompt_tokens=JUDGE_TOKENS[0], completion_tokens=JUDGE_TOKENS[1])


def server(agent, judge) -> FakeLLMServer:
    """agent(body) -> Reply for the model `agent`; judge(prompt) -> Reply for every other model."""
    def respond(body):
        if body["model"].endswith("agent"):
            return agent(body)
        return judge(body["messages"][-1]["content"])
    return FakeLLMServer(respond)


def run(srv: FakeLLMServer, call, cache: ResponseCache | None = None, **agent_kw):
    """`call(agent, judge)` with an AgentGenerator and an LLMJudge on `srv`, in a fresh event loop."""
    async def go():
        def client(name):
            return LLMClient(f"openai/{name}", api_base=srv.base_url, api_key_env=FAKE_KEY_ENV, cache=cache,
                             backoff_base_s=0.01, timeout=5.0)
        async with client("agent") as agent_client, client("judge") as judge_client:
            agent = AgentGenerator(agent_client, tool_registry.get(["final_answer"]), seed=0, max_steps=3,
                                   **agent_kw)
            return await call(agent, LLMJudge(judge_client, "prm"))
    return asyncio.run(go())


# --------------------------------------------------------------------------- best_of_n


# Draws 1 and 2 are the ones the judge calls a success; of those it labels draw 2's step +1 and draw 1's 0.
# Draws 0 and 3 fail but have every step +1, so a selector that ignores FINAL_RESULT prefers draw 0.
STEPS, FINALS = {1: 0}, {1: 1, 2: 1}


def test_best_of_n_picks_what_the_judge_prefers_and_counts_what_it_cost():
    with server(lambda body: answer(body["seed"]), lambda p: grade(p, STEPS, FINALS)) as srv:
        result = run(srv, lambda agent, judge: bon.best_of_n(TASK, agent, judge, n=4))
        assert srv.count == 8  # 4 agent calls, 4 judge calls
    assert isinstance(result, bon.Result)
    assert (result.index, result.trajectory.sample, result.answer) == (2, 2, "ans-2")
    assert [t.answer for t in result.candidates] == ["ans-0", "ans-1", "ans-2", "ans-3"]
    assert [j.final_label for j in result.judgements] == [-1, 1, 1, -1]
    assert [r["sample"] for r in result.rows] == [0, 1, 2, 3] and result.selector == "two_stage"
    assert result.judge_failures == 0
    c = result.compute
    assert (c.agent_calls, c.judge_calls, c.cache_hits, c.unreported) == (4, 4, 0, 0)
    assert c.agent_tokens == 4 * sum(AGENT_TOKENS) and c.judge_tokens == 4 * sum(JUDGE_TOKENS)
    assert c.tokens == c.agent_tokens + c.judge_tokens and c.calls == 8
    assert c.cost_usd is None  # a local model has no price: unknown, not zero
    assert "sample 2 of 4 picked by two_stage" in str(result) and "8 calls" in str(result)


def test_the_selector_decides_and_a_rerun_is_served_by_the_cache(tmp_path):
    cache = ResponseCache(cache_dir=tmp_path)
    with server(lambda body: answer(body["seed"]), lambda p: grade(p, STEPS, FINALS)) as srv:
        first = run(srv, lambda a, j: bon.best_of_n(TASK, a, j, n=4), cache=cache)
        sent = srv.count
        by_name = run(srv, lambda a, j: bon.best_of_n(TASK, a, j, selector="pos_ratio", n=4), cache=cache)
        final = run(srv, lambda a, j: bon.best_of_n(TASK, a, j, selector=selectors.final, n=4), cache=cache)
        assert srv.count == sent == 8  # the reruns made no request
    assert first.index == 2
    assert by_name.index == 0  # %Pos alone ignores the judge's FINAL_RESULT: every step of draw 0 is +1
    assert final.index == 1  # the first candidate the judge calls a success
    assert by_name.compute.cache_hits == 8 and first.compute.cache_hits == 0
    assert by_name.compute.tokens == first.compute.tokens  # a method's compute, the same from the cache


def test_plain_python_callables_serve_as_agent_judge_and_selector():
    """No LLM at all: an agent, a judge and a selector written by the user."""
    async def agent(task: Task, sample: int) -> Trajectory:
        reply = f"Let me think.\nFINAL ANSWER: {sample * 7}"
        return Trajectory(task.id, sample, ({"role": "user", "content": task.question},
                                            {"role": "assistant", "content": reply}), answer=str(sample * 7))

    seen: list[int] = []

    async def judge(t: Trajectory) -> Judgement:
        seen.append(t.sample)
        if t.sample == 1:
            return Judgement("mine", status="failed", reason="could not tell")
        return Judgement("mine", {i: 1 for i in t.step_indices}, final_label=1 if t.answer == "21" else -1)

    result = asyncio.run(bon.best_of_n("What is 3 times 7?", agent, judge, n=5))
    assert result.answer == "21" and result.index == 3
    assert result.task.question == "What is 3 times 7?" and result.task.id.startswith("q-")
    assert result.task == bon.api.as_task("What is 3 times 7?")  # the id is stable: reruns and orders reproduce
    assert sorted(seen) == [0, 1, 2, 3, 4]
    assert result.judge_failures == 1 and result.rows[1]["judge_ok"] is False
    assert (result.compute.calls, result.compute.unreported) == (0, 10)

    def last(rows):  # a selector is any rows -> position
        return len(rows) - 1
    assert asyncio.run(bon.best_of_n("What is 3 times 7?", agent, judge, selector=last, n=5)).index == 4


def test_a_candidate_whose_judgement_failed_is_never_picked_as_labelled():
    """A failed LLM judge call stays failed: counted on the result, and two_stage passes over it."""
    def judge(prompt):
        tag = int(TAG.findall(prompt)[-1])
        return text("I cannot grade this.") if tag == 0 else grade(prompt, {}, {1: 1})
    with server(lambda body: answer(body["seed"]), judge) as srv:
        result = run(srv, lambda a, j: bon.best_of_n(TASK, a, j, n=2))
    assert result.judgements[0].failed and result.judge_failures == 1
    assert result.index == 1 and result.rows[0]["final_pred"] is None


# --------------------------------------------------------------------------- search


def test_beam_returns_width_trajectories_kept_by_the_prefix_judge_then_picks_one():
    """Width 2, 2 expansions: the root proposes 4 steps (draws j = 0..3); the prefix judge labels
    draws 2 and 3 +1 and the others -1, so those two survive; judged whole, only draw 3 succeeds."""
    def judge(prompt):
        if PREFIX_NOTE in prompt:
            return grade(prompt, {0: -1, 1: -1}, {})
        return grade(prompt, {}, {3: 1})
    with server(lambda body: answer(DECODE[body["seed"]]), judge) as srv:
        result = run(srv, lambda a, j: bon.beam(TASK, a, j, width=2, expand=2))
        assert srv.count == 4 + 4 + 2  # 4 proposals, 4 prefixes judged, 2 finished trajectories judged
    assert len(result.candidates) == 2 and result.method == "beam"
    assert sorted(t.answer for t in result.candidates) == ["ans-2", "ans-3"]
    assert all(t.metadata["search"]["method"] == "beam" for t in result.candidates)
    assert result.answer == "ans-3"
    c = result.compute
    assert (c.agent_calls, c.judge_calls) == (4, 6)
    assert c.agent_tokens == 4 * sum(AGENT_TOKENS) and c.judge_tokens == 6 * sum(JUDGE_TOKENS)


@pytest.mark.parametrize("method", ["stepwise", "dvts"])
def test_stepwise_and_dvts_keep_the_judges_best_step_per_run(method):
    def judge(prompt):
        if PREFIX_NOTE in prompt:
            return grade(prompt, {0: -1, 2: -1}, {})  # of draws 0..2, only draw 1 is labelled +1
        return grade(prompt, {}, {1: 1})
    with server(lambda body: answer(DECODE[body["seed"]]), judge) as srv:
        result = run(srv, lambda a, j: getattr(bon, method)(TASK, a, j, n=1, expand=3))
    assert [t.answer for t in result.candidates] == ["ans-1"] and result.method == method
    assert (result.compute.agent_calls, result.compute.judge_calls) == (3, 4)


def test_search_needs_a_bon_agent_and_a_prm_judge():
    async def agent(task, sample):
        raise AssertionError("never called")

    with server(lambda body: answer(0), lambda p: grade(p, {}, {})) as srv:
        with pytest.raises(BonError, match="needs a bon AgentGenerator as agent"):
            run(srv, lambda a, j: bon.beam(TASK, agent, j))
        with pytest.raises(BonError, match="needs an LLMJudge in prm mode as judge .*got mode 'orm'"):
            run(srv, lambda a, j: bon.beam(TASK, a, LLMJudge(j.client, "orm", mode="orm")))
        with pytest.raises(BonError, match="width must be an integer >= 1, got 0"):
            run(srv, lambda a, j: bon.beam(TASK, a, j, width=0))
        assert srv.count == 0


# --------------------------------------------------------------------------- list-wise and pairwise


def attempt(sample: int, good: bool = False) -> Trajectory:
    """A finished candidate whose steps carry `cand-<sample>` (and GOOD for the one to pick)."""
    messages = ({"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": f"cand-{sample} thinks." + (" GOOD evidence." if good else "")},
                {"role": "assistant", "content": f"FINAL ANSWER: Paris cand-{sample}"})
    return Trajectory("t9", sample, messages, answer=f"Paris cand-{sample}")


def names_good(prompt: str) -> Reply:
    """A comparing judge without position bias: the label of the attempt marked GOOD."""
    attempts = re.findall(r"^=== Attempt (\w+) ===\n(.*?)(?=^=== )", prompt, re.DOTALL | re.MULTILINE)
    label = next((lab for lab, body in attempts if "GOOD" in body), attempts[0][0])
    return text(f"Attempt {label} is backed by evidence.\n```json\n{json.dumps({'best': label, 'reason': 'ok'})}\n```")


def compare(srv, call, cache=None):
    async def go():
        async with LLMClient("openai/judge", api_base=srv.base_url, api_key_env=FAKE_KEY_ENV, cache=cache,
                             backoff_base_s=0.01, timeout=5.0, max_attempts=1) as client:
            return await call(client)
    return asyncio.run(go())


def test_listwise_maps_every_order_back_to_the_right_sample(tmp_path):
    candidates = [attempt(s, good=(s == 2)) for s in (5, 2, 7, 0)]  # any order, any sample numbers
    cache = ResponseCache(cache_dir=tmp_path)
    with server(lambda body: answer(0), names_good) as srv:
        verdict = compare(srv, lambda c: bon.listwise(candidates, ListwiseJudge(c, "cmp"), permutations=3),
                          cache=cache)
        assert srv.count == 3  # one call per order
        again = compare(srv, lambda c: bon.listwise(candidates, c, permutations=3), cache=cache)
        assert srv.count == 3  # a rerun (here through a plain client) is served by the cache
        shown = srv.requests[0].body["messages"][0]["content"]
    assert verdict.pick == 2 and verdict.votes == {2: 3} and not verdict.failed
    assert again.pick == 2 and again.cache_hits == 3
    assert "Capital of France?" in shown  # the question defaults to the candidates' first user message


def test_pairwise_and_a_result_as_candidates():
    async def agent(task, sample):
        return attempt(sample, good=(sample == 3))

    async def judge(t):
        return Judgement("j", {i: 1 for i in t.step_indices}, final_label=1)

    result = asyncio.run(bon.best_of_n(Task("t9", "Capital of France, really?"), agent, judge, n=4))
    assert result.index == 0  # every candidate ties under two_stage: the lowest sample
    with server(lambda body: answer(0), names_good) as srv:
        verdict = compare(srv, lambda c: bon.pairwise(result, c))
        shown = srv.requests[0].body["messages"][0]["content"]
        assert srv.count == 3  # a knockout of 4 takes 3 matches
    assert verdict.pick == 3 and verdict.votes[3] == 2
    assert "Capital of France, really?" in shown  # a Result brings its task's question


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_one_line():
    async def agent(task, sample):
        return Trajectory("other", sample)

    async def judge(t):
        return Judgement("j")

    cases = [
        (lambda: bon.best_of_n(TASK, agent, judge, n=0), "n must be an integer >= 1, got 0"),
        (lambda: bon.best_of_n(42, agent, judge), "task must be a bon.types.Task or a non-empty question"),
        (lambda: bon.best_of_n(TASK, agent, judge, n=2), "agent returned a trajectory of task 'other' sample 0 "
                                                         "when asked for task 't1' sample 0"),
        (lambda: bon.best_of_n(TASK, lambda t, s: "text", judge), "agent returned str 'text' for sample 0"),
        (lambda: bon.best_of_n(TASK, agent, judge, selector="nope"), "unknown selector 'nope'; valid choices: .*"
                                                                     "two_stage"),
        (lambda: bon.best_of_n(TASK, agent, judge, selector=listwise_selector()),
         "needs a comparing judge's verdict; pick with `await bon.listwise"),
        (lambda: bon.best_of_n(TASK, agent, "judge"), "judge must be a bon LLMJudge or a callable"),
        (lambda: bon.listwise(["a"], judge=None), "every candidate must be a bon.types.Trajectory, got str"),
        (lambda: bon.listwise([attempt(0)], judge=object()), "judge must be a ListwiseJudge, PairwiseJudge"),
        (lambda: bon.listwise([], judge=ListwiseJudge(LLMClient("openai/x"), "c")), "needs at least one candidate"),
    ]
    for call, message in cases:
        with pytest.raises(BonError, match=message) as err:
            asyncio.run(call())
        assert "\n" not in str(err.value)


def listwise_selector():
    return selectors.from_config({"name": "listwise", "verdicts": "listwise"})


def test_a_selector_returning_a_bad_position_is_refused():
    async def agent(task, sample):
        return Trajectory(task.id, sample)

    async def judge(t):
        return Judgement("j")

    with pytest.raises(BonError, match=r"selector <lambda> returned 7; it must return a position 0..1"):
        asyncio.run(bon.best_of_n(TASK, agent, judge, selector=lambda rows: 7, n=2))


# --------------------------------------------------------------------------- import cost


def test_import_bon_stays_light_and_plain_callables_need_no_litellm():
    code = """
import sys, asyncio, bon
assert "litellm" not in sys.modules and "bon.api" not in sys.modules and "polars" not in sys.modules
from bon.types import Judgement, Trajectory
async def agent(task, sample):
    return Trajectory(task.id, sample, ({"role": "assistant", "content": "x"},), answer=str(sample))
async def judge(t):
    return Judgement("j", {0: 1}, final_label=1 if t.sample == 1 else -1)
print(asyncio.run(bon.best_of_n("q?", agent, judge, n=3)).answer, "litellm" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "False"]


# --------------------------------------------------------------------------- the README example


def readme_example() -> str:
    """The first python block under the README's 'Best-of-N, search and list-wise from Python' heading."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("### Best-of-N, search and list-wise from Python", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def local_model(body: dict) -> Reply:
    """One local model plays every part, as a single vLLM server would: the agent (requests with tools)
    answers 391 on even seeds and 390 on odd ones; the judges prefer 391."""
    if body.get("tools"):
        seed = body.get("seed") or 0
        return tool_call("final_answer", {"answer": "391" if seed % 2 == 0 else "390"})
    prompt = body["messages"][-1]["content"]
    if "=== Attempt" in prompt:
        attempts = re.findall(r"^=== Attempt (\w+) ===\n(.*?)(?=^=== )", prompt, re.DOTALL | re.MULTILINE)
        label = next(lab for lab, b in attempts if "391" in b)
        return text(f"```json\n{json.dumps({'best': label, 'reason': 'checked'})}\n```")
    good = "391" in prompt.split("Transcript")[1]
    return verdict({int(i): 1 if good else -1 for i in STEP.findall(prompt)}, 1 if good else -1)


def test_the_readme_example_runs_against_a_local_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BON_CACHE_DIR", str(tmp_path))
    code = readme_example()
    assert "http://127.0.0.1:8000/v1" in code and len(code.strip().splitlines()) <= 20
    with FakeLLMServer(local_model) as srv:
        exec(compile(code.replace("http://127.0.0.1:8000/v1", srv.base_url), "README.md", "exec"), {})
        first = capsys.readouterr().out
        sent = srv.count
        exec(compile(code.replace("http://127.0.0.1:8000/v1", srv.base_url), "README.md", "exec"), {})
        assert srv.count == sent  # the example's cache makes a rerun free
    again = capsys.readouterr().out
    assert "answer '391'" in first and "8 calls" in first
    assert "(8 cached)" in again  # the same pick and compute, every call from the cache
    assert re.sub(r"\(\d+ cached\)", "", again) == re.sub(r"\(\d+ cached\)", "", first)

"""`selector=listwise` / `selector=pairwise` end to end: `python -m bon.run` against a loopback server.

The scripted step judge is fooled (every step +1, every answer a success), so two_stage can only take
the first sample, which is wrong; the scripted comparing judge reads the attempts it is shown and names
the one whose final answer is right. The list-wise pick must therefore win, its calls be counted, a
failed verdict fall back to two_stage (counted), and a rerun cost nothing.
"""
from __future__ import annotations

import json
import re

import pytest
from llm_server import FakeLLMServer, text, tool_call, verdict
from test_live import run_live

COMPARE = "You will compare"


def agent_or_judge(body: dict, garbage_for: str | None = None) -> object:
    messages = body["messages"]
    if body.get("tools"):  # the agent: even seeds (sample 0 first) answer wrongly
        if not any(m["role"] == "tool" for m in messages):
            return tool_call("calculator", {"expression": "2+3"})
        return tool_call("final_answer", {"answer": "6" if (body.get("seed") or 0) % 2 == 0 else "5"})
    prompt = messages[-1]["content"]
    if prompt.startswith(COMPARE):
        if garbage_for and garbage_for in prompt:
            return text("I cannot decide.")
        blocks = re.split(r"^=== Attempt (\S+) ===$", prompt.split("=== End of attempts ===")[0], flags=re.M)
        right = next(label for label, body_ in zip(blocks[1::2], blocks[2::2]) if "Final answer: 5" in body_)
        return text(f'Attempt {right} is backed by its tool result.\n```json\n{{"best": "{right}", "reason": "ok"}}\n```')
    steps = [int(line[1:line.index("]")]) for line in prompt.splitlines()
             if line.startswith("[") and "] assistant" in line]
    return verdict({s: 1 for s in steps}, 1)  # fooled: everything looks right


def compare_requests(server: FakeLLMServer) -> int:
    return sum(r.body["messages"][-1]["content"].startswith(COMPARE) for r in server.requests
               if not r.body.get("tools"))


@pytest.fixture()
def server():
    with FakeLLMServer(agent_or_judge) as s:
        yield s


def test_listwise_picks_what_the_fooled_step_judge_cannot_and_a_rerun_is_free(tmp_path, server):
    baseline = run_live(tmp_path, server, "selector=two_stage", out="two_stage")
    assert baseline.returncode == 0, baseline.stderr
    assert json.loads((tmp_path / "two_stage" / "summary.json").read_text())["accuracy"] == 0.0
    before = compare_requests(server)
    assert before == 0

    proc = run_live(tmp_path, server, "selector=listwise", "judge.permutations=3", out="listwise")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "listwise" / "summary.json").read_text())
    assert summary["selector"] == "listwise" and summary["accuracy"] == 1.0
    selection = summary["usage"]["selection"]
    assert compare_requests(server) == 6 == selection["calls"]  # 2 tasks x 3 orders
    assert (selection["kind"], selection["tasks"], selection["failed"], selection["fell_back"]) == ("listwise", 2, 0, 0)
    verdicts = [json.loads(line) for line in (tmp_path / "listwise" / "verdicts.jsonl").read_text().splitlines()]
    assert sorted(v["task_id"] for v in verdicts) == ["t0", "t1"]
    for v in verdicts:  # every order's vote went to a right answer (odd samples), mapped back through the orders
        assert v["pick"] % 2 == 1 and sum(v["votes"].values()) == 3 and all(int(s) % 2 == 1 for s in v["votes"])
    assert "listwise verdicts: 2 tasks" in proc.stdout and "0 tasks decided by two_stage" in proc.stdout

    made = server.count
    again = run_live(tmp_path, server, "selector=listwise", "judge.permutations=3", out="again")
    assert again.returncode == 0, again.stderr
    assert server.count == made  # generation, judging and the comparisons all come from the cache
    assert json.loads((tmp_path / "again" / "summary.json").read_text())["accuracy"] == 1.0


def test_a_failed_verdict_falls_back_to_two_stage_and_is_counted(tmp_path):
    with FakeLLMServer(lambda body: agent_or_judge(body, garbage_for="Attempt")) as server:
        proc = run_live(tmp_path, server, "selector=pairwise")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    selection = summary["usage"]["selection"]
    assert (selection["kind"], selection["failed"], selection["fell_back"]) == ("pairwise", 2, 2)
    assert selection["calls"] == 2 * 3  # a knockout of 4 candidates is 3 matches per task
    assert summary["accuracy"] == 0.0  # two_stage's pick: the first sample, never a guessed verdict
    assert "2 tasks decided by two_stage (2 verdicts failed" in proc.stdout


def test_listwise_without_trajectories_is_one_line(tmp_path):
    from commands import run_in_process

    # recorded judgements without their trajectories (dataset=sim has a simulated comparing judge: bon.sim.listwise)
    proc = run_in_process("bon.run", "selector=listwise", "dataset=agentprocessbench", f"hydra.run.dir={tmp_path / 'o'}",
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "selector=listwise" in proc.stderr
    assert "dataset=agentprocessbench" in proc.stderr

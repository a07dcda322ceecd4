"""`generator.search=...` end to end: `python -m bon.run` searches step by step with the run's judge on a
loopback server, then judges, selects and prices the method per task beside plain Best-of-N."""
from __future__ import annotations

import json

import pytest
from llm_server import FakeLLMServer
from test_live import responder, run_live


def judged_by_prefix(server) -> int:
    return sum("have not run" in (r.body["messages"][-1]["content"] or "") for r in server.requests
               if not r.body.get("tools"))


def agent_requests(server) -> int:
    return sum(bool(r.body.get("tools")) for r in server.requests)


@pytest.mark.parametrize("method", ["stepwise", "dvts"])
def test_search_keeps_the_steps_the_judge_approves_and_prices_them(tmp_path, method):
    (tmp_path / "p").mkdir()
    (tmp_path / "s").mkdir()
    with FakeLLMServer(responder) as server:
        plain = run_live(tmp_path / "p", server, "generator.n=2", out="plain")
        assert plain.returncode == 0, plain.stderr
        plain_agent = agent_requests(server)
        server.reset()
        proc = run_live(tmp_path / "s", server, f"generator.search={method}", "generator.search_k=2",
                        "generator.n=2", out="search")
        assert proc.returncode == 0, proc.stderr
        made, searched = server.count, agent_requests(server) + judged_by_prefix(server)
        again = run_live(tmp_path / "s", server, f"generator.search={method}", "generator.search_k=2",
                         "generator.n=2", out="again")
        assert again.returncode == 0, again.stderr
        assert server.count == made  # the search, its judge and the final judging all come from the cache
    plain_summary = json.loads((tmp_path / "p" / "plain" / "summary.json").read_text())
    summary = json.loads((tmp_path / "s" / "search" / "summary.json").read_text())
    trajectories = [json.loads(line) for line in (tmp_path / "s" / "search" / "trajectories.jsonl").read_text().splitlines()]
    assert len(trajectories) == 4 and all(t["success"] for t in trajectories)  # every wrong final step was discarded
    assert plain_summary["random"] == 0.5 and summary["random"] == 1.0
    assert all(t["metadata"]["search"]["method"] == method for t in trajectories)
    compute, plain_compute = summary["compute"], plain_summary["compute"]
    assert compute["method"].startswith(f"{method} k=2 n=2") and plain_compute["method"] == "two_stage"
    assert plain_compute["stages"]["generation"]["calls"] == plain_agent == 8  # 2 tasks x 2 samples x 2 steps
    assert plain_compute["stages"]["judging"]["calls"] == 4
    assert plain_compute["per_sample"]["tokens"] * 2 == pytest.approx(plain_compute["per_task"]["tokens"])
    # the search's cost counts every candidate and prefix judgement, also those the cache or a twin answered
    assert compute["stages"]["generation"]["calls"] >= searched > 0
    assert compute["per_task"]["tokens"] > plain_compute["per_task"]["tokens"]
    rerun = json.loads((tmp_path / "s" / "again" / "summary.json").read_text())["compute"]
    assert rerun["per_task"] == compute["per_task"]  # the method's cost, not what this run spent
    assert f"compute ({method} k=2 n=2" in proc.stdout


def test_search_with_an_intervention_is_one_line(tmp_path):
    with FakeLLMServer(responder) as server:
        proc = run_live(tmp_path, server, "generator.search=beam", "intervention=reflect")  # in this process
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "generator.search=beam cannot be combined with intervention=reflect" in proc.stderr

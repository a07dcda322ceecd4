"""Compute-matched comparison: several methods on the same tasks, one `python -m bon.report`, one table and
one plot of accuracy against tokens per task."""
from __future__ import annotations

import json

import pytest
from commands import run_in_process
from llm_server import FakeLLMServer
from test_listwise_run import agent_or_judge
from test_live import run_live

METHODS = {"plain": ["selector=two_stage"], "listwise": ["selector=listwise", "judge.permutations=2"],
           "stepwise": ["selector=two_stage", "generator.search=stepwise", "generator.search_k=2"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods")
    with FakeLLMServer(agent_or_judge) as server:
        for name, overrides in METHODS.items():
            proc = run_live(root, server, *overrides, out=f"runs/{name}")
            assert proc.returncode == 0, proc.stderr
    return root / "runs"


def test_every_method_reports_its_cost_per_task(runs):
    computes = {name: json.loads((runs / name / "summary.json").read_text())["compute"] for name in METHODS}
    plain, listwise, stepwise = computes["plain"], computes["listwise"], computes["stepwise"]
    # list-wise is the plain run's samples and judging plus its comparisons: 2 tasks x 2 orders
    assert listwise["stages"]["selection"]["calls"] == 4 and "selection" not in plain["stages"]
    assert listwise["stages"]["generation"] == plain["stages"]["generation"]  # same samples, from the cache
    assert listwise["per_task"]["tokens"] == pytest.approx(
        plain["per_task"]["tokens"] + listwise["stages"]["selection"]["tokens"] / 2)
    assert "per_sample" in plain and "per_sample" not in listwise  # a verdict over all N is no curve
    assert stepwise["stages"]["generation"]["calls"] > plain["stages"]["generation"]["calls"]


def test_the_report_puts_methods_side_by_side(runs):
    proc = run_in_process("bon.report", str(runs), cwd=runs)
    assert proc.returncode == 0, proc.stderr
    md = (runs / "report.md").read_text()
    section = md.split("## Accuracy against compute")[1]
    for method in ("two_stage", "listwise", "stepwise k=2 n=4 · two_stage"):
        assert f"| {method} |" in section
    assert (runs / "report_compute.png").stat().st_size > 10_000

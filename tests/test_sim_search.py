"""The simulator's step-level search (bon.sim.search) and comparing judge (bon.sim.listwise)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from commands import run_in_process

from bon.datasets import sim as sim_dataset
from bon.evaluate import evaluate
from bon.selectors import SELECTORS, from_config
from bon.sim import listwise, model
from bon.sim import search as sim_search

CONF = Path(__file__).resolve().parents[1] / "conf"
DATASET = yaml.safe_load((CONF / "dataset" / "sim.yaml").read_text()) | {"n_tasks": 4000}
JUDGE = {k: v for k, v in yaml.safe_load((CONF / "judge" / "sim.yaml").read_text()).items() if k != "defaults"}
GENERATOR = {k: v for k, v in yaml.safe_load((CONF / "generator" / "sim.yaml").read_text()).items()
             if k != "defaults"}
PERFECT = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
RANDOM = [[1 / 3] * 3] * 3
LISTWISE = from_config({"name": "listwise", "verdicts": "listwise", "fallback": "two_stage"})
PAIRWISE = from_config({"name": "pairwise", "verdicts": "pairwise", "fallback": "two_stage"})


def _profile(name: str = "gaia_dev") -> model.Profile:
    return sim_dataset.profile(DATASET | {"profile": name})


def _judge(confusion=PERFECT, fail_rate=0.0) -> model.JudgeModel:
    return model.JudgeModel("j", confusion, orm_tpr=0.8, orm_fpr=0.2, fail_rate=fail_rate)


def _success_rate(method: str, confusion, k: int = 4, n: int = 4, memory: float = 0.5, seed: int = 0,
                  tasks: int = 5000) -> float:
    prof, rng = _profile(), np.random.default_rng(seed)
    found = sim_search.search(prof, model.sample_tasks(prof, tasks, rng), method, n, k, _judge(confusion), rng,
                              track_memory=memory)
    return float(found.trajectories.success.mean())


def _plain_success_rate(n: int = 4, seed: int = 0, tasks: int = 5000) -> float:
    prof, rng = _profile(), np.random.default_rng(seed)
    return float(model.generate(prof, model.sample_tasks(prof, tasks, rng), n, rng).success.mean())


@pytest.mark.parametrize("name", ["gaia_dev", "tau2"])
def test_the_length_distribution_is_the_samplers(name):
    chain = _profile(name).off_track
    drawn = chain.lengths(np.random.default_rng(0), 200_000)
    top = int(drawn.max())
    pmf = sim_search.length_pmf(chain, top)
    assert pmf.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(pmf, np.bincount(drawn, minlength=top + 1) / drawn.size, atol=0.004)


@pytest.mark.parametrize("memory", [0.0, 1.0])
def test_one_candidate_per_step_is_the_whole_trajectory_model(memory):
    """k=1 proposes one step and keeps it: the step-by-step telling must give the same attempts."""
    prof = _profile()
    rng = np.random.default_rng(1)
    task_p = model.sample_tasks(prof, 20_000, rng)
    plain = model.generate(prof, task_p, 2, rng)
    stepped = sim_search.search(prof, task_p, "stepwise", 2, 1, _judge(), rng, track_memory=memory).trajectories
    assert stepped.success.mean() == pytest.approx(plain.success.mean(), abs=0.012)
    assert stepped.lengths.mean() == pytest.approx(plain.lengths.mean(), rel=0.03)
    for state in range(3):
        share = [np.mean(t.labels[t.labels != model.PAD] == state) for t in (plain, stepped)]
        assert share[0] == pytest.approx(share[1], abs=0.01)


@pytest.mark.parametrize("method", ["stepwise", "dvts", "beam"])
def test_search_with_a_perfect_judge_beats_sampling_and_with_a_random_judge_does_not(method):
    plain = _plain_success_rate()
    assert _success_rate(method, PERFECT) > plain + 0.15
    assert _success_rate(method, PERFECT, memory=1.0) > plain + 0.03  # even when a step cannot change the track
    if method != "beam":  # a random judge keeps a random candidate: the same attempt as no search
        assert _success_rate(method, RANDOM) == pytest.approx(plain, abs=0.02)


def _run(generator=None, judge=None, selector=None, seed=0, tasks=2000):
    return sim_dataset.run(DATASET | {"n_tasks": tasks}, GENERATOR | (generator or {}), JUDGE | (judge or {}),
                           seed, selector)


def _tokens_of_steps(steps: np.ndarray, per_step: int, base: int) -> int:
    """Independent count: a call proposing step t reads the transcript so far and writes one step."""
    return int(sum(base + per_step * (t + 1) for length in steps for t in range(length)))


@pytest.mark.parametrize("method,k,n", [("stepwise", 3, 2), ("dvts", 2, 4), ("beam", 4, 3)])
def test_search_compute_follows_the_definitions(method, k, n):
    """Every step of every finished trajectory was chosen from k proposals, each proposed and judged once."""
    table, usage = _run({"search": method, "search_k": k, "n": n}, tasks=300)
    steps = table["n_steps"].to_numpy()
    stages = usage["compute"]["stages"]
    assert stages["generation"]["calls"] == 2 * k * steps.sum()  # agent calls + judge calls
    assert usage["simulation"]["search"]["agent_calls"] == k * steps.sum()
    base, per = GENERATOR["prompt_tokens"], GENERATOR["step_tokens"]
    agent = k * _tokens_of_steps(steps, per, base)
    judge = k * sum(JUDGE["overhead_tokens"] + base + per * (t + 1) for length in steps for t in range(length))
    assert stages["generation"]["tokens"] == agent + judge
    assert stages["judging"]["calls"] == table.height == 300 * n
    assert usage["compute"]["per_task"]["calls"] == pytest.approx((2 * k * steps.sum() + table.height) / 300)
    assert ("per_sample" in usage["compute"]) == (method != "beam")


def test_plain_sampling_compute_is_one_call_a_step_and_one_judgement_a_trajectory():
    table, usage = _run(tasks=300)
    steps = table["n_steps"].to_numpy()
    stages = usage["compute"]["stages"]
    assert stages["generation"] == {"calls": steps.sum(), "usd": None,
                                    "tokens": _tokens_of_steps(steps, GENERATOR["step_tokens"],
                                                               GENERATOR["prompt_tokens"])}
    assert stages["judging"]["calls"] == table.height
    per_sample = usage["compute"]["per_sample"]["tokens"]
    assert per_sample * table.height == pytest.approx(stages["generation"]["tokens"] + stages["judging"]["tokens"])


def _accuracy(table, selector) -> tuple[float, float]:
    _, rows = evaluate(selector, table, "sim", "gaia_dev", resamples=200)
    return rows[0].accuracy, rows[0].pass_at_n


@pytest.mark.parametrize("selector", [LISTWISE, PAIRWISE])
def test_a_perfect_comparing_judge_reaches_pass_at_n(selector):
    table, usage = _run(judge={"listwise_accuracy": 1.0, "fail_rate": 0.0}, selector=selector)
    accuracy, pass_at_n = _accuracy(table, selector)
    assert accuracy == pass_at_n < 1.0
    assert usage["simulation"]["selection"]["fell_back"] == 0


def test_a_fully_position_biased_judge_always_picks_the_first_candidate():
    table, _ = _run(judge={"listwise_accuracy": 1.0, "position_bias": 1.0, "permutations": 1}, selector=LISTWISE)
    picked = table.filter(table["listwise_pick"] == 1)
    assert picked.height == 2000 and (picked["sample"] == 0).all()


def test_permutations_reduce_position_bias():
    success = np.zeros((20_000, 8), dtype=bool)
    success[:, 5] = True  # the first shown (sample 0) is wrong, one other is right
    first, right = [], []
    for permutations in (1, 5):
        judge = listwise.ComparingJudge(accuracy=0.9, position_bias=0.5, permutations=permutations)
        pick = listwise.listwise(judge, success, np.random.default_rng(2)).pick
        first.append(np.mean(pick == 0))
        right.append(np.mean(pick == 5))
    assert first[0] > 0.45 and first[1] < first[0] / 2
    assert right[1] > right[0] + 0.1


def test_failed_verdicts_fall_back_and_are_counted():
    table, usage = _run(judge={"fail_rate": 1.0}, selector=LISTWISE, tasks=500)
    tally = usage["simulation"]["selection"]
    assert (tally["tasks"], tally["failed"], tally["fell_back"], tally["fallback"]) == (500, 500, 500, "two_stage")
    assert table["listwise_pick"].null_count() == table.height  # a failed verdict is never a pick
    assert _accuracy(table, LISTWISE)[0] == _accuracy(table, SELECTORS["two_stage"])[0]


def test_the_comparing_judge_sees_the_same_candidates_as_a_score_based_selector():
    plain, _ = _run(seed=4, tasks=500)
    compared, _ = _run(seed=4, tasks=500, selector=LISTWISE)
    assert compared.drop("listwise_pick").equals(plain)


def test_default_accuracy_is_as_discriminating_as_the_orm():
    judge = sim_dataset.comparing_judge(JUDGE, sim_dataset.judge_model(JUDGE, "gaia_dev"))
    assert 0.8 < judge.accuracy < 0.95
    assert listwise.ComparingJudge.accuracy_from_orm(0.5, 0.5) == pytest.approx(0.5)


@pytest.mark.parametrize("generator,selector", [({"search": "beam"}, None), ({"search": "dvts"}, PAIRWISE),
                                                ({}, LISTWISE)])
def test_same_seed_same_run_other_seed_other_run(generator, selector):
    a, usage_a = _run(generator, selector=selector, seed=3, tasks=300)
    b, usage_b = _run(generator, selector=selector, seed=3, tasks=300)
    c, _ = _run(generator, selector=selector, seed=4, tasks=300)
    assert a.equals(b) and usage_a == usage_b and not a.equals(c)


def _bon_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return run_in_process("bon.run", *args, "dataset.n_tasks=300", "bootstrap_resamples=200",
                          f"hydra.run.dir={tmp_path}", env=env, cwd=tmp_path)  # in this process: commands.py


@pytest.mark.parametrize("args,method", [(("generator.search=beam",), "beam k=4 n=8 · two_stage"),
                                         (("selector=listwise", "judge.permutations=3"), "listwise")])
def test_the_command_runs_search_and_listwise_out_of_the_box(tmp_path, args, method):
    proc = _bon_run(tmp_path, *args)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["compute"]["method"] == method and summary["compute"]["per_task"]["calls"] > 0
    assert summary["synthetic"] is True
    assert "simulated" in proc.stdout and f"compute ({method})" in proc.stdout


def test_an_out_of_range_option_is_one_line(tmp_path):
    proc = _bon_run(tmp_path, "generator.search=beam", "generator.track_memory=1.5")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "generator.track_memory" in proc.stderr

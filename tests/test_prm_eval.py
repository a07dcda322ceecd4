"""StepAcc / FirstErrAcc on the recorded judges must reproduce the AgentProcessBench paper's Table 3."""
from __future__ import annotations

import polars as pl
import pytest

from bon import prm_eval
from bon.metrics import PrmScore
from bon.types import Judgement

# Table 3 of arXiv 2603.14465 (percent): hotpotqa, gaia_dev, bfcl, tau2, avg as (StepAcc, FirstErrAcc).
PAPER = {
    "GPT-5.2": [(72.1, 69.6), (66.3, 54.4), (71.6, 52.8), (70.3, 56.4), (70.1, 58.3)],
    "DeepSeek-V3.2": [(74.4, 65.2), (61.8, 48.0), (74.1, 50.0), (73.3, 57.6), (71.4, 55.2)],
    "Qwen3-30B-A3B-Thinking-2507": [(70.0, 64.8), (53.1, 46.4), (73.2, 35.2), (71.8, 61.6), (68.5, 52.0)],
}
SUBSETS = ["hotpotqa", "gaia_dev", "bfcl", "tau2", "avg"]


@pytest.fixture(scope="module")
def frame(apb_root) -> pl.DataFrame:
    scores = prm_eval.score({"name": "agentprocessbench", "subset": "all", "root": str(apb_root)},
                            {"kind": "replay", "name": "all"})
    return prm_eval.to_frame(scores)


@pytest.mark.parametrize("judge", PAPER)
def test_reproduces_paper_table3(frame, judge):
    rows = {r["subset"]: r for r in frame.filter(pl.col("judge") == judge).iter_rows(named=True)}
    for subset, (step_acc, first_err) in zip(SUBSETS, PAPER[judge]):
        assert abs(rows[subset]["step_acc"] - step_acc) <= 0.1, (judge, subset)
        assert abs(rows[subset]["first_err_acc"] - first_err) <= 0.1, (judge, subset)


def test_every_judge_and_step_is_counted(frame):
    assert frame["judge"].n_unique() == 15
    avg = frame.filter(pl.col("subset") == "avg")
    # 8,509 human-labelled steps and 1,000 trajectories in the benchmark, none dropped
    assert set(avg["n_steps"]) == {8509}
    assert set(avg["n_trajectories"]) == {1000}
    # the failed calls in the release (comment llm_annotate_failed:) are counted, not dropped
    llama = avg.filter(pl.col("judge") == "Llama-3.2-3B-Instruct").row(0, named=True)
    assert llama["n_failed"] == 98


def test_judge_slug_and_stripped_names_resolve(apb_root):
    for name in ("GPT-5.2-Thinking (medium)", "gpt-5.2-thinking-medium"):
        scores = prm_eval.score({"name": "agentprocessbench", "subset": "hotpotqa", "root": str(apb_root)},
                                {"kind": "replay", "name": name})
        assert list(scores) == ["GPT-5.2-Thinking (medium)"]


def test_human_judge_is_perfect(apb_root):
    scores = prm_eval.score({"name": "agentprocessbench", "subset": "all", "root": str(apb_root)}, {"kind": "human"})
    pooled = scores["human"]["avg"]
    assert pooled.step_acc == 1.0 and pooled.first_err_acc == 1.0


def test_failed_and_missing_predictions_are_mismatches():
    human = Judgement("human", {2: 1, 4: 1}, 1)
    score = PrmScore()
    # a failed judgement with no -1 would "match" a human trajectory with no -1 if it were not a mismatch
    score.add([2, 4], human, Judgement("j", {2: None, 4: None}, None, status="failed", reason="timeout"))
    score.add([2, 4], human, Judgement("j", {2: 1}, 1))  # step 4 missing: its first error is unknown
    score.add([2, 4], human, Judgement("j", {2: 1, 4: 1}, 1))
    assert score.n_steps == 6 and score.n_step_correct == 3
    assert score.n_first_error_correct == 1  # only the fully labelled trajectory
    assert score.n_failed == 1
    assert score.confusion[2].tolist() == [0, 0, 3, 3]  # human +1: three +1, three missing
    later = PrmScore()  # a -1 before any gap fixes the first error even if later steps are unlabelled
    later.add([2, 4, 6], Judgement("human", {2: 1, 4: -1, 6: -1}, -1), Judgement("j", {2: 1, 4: -1}, -1))
    assert later.n_first_error_correct == 1


def test_first_error_compares_index_of_first_minus_one():
    human = Judgement("human", {2: 1, 4: -1, 6: -1}, -1)
    early, same = PrmScore(), PrmScore()
    early.add([2, 4, 6], human, Judgement("j", {2: -1, 4: -1, 6: -1}, -1))
    same.add([2, 4, 6], human, Judgement("j", {2: 0, 4: -1, 6: 1}, -1))
    assert early.first_err_acc == 0.0
    assert same.first_err_acc == 1.0


def test_prm_eval_command_writes_csv(apb_root, tmp_path):
    import subprocess, sys, os
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "bon.prm_eval", "dataset=agentprocessbench", f"dataset.root={apb_root}", "judge.name=GPT-5.2",
                           f"hydra.run.dir={out}"], capture_output=True, text=True, cwd=tmp_path, env=os.environ)
    assert proc.returncode == 0, proc.stderr
    csv = pl.read_csv(out / "prm_eval.csv")
    assert csv.columns == ["judge", "subset", "step_acc", "first_err_acc", "n_steps", "n_trajectories", "n_failed"]
    assert csv.filter(pl.col("subset") == "avg")["step_acc"].item() == pytest.approx(70.1, abs=0.1)
    assert "Confusion" in proc.stdout


def test_released_trajectories_address_steps_by_assistant_message_index(apb_root):
    from bon.datasets import agentprocessbench as apb

    trajectories = apb.trajectories(apb_root)
    records = {r.record_id: r for r in apb.load_records(apb_root, "hotpotqa")}
    assert len(trajectories) == len(records) == 250
    for record_id, trajectory in trajectories.items():
        # every assistant message is one human-labelled step, keyed by its absolute index
        assert trajectory.step_indices == list(records[record_id].steps)
        assert trajectory.success == records[record_id].success
        assert records[record_id].answer == trajectory.answer

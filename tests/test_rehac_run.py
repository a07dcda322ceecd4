"""`python -m bon.run dataset=rehac` end to end on ReHAC's released data, and its errors on bad options."""
from __future__ import annotations

import ast
import csv
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from commands import run_in_process

from bon.errors import BonError
from bon.rehac import metrics
from bon.rehac.report import locate_root

TEST_TREE = "strategyqa/test_data/localgpt_test100.jsonl"
TRAINED_FILE = "strategyqa/results/strategyqa_lambda0.08.jsonl"


def bon_run(*args: str, cwd: Path, importtime: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, "-m", "bon.run", *args], capture_output=True, text=True,
                          cwd=cwd, env=env)


def bon_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`bon_run` in this process (commands.py): the same exit code and stderr, without an interpreter start."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return run_in_process("bon.run", *args, cwd=cwd, env=env)


@pytest.fixture(scope="module")
def run(rehac_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("rehac") / "out"
    proc = bon_run("dataset=rehac", "bootstrap_resamples=1000", f"hydra.run.dir={out}", cwd=out.parent,
                   importtime=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc, json.loads((out / "summary.json").read_text())


def _never_t_from_raw(path: Path) -> float:
    """T of the agent-alone episode of every question, read straight from the JSON (no bon parser)."""
    alone = defaultdict(list)
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if "<solver> human" not in record["trajectory"]:
            alone[record["idx"]].append(record["em"])
    assert all(len(v) == 1 for v in alone.values())
    return sum(v[0] for v in alone.values()) / len(alone)


def _never_t_from_tree(path: Path) -> float:
    """T of the agent-alone leaf of every question of a step tree, read straight from the JSON (no bon parser)."""
    tree = json.loads(path.read_text())
    alone = {}
    for key, value in tree.items():
        idx, actors = ast.literal_eval(key)
        if set(actors) == {"0"} and value.startswith("("):
            alone[idx] = ast.literal_eval(value)[1]
    return sum(alone.values()) / len(alone)


def test_summary_and_files(run, rehac_root):
    out, proc, summary = run
    assert not [line for line in proc.stderr.splitlines() if re.search(r"\|\s+litellm\b", line)], \
        "litellm was imported on the offline path"
    assert (summary["kind"], summary["dataset"], summary["reward"], summary["headline_lambda"]) == (
        "rehac_offline", "rehac", "em", 0.08)
    assert summary["lambdas"] == [0.0, 0.02, 0.05, 0.08, 0.1, 0.2]
    train, test = summary["question_sets"]
    assert (train["questions"], train["n_questions"], train["n_episodes"], train["complete_trees"]) == (
        "train", 250, 2420, 250)
    assert (test["questions"], test["n_questions"], test["n_episodes"], test["complete_trees"]) == (
        "test", 100, 956, 100)
    assert train["behaviour"] == test["behaviour"] == "tree" and 0.5 < train["human_step_share"] < 0.55
    expected = ["never", "always", *(f"at_step_{k}" for k in range(1, 6)), "random_0.2", "random_0.4", "random_0.6"]
    for name in ("train", "test"):
        rows = {r["policy"]: r for r in summary["policies"] if r["questions"] == name}
        assert list(rows) == expected
        assert all(r["coverage"] == 1.0 and r["mass"] == pytest.approx(1.0) for r in rows.values())
        assert rows["never"]["c"] == 0 and rows["always"]["intervention_rate"] == 1.0
        for p in (0.2, 0.4, 0.6):  # exact expectation on a tree: the human share of steps is p (Wald's identity)
            assert rows[f"random_{p:g}"]["intervention_rate"] == pytest.approx(p)
        # best fixed policy: the maximum over the fixed rows at each lambda, on the same questions
        for best in (b for b in summary["best_fixed"] if b["questions"] == name):
            top = max(rows.values(), key=lambda r: metrics.r_at(r, best["lambda"])["r"])
            assert best["policy"] == top["policy"]
    train_rows = {r["policy"]: r for r in summary["policies"] if r["questions"] == "train"}
    test_rows = {r["policy"]: r for r in summary["policies"] if r["questions"] == "test"}
    assert train_rows["never"]["t"] == pytest.approx(_never_t_from_raw(rehac_root / "dataset/gpt4/strategyqa.jsonl"))
    assert test_rows["never"]["t"] == pytest.approx(_never_t_from_tree(rehac_root / TEST_TREE))
    # the figures the independent check of issue 12 found on the 100 test questions
    assert round(test_rows["never"]["t"], 3) == 0.600
    assert round(metrics.r_at(test_rows["at_step_3"], 0.08)["r"], 3) == 0.629
    for r in summary["policies"] + [summary["trained"]]:
        for e in r["by_lambda"]:
            assert e["r"] == pytest.approx(r["t"] - e["lambda"] * r["c"])
            assert e["ci_low"] <= e["r"] + 1e-12 and e["r"] <= e["ci_high"] + 1e-12
    assert summary["reference"] == []

    # the oracle picks the best logged episode: no fixed policy and no other selector can beat it
    for name in ("train", "test"):
        bon = defaultdict(dict)
        for r in summary["best_of_n"]:
            if r["questions"] == name:
                bon[r["lambda"]][r["selector"]] = r
        assert set(bon[0.08]) == {"oracle", "majority", "noisy_oracle", "random_pick"}
        for lam, by in bon.items():
            assert all(r["r"] <= by["oracle"]["r"] + 1e-12 for r in by.values())
            assert by["oracle"]["r"] >= next(b["r"] for b in summary["best_fixed"]
                                              if b["lambda"] == lam and b["questions"] == name)

    adv = summary["advantage"]
    assert adv["n_states_both_actors"] == adv["n_states"] == sum(s["n_states"] for s in adv["by_step"])
    with open(out / "advantage.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == adv["n_states_both_actors"]
    with open(out / "policies.csv", newline="") as handle:
        lines = list(csv.DictReader(handle))
    assert len(lines) == 2 * 10 * 6 + 1  # (train + test) x policies x lambdas, then the trained policy at 0.08
    assert {line["questions"] for line in lines} == {"train", "test"}
    trained_lines = [line for line in lines if line["policy"] == "rehac_trained"]
    assert [(line["questions"], float(line["lambda"])) for line in trained_lines] == [("test", 0.08)]
    with open(out / "best_of_n.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 2 * (4 * 6 + 6)  # per set: selectors x lambdas, best_fixed
    assert (out / "reward_vs_lambda.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _trained_r_from_raw(results: Path, lam: float) -> dict[str, float]:
    """R of each trained-policy episode, keyed by its first step's text (no bon parser)."""
    out = {}
    for line in results.read_text().splitlines():
        record = json.loads(line)
        first = record["trajectory"].split("<solver> ")[1].split("\n", 1)[1].strip()
        out[first] = float(record["em"]) - lam * record["trajectory"].count("<solver> human")
    return out


def test_trained_policy_is_compared_on_its_own_questions(run, rehac_root):
    """Each trained episode is matched to its test question; the paired difference is recomputed from the raw
    files: trained R minus the never-policy's (agent-alone leaf) T, per question."""
    _, proc, summary = run
    trained = summary["trained"]
    assert (trained["questions"], trained["n_questions"], trained["n_covered"], trained["coverage"]) == (
        "test", 100, 100, 1.0)
    assert [e["lambda"] for e in trained["by_lambda"]] == [0.08]  # only where it was trained
    assert round(trained["by_lambda"][0]["r"], 3) == 0.611  # README of the release data / issue 12

    tree = json.loads((rehac_root / TEST_TREE).read_text())
    first_step = {}  # (actor, first step's text) -> idx
    alone = {}
    for key, value in tree.items():
        idx, actors = ast.literal_eval(key)
        if len(actors) == 1:
            first_step[(actors, value.strip())] = idx
        if set(actors) == {"0"} and value.startswith("("):
            alone[idx] = ast.literal_eval(value)[1]
    diffs = []
    for line in (rehac_root / TRAINED_FILE).read_text().splitlines():
        record = json.loads(line)
        actor, rest = record["trajectory"].split("<solver> ")[1].split("\n", 1)
        idx = first_step[("1" if actor.strip() == "human" else "0", rest.strip())]
        r = float(record["em"]) - 0.08 * record["trajectory"].count("<solver> human")
        diffs.append(r - alone[idx])
    never = next(p for p in summary["trained_vs_fixed"] if p["policy"] == "never")
    assert never["n_questions"] == 100 and never["diff"] == pytest.approx(sum(diffs) / len(diffs))
    assert never["ci_low"] < never["diff"] < never["ci_high"]
    assert [p["policy"] for p in summary["trained_vs_fixed"]] == [
        r["policy"] for r in summary["policies"] if r["questions"] == "test"]
    assert "trained - policy" in proc.stdout and "rehac_trained" in proc.stdout
    line = next(line for line in proc.stdout.splitlines() if line.startswith("never ") and "[" in line
                and line.count("+") >= 2)
    assert f"{never['diff']:+.3f}" in line


def test_f1_reward_and_rate_weights(rehac_root, tmp_path):
    out = tmp_path / "out"
    proc = run_in_process("bon.run", "dataset=rehac", "dataset.reward=f1", "dataset.behaviour=rate", "dataset.rates=[0.4]",
                          "dataset.reference=[hotpotqa/results/hotpotqa_lambda0.08.jsonl]", "dataset.k_max=1",
                          "dataset.predictors=[majority]", "bootstrap_resamples=100", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [s["behaviour"] for s in summary["question_sets"]] == ["rate", "rate"] and summary["reward"] == "f1"
    rows = {r["policy"]: r for r in summary["policies"] if r["questions"] == "train"}
    assert list(rows) == ["never", "always", "at_step_1", "random_0.4"]
    # importance weights over ~10 episodes per question: the ESS is below the episode count
    assert 250 < rows["random_0.4"]["ess"] < 2420
    # hotpotqa's f1 is graded, so it exceeds its em
    ref = {r["policy"]: r for r in summary["reference"]}
    assert ref["rehac:hotpotqa"]["t"] > 0.37


@pytest.mark.parametrize("override, message", [
    ("dataset.reward=acc", "unknown reward (dataset.reward) 'acc'; valid choices: em, f1"),
    ("dataset.path=/nonexistent/rehac", "dataset.path is /nonexistent/rehac, which is not a directory"),
    ("dataset.predictors=[gpt]", "unknown predictor (dataset.predictors) 'gpt'"),
    ("dataset.lambdas=[-1]", "dataset.lambdas must be a non-empty list of non-negative numbers"),
    ("dataset.episodes=missing.jsonl", "dataset.episodes: no such file"),
    ("dataset.test_episodes=null", "dataset.trained needs dataset.test_episodes"),
    ("dataset.trained=dataset/gpt4/strategyqa.jsonl", "follows no path of localgpt_test100.jsonl"),
])
def test_bad_options_exit_with_a_clear_error(rehac_root, tmp_path, override, message):
    proc = bon_here("dataset=rehac", override, f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_locate_root_fallbacks(tmp_path, monkeypatch):
    (tmp_path / "rehac").mkdir()
    (tmp_path / "apb").mkdir()
    monkeypatch.delenv("BON_REHAC_DIR", raising=False)
    monkeypatch.setenv("BON_DATA_DIR", str(tmp_path / "apb"))
    assert locate_root(None) == tmp_path / "rehac"
    monkeypatch.setenv("BON_REHAC_DIR", str(tmp_path / "elsewhere"))
    with pytest.raises(BonError, match="BON_REHAC_DIR is .*elsewhere, which is not a directory"):
        locate_root(None)
    monkeypatch.delenv("BON_REHAC_DIR")
    monkeypatch.delenv("BON_DATA_DIR")
    # neither set: the verified download, which here cannot connect (tests/test_fetch_rehac.py covers it working)
    monkeypatch.setenv("BON_REHAC_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.setenv("BON_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(BonError, match="set dataset.path=/path/to/ReHAC or the environment variable BON_REHAC_DIR"):
        locate_root(None)


def test_selector_report_skips_rehac_runs_and_says_where_their_tables_are(run, tmp_path):
    from bon.errors import BonError
    from bon.report import collect

    out = run[0]
    with pytest.raises(BonError, match="holds only dataset=rehac runs .*policies.csv"):
        collect(out)


def test_a_judge_needs_question_texts_a_bare_tree_does_not_have(rehac_root, tmp_path):
    """The test tree takes its questions' texts from the trained policy's episodes; without them a judge would
    see no question, so the run stops before any call."""
    proc = bon_here("dataset=rehac", "dataset.trained=null", "dataset.predictors=[judge]", "judge=local",
                    f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "localgpt_test100.jsonl have no text" in proc.stderr and "dataset.trained" in proc.stderr

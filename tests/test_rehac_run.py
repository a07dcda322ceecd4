"""`python -m bon.run dataset=rehac` end to end on ReHAC's released data, and its errors on bad options."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from bon.errors import BonError
from bon.rehac.report import locate_root


def bon_run(*args: str, cwd: Path, importtime: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    flags = ["-X", "importtime"] if importtime else []
    return subprocess.run([sys.executable, *flags, "-m", "bon.run", *args], capture_output=True, text=True,
                          cwd=cwd, env=env)


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


def test_summary_and_files(run, rehac_root):
    out, proc, summary = run
    assert not [line for line in proc.stderr.splitlines() if re.search(r"\|\s+litellm\b", line)], \
        "litellm was imported on the offline path"
    assert (summary["kind"], summary["dataset"], summary["reward"], summary["headline_lambda"]) == (
        "rehac_offline", "rehac", "em", 0.08)
    assert summary["lambdas"] == [0.0, 0.02, 0.05, 0.08, 0.1, 0.2]
    assert (summary["n_questions"], summary["n_episodes"], summary["complete_trees"]) == (250, 2420, 250)
    assert summary["behaviour"] == "tree" and 0.5 < summary["human_step_share"] < 0.55
    names = [r["policy"] for r in summary["policies"]]
    assert names == ["never", "always", *(f"at_step_{k}" for k in range(1, 6)), "random_0.2", "random_0.4",
                     "random_0.6"]
    rows = {r["policy"]: r for r in summary["policies"]}
    assert all(r["coverage"] == 1.0 and r["mass"] == pytest.approx(1.0) for r in rows.values())
    assert rows["never"]["t"] == pytest.approx(_never_t_from_raw(rehac_root / "dataset/gpt4/strategyqa.jsonl"))
    assert rows["never"]["c"] == 0 and rows["always"]["intervention_rate"] == 1.0
    for p in (0.2, 0.4, 0.6):  # exact expectation on a tree: the human share of steps is p (Wald's identity)
        assert rows[f"random_{p:g}"]["intervention_rate"] == pytest.approx(p)
    for r in summary["policies"] + summary["reference"]:
        for e in r["by_lambda"]:
            assert e["r"] == pytest.approx(r["t"] - e["lambda"] * r["c"])
            assert e["ci_low"] <= e["r"] + 1e-12 and e["r"] <= e["ci_high"] + 1e-12
    assert [r["policy"] for r in summary["reference"]] == ["rehac:hotpotqa", "rehac:strategyqa", "rehac:intercode"]
    assert all(r["n_questions"] == 100 and r["kind"] == "reference" for r in summary["reference"])

    # best fixed policy: the maximum over the fixed rows at each lambda
    for best in summary["best_fixed"]:
        top = max(rows.values(), key=lambda r: next(e["r"] for e in r["by_lambda"] if e["lambda"] == best["lambda"]))
        assert best["policy"] == top["policy"]
    # the oracle picks the best logged episode: no fixed policy and no other selector can beat it
    bon = defaultdict(dict)
    for r in summary["best_of_n"]:
        bon[r["lambda"]][r["selector"]] = r
    assert set(bon[0.08]) == {"oracle", "majority", "noisy_oracle", "random_pick"}
    for lam, by in bon.items():
        assert all(r["r"] <= by["oracle"]["r"] + 1e-12 for r in by.values())
        assert by["oracle"]["r"] >= next(b["r"] for b in summary["best_fixed"] if b["lambda"] == lam)

    adv = summary["advantage"]
    assert adv["n_states_both_actors"] == adv["n_states"] == sum(s["n_states"] for s in adv["by_step"])
    with open(out / "advantage.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == adv["n_states_both_actors"]
    with open(out / "policies.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == (10 + 3) * 6
    with open(out / "best_of_n.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == 4 * 6 + 6  # selectors x lambdas, then best_fixed per lambda
    assert (out / "reward_vs_lambda.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_printed_table(run):
    _, proc, summary = run
    at_step_3 = next(r for r in summary["policies"] if r["policy"] == "at_step_3")
    r = next(e["r"] for e in at_step_3["by_lambda"] if e["lambda"] == 0.08)
    line = next(line for line in proc.stdout.splitlines() if line.startswith("at_step_3 "))
    assert f"{r:.3f}" in line and "100.0" in line
    assert "estimator: tree" in proc.stdout and "Best-of-N at λ=0.08" in proc.stdout
    assert "rehac:strategyqa" in proc.stdout and "wrote " in proc.stdout


def test_f1_reward_and_rate_weights(rehac_root, tmp_path):
    out = tmp_path / "out"
    proc = bon_run("dataset=rehac", "dataset.reward=f1", "dataset.behaviour=rate", "dataset.rates=[0.4]",
                   "dataset.k_max=1", "dataset.predictors=[majority]", "bootstrap_resamples=100",
                   f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["behaviour"] == "rate" and summary["reward"] == "f1"
    rows = {r["policy"]: r for r in summary["policies"]}
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
])
def test_bad_options_exit_with_a_clear_error(rehac_root, tmp_path, override, message):
    proc = bon_run("dataset=rehac", override, f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
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
    with pytest.raises(BonError, match="set dataset.path=DIR or BON_REHAC_DIR"):
        locate_root(None)


def test_selector_report_skips_rehac_runs_and_says_where_their_tables_are(run, tmp_path):
    from bon.errors import BonError
    from bon.report import collect

    out = run[0]
    with pytest.raises(BonError, match="holds only dataset=rehac runs .*policies.csv"):
        collect(out)

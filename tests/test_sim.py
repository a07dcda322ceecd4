"""The simulator: calibrated to AgentProcessBench, seeded, and the default `python -m bon.run`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from bon.datasets import sim as sim_dataset
from bon.errors import BonError
from bon.sim import model
from bon.sim.calibrate import judge_config

CONF = Path(__file__).resolve().parents[1] / "conf"
PROFILES = sim_dataset.shipped_profiles()
JUDGE = yaml.safe_load((CONF / "judge" / "sim.yaml").read_text())


def _profile(name: str) -> model.Profile:
    return sim_dataset.profile({"profile": name})


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profiles_reproduce_the_measured_statistics(name):
    rng = np.random.default_rng(3)
    prof = _profile(name)
    trajs = model.generate(prof, model.sample_tasks(prof, 20_000, rng), 5, rng)
    measured = PROFILES[name]["measured"]
    labels = trajs.labels[trajs.labels != model.PAD]
    assert trajs.success.mean() == pytest.approx(measured["success_rate"], abs=0.02)
    assert trajs.success.reshape(-1, 5).any(axis=1).mean() == pytest.approx(measured["pass_at_5"], abs=0.06)
    assert trajs.lengths.mean() == pytest.approx(measured["mean_steps"], rel=0.08)
    for state, share in enumerate(measured["label_share"]):
        assert np.mean(labels == state) == pytest.approx(share, abs=0.04)


def test_a_profile_is_changed_field_by_field_or_added_from_the_command_line():
    from hydra import compose, initialize_config_dir

    from bon.config import conf_dir

    chain = "{initial: [0, 0, 1], transition: [[0, 0, 1], [0, 0, 1], [0, 0, 1]], length_quantiles: [2, 3]}"
    mine = f"{{task_alpha: 1, task_beta: 1, on_track: {chain}, off_track: {chain}}}"
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        changed = compose("config", overrides=["dataset.profile=tau2", "+dataset.profiles.tau2.task_alpha=2",
                                               "+dataset.profiles.tau2.off_track.initial=[0, 0, 1]"])["dataset"]
        added = compose("config", overrides=["dataset.profile=mine", f"+dataset.profiles.mine={mine}"])["dataset"]
    tau2 = sim_dataset.profile(changed)
    assert tau2.task_alpha == 2 and tau2.task_beta == PROFILES["tau2"]["task_beta"]
    assert list(tau2.off_track.initial) == [0, 0, 1]  # the rest of the chain is the shipped one
    np.testing.assert_allclose(tau2.off_track.transition, PROFILES["tau2"]["off_track"]["transition"], atol=1e-3)
    assert sim_dataset.profile({"profile": "tau2"}).task_alpha == PROFILES["tau2"]["task_alpha"] != 2
    own = sim_dataset.profile(added)
    assert (own.task_alpha, list(own.off_track.length_quantiles)) == (1, [2, 3])

    with pytest.raises(BonError, match=r"dataset.profiles.tau2 has no field 'task_alpah'; valid: task_alpha"):
        sim_dataset.profile({"profile": "tau2", "profiles": {"tau2": {"task_alpah": 2}}})  # never ignored
    with pytest.raises(BonError, match=r"dataset.profiles.tau2.on_track has no field 'intial'"):
        sim_dataset.profile({"profile": "tau2", "profiles": {"tau2": {"on_track": {"intial": [0, 0, 1]}}}})
    with pytest.raises(BonError, match=r"dataset.profiles.mine must be a mapping"):
        sim_dataset.profile({"profile": "mine", "profiles": {"mine": 3}})
    with pytest.raises(BonError, match=r"dataset.profiles.mine is missing 'task_beta'"):
        sim_dataset.profile({"profile": "mine", "profiles": {"mine": {"task_alpha": 1}}})


def test_errors_propagate_until_corrected():
    prof = _profile("gaia_dev")
    rng = np.random.default_rng(0)
    trajs = model.generate(prof, np.zeros(20_000), 1, rng)  # every attempt off track
    prev, nxt = trajs.labels[:, :-1], trajs.labels[:, 1:]
    pairs = (prev == 0) & (nxt != model.PAD)
    stay = np.mean(nxt[pairs] == 0)
    assert stay == pytest.approx(prof.off_track.transition[0, 0], abs=0.01)
    # success needs an on-track attempt that does not end on an uncorrected error
    assert not trajs.success.any()


def test_simulated_judge_follows_its_confusion_and_outcome_rates():
    prof = _profile("tau2")
    rng = np.random.default_rng(1)
    trajs = model.generate(prof, model.sample_tasks(prof, 5_000, rng), 4, rng)
    judge = model.JudgeModel("j", JUDGE["confusion"], positive_bias=0.2, orm_tpr=0.9, orm_fpr=0.1)
    predicted, final, failed = model.judge(judge, trajs, rng)
    valid = trajs.labels != model.PAD
    for t in range(3):
        row = np.bincount(predicted[valid][trajs.labels[valid] == t], minlength=3) / np.sum(trajs.labels[valid] == t)
        np.testing.assert_allclose(row, judge.effective_confusion[t], atol=0.01)
    assert np.mean(final[trajs.success] == 1) == pytest.approx(0.9, abs=0.02)
    assert np.mean(final[~trajs.success] == 1) == pytest.approx(0.1, abs=0.02)
    assert not failed.any()


def test_same_seed_same_data_other_seed_other_data():
    cfg = {"profile": "bfcl", "n_tasks": 200, "name": "sim"}
    gen, jcfg = {"kind": "sim", "n": 4, "wrong_answers": 3}, {"kind": "sim", **JUDGE}
    a = sim_dataset.candidate_table(cfg, gen, jcfg, seed=5)
    b = sim_dataset.candidate_table(cfg, gen, jcfg, seed=5)
    c = sim_dataset.candidate_table(cfg, gen, jcfg, seed=6)
    assert a.equals(b) and not a.equals(c)
    assert a.height == 800 and a["task_id"].cast(pl.String).str.starts_with("synthetic:").all()


def test_calibrate_from_matches_the_recorded_judge(apb_root):
    from bon.datasets import agentprocessbench as apb
    from bon.prm_eval import score

    records = list(apb.load_records(apb_root, "gaia_dev"))
    measured = judge_config(apb_root, "GPT-5.2", records)
    pooled = score({"name": "agentprocessbench", "subset": "gaia_dev", "root": str(apb_root)},
                   {"kind": "replay", "name": "GPT-5.2"})["GPT-5.2"]["gaia_dev"]
    counts = pooled.confusion[:, :3] + 0.5  # the same half-count prior, failed calls excluded as missing
    np.testing.assert_allclose(measured["confusion"], counts / counts.sum(axis=1, keepdims=True), atol=1e-4)
    assert measured["fail_rate"] == pytest.approx(1 / 250)
    cfg = {"profile": "gaia_dev", "n_tasks": 100, "name": "sim"}
    table = sim_dataset.candidate_table(cfg, {"kind": "sim", "n": 5},
                                        {"kind": "sim", "calibrate_from": "gpt-5.2", "root": str(apb_root)})
    assert set(table["judge"]) == {"sim:GPT-5.2"}


@pytest.mark.parametrize("source", ["all", " all "])
def test_calibrate_from_all_is_refused_with_the_recorded_judges(apb_root, source):
    from bon.datasets import agentprocessbench as apb

    cfg = {"profile": "gaia_dev", "n_tasks": 10, "name": "sim"}
    with pytest.raises(BonError, match="one recorded judge") as err:  # never silently the first judge
        sim_dataset.candidate_table(cfg, {"kind": "sim", "n": 2},
                                    {"kind": "sim", "calibrate_from": source, "root": str(apb_root)})
    assert all(judge in str(err.value) for judge in apb.judge_dirs(apb_root))


@pytest.mark.parametrize("change, message", [
    ({"profile": "swebench"}, "dataset.profile"),
])
def test_bad_profile_lists_valid_ones(change, message):
    with pytest.raises(BonError, match=message) as err:
        sim_dataset.candidate_table({"n_tasks": 10, "name": "sim", **change},
                                    {"kind": "sim", "n": 2}, {"kind": "sim", **JUDGE})
    assert "gaia_dev" in str(err.value) and "tau2" in str(err.value)


def test_bad_judge_confusion_and_kind_are_clear_errors():
    cfg = {"profile": "bfcl", "n_tasks": 10, "name": "sim"}
    with pytest.raises(BonError, match="judge.confusion"):
        sim_dataset.candidate_table(cfg, {"kind": "sim", "n": 2}, {"kind": "sim", **JUDGE, "confusion": [[1, 0, 0]]})
    with pytest.raises(BonError, match="judge=sim"):
        sim_dataset.candidate_table(cfg, {"kind": "sim", "n": 2}, {"kind": "replay", "name": "GPT-5.2"})


def test_default_run_needs_no_data_and_says_synthetic(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("BON_DATA_DIR", "HYDRA_FULL_ERROR")}
    env["BON_APB_MIRROR"] = "http://127.0.0.1:9/"  # any attempt to fetch data would fail loudly
    env["BON_CACHE_DIR"] = str(tmp_path / "empty-cache")  # ... even on a machine that has a download cached
    proc = subprocess.run([sys.executable, "-m", "bon.run", "hydra.run.dir=out"], capture_output=True, text=True,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "SYNTHETIC" in proc.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["synthetic"] is True and "SYNTHETIC" in summary["note"]
    assert summary["dataset"] == "sim" and summary["n_tasks"] == 1000
    assert summary["random"] < summary["accuracy"] < summary["pass_at_n"]

"""`python -m bon.run` end to end on the real replay data, and its errors on bad input."""
from __future__ import annotations

import json
import os
import pstats
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from commands import run_in_process

REQUIRED = {"dataset", "subset", "judge", "selector", "n_tasks", "n_candidates", "accuracy", "accuracy_expected",
            "ci_low", "ci_high", "pass_at_n", "random", "judge_failed"}


def bon_run(*args: str, cwd: Path, module: str = "bon.run", fresh: bool = False) -> subprocess.CompletedProcess:
    """`python -m <module>`: a subprocess when `fresh`, else in this process (commands.py), which gives the
    same exit code, stdout and stderr (errors included) without another interpreter start."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    if not fresh:
        return run_in_process(module, *args, cwd=cwd, env=env)
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, env=env)


def bon_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`bon_run` in this process (commands.py): for runs whose outputs the test reads."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return run_in_process("bon.run", *args, cwd=cwd, env=env)


def test_run_writes_summary_and_tables(apb_root, tmp_path):
    out = tmp_path / "out"
    proc = bon_run("dataset=agentprocessbench", f"dataset.root={apb_root}", "dataset.subset=gaia_dev", "judge=replay", "judge.name=GPT-5.2",
                   "selector=two_stage", f"hydra.run.dir={out}", cwd=tmp_path, fresh=True)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert REQUIRED <= set(summary)
    assert (summary["dataset"], summary["subset"], summary["judge"], summary["selector"]) == (
        "agentprocessbench", "gaia_dev", "GPT-5.2", "two_stage")
    assert summary["n_tasks"] == 50 and summary["n_candidates"] == 250
    assert summary["judge_failed"] == 1  # gaia_dev:19:4 exceeded GPT-5.2's context window
    picks = pl.read_parquet(out / "selections.parquet")
    assert picks.height == 50
    assert summary["accuracy"] == pytest.approx(picks["correct"].mean())
    assert summary["ci_low"] <= summary["accuracy"] <= summary["ci_high"]
    assert summary["random"] <= summary["pass_at_n"]
    assert pl.read_parquet(out / "candidates.parquet").height == 250
    assert "GPT-5.2" in proc.stdout and "two_stage" in proc.stdout
    # the printed table carries the same accuracy; the last line reaches the pipe (the process skips teardown)
    assert f"{100 * summary['accuracy']:.1f}" in proc.stdout
    assert proc.stdout.endswith(f"wrote {out / 'summary.json'}\n") and proc.stderr == ""


def test_a_profiled_run_still_writes_its_profile(tmp_path):
    # a finished command skips the interpreter's teardown, but not when a profiler waits for the module to return
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "run.prof"), "-m", "bon.run",
                           "dataset.n_tasks=20", f"hydra.run.dir={tmp_path / 'o'}"], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "bon/run.py" in str(pstats.Stats(str(tmp_path / "run.prof")).stats)


def test_stdout_closed_before_the_table_ends_the_run_quietly_with_its_files_written(tmp_path):
    # `python -m bon.run | head -1` where head has gone before the table is printed: exit 1, nothing on
    # stderr (Hydra would add "Error executing job", the interpreter "Exception ignored"), outputs whole
    read, write = os.pipe()
    os.close(read)
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    with os.fdopen(write, "wb") as stdout:
        proc = subprocess.run([sys.executable, "-m", "bon.run", "dataset.n_tasks=50", f"hydra.run.dir={tmp_path / 'o'}"],
                              stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env, timeout=300)
    assert (proc.returncode, proc.stderr) == (1, "")
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["n_tasks"] == 50


def test_summary_carries_its_schema_level_and_seed_and_reads_back_whole(apb_root, tmp_path):
    """summary.json is bon.summary's contract: what bon.run writes, Summary.from_json reads back unchanged."""
    from bon.summary import SCHEMA, Summary

    out = tmp_path / "out"
    proc = bon_here("dataset=agentprocessbench", f"dataset.root={apb_root}", "dataset.subset=hotpotqa", "judge.name=all",
                   "selector=final", "confidence=0.9", "seed=3", "bootstrap_resamples=999", f"hydra.run.dir={out}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "summary.json").read_text())
    assert (data["schema"], data["kind"], data["confidence"], data["seed"]) == (SCHEMA, "selection", 0.9, 3)
    assert Summary.from_json(data, out / "summary.json").to_json() == data


def _plan(*overrides: str):
    from hydra import compose, initialize_config_dir

    from bon.config import conf_dir
    from bon.plan import plan

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return plan(compose("config", overrides=list(overrides)))


def test_one_planner_picks_the_pipeline_from_the_dataset(tmp_path):
    from bon.plan import Live, RehacOffline, Replay, Sim

    assert type(_plan()) is Sim
    assert type(_plan("dataset=agentprocessbench")) is Replay
    live = _plan("generator=replay", f"generator.path={tmp_path / 'trajectories.jsonl'}", "judge=local")
    assert type(live) is Live and live.dataset_name == "builtin" and live.replaying
    assert not _plan("generator=local", "dataset=builtin").replaying
    assert type(_plan("dataset=rehac")) is RehacOffline


def test_planner_refuses_an_intervention_without_a_live_agent():
    from bon.errors import BonError

    with pytest.raises(BonError, match="intervention=rate needs a live agent"):
        _plan("dataset=agentprocessbench", "intervention=rate")


def test_all_subsets_report_a_breakdown(apb_root, tmp_path):
    out = tmp_path / "out"
    proc = bon_here("dataset=agentprocessbench", f"dataset.root={apb_root}", "judge.name=DeepSeek-V3.2", "selector=pos_ratio",
                   "bootstrap_resamples=999", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tasks"] == 200
    assert set(summary["by_subset"]) == {"hotpotqa", "gaia_dev", "bfcl", "tau2"}
    pooled = sum(s["accuracy"] * s["n_tasks"] for s in summary["by_subset"].values()) / 200
    assert summary["accuracy"] == pytest.approx(pooled)
    assert summary["best_of_k"]["k"] == [1, 2, 3, 4, 5]
    assert summary["best_of_k"]["accuracy"][0] == pytest.approx(summary["random"])
    assert summary["best_of_k"]["accuracy"][-1] == pytest.approx(summary["accuracy_expected"])


def test_yaml_only_selector_and_human_judge(apb_root, tmp_path):
    out = tmp_path / "out"
    proc = bon_here("dataset=agentprocessbench", f"dataset.root={apb_root}", "dataset.subset=hotpotqa", "judge=human", "selector=orm_majority",
                   "bootstrap_resamples=999", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["selector"] == "orm_majority" and summary["judge"] == "human"
    # with the human final labels as ORM, any task with a success is solved
    assert summary["accuracy"] == pytest.approx(summary["pass_at_n"])


def test_judge_all_gives_one_row_per_judge(apb_root, tmp_path):
    out = tmp_path / "out"
    proc = bon_here("dataset=agentprocessbench", f"dataset.root={apb_root}", "dataset.subset=bfcl", "judge.name=all", "selector=final",
                   "bootstrap_resamples=999", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads((out / "summary.json").read_text())["rows"]
    n_judges = sum(d.is_dir() for d in (apb_root / "eval" / "results").iterdir())  # 15 here, 20 in the full release
    assert len(rows) == n_judges and all(REQUIRED <= set(r) for r in rows)


def test_multirun_sweeps_selectors(apb_root, tmp_path):
    proc = bon_here("-m", "dataset=agentprocessbench", f"dataset.root={apb_root}", "dataset.subset=tau2", "selector=final,pos_count",
                   "judge.name=GPT-5.2,Kimi-K2.5", "bootstrap_resamples=999", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = {(s["selector"], s["judge"]) for s in
             (json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("*/summary.json"))}
    assert found == {(s, j) for s in ("final", "pos_count") for j in ("GPT-5.2", "Kimi-K2.5")}


def _user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def _copy_root(apb_root: Path, dest: Path) -> Path:
    """A writable copy of the parts of the release these tests corrupt (in tmp, never in the repo)."""
    shutil.copytree(apb_root / "data" / "AnswerOnly", dest / "data" / "AnswerOnly")
    shutil.copytree(apb_root / "eval" / "results" / "GPT-5.2", dest / "eval" / "results" / "GPT-5.2")
    return dest


def test_malformed_jsonl_line_names_file_and_line(apb_root, tmp_path):
    root = _copy_root(apb_root, tmp_path / "apb")
    path = root / "eval" / "results" / "GPT-5.2" / "bfcl__blind_gpt-5.2.jsonl"
    lines = path.read_text().splitlines()
    lines[6] = lines[6][:40]
    path.write_text("\n".join(lines) + "\n")
    proc = bon_run("dataset=agentprocessbench", f"dataset.root={root}", "dataset.subset=bfcl", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    _user_error(proc, f"{path}:7", "malformed JSON")


def test_label_outside_range_names_the_record(apb_root, tmp_path):
    root = _copy_root(apb_root, tmp_path / "apb")
    path = root / "data" / "AnswerOnly" / "tau2_final.jsonl"
    lines = path.read_text().splitlines()
    record = json.loads(lines[3])
    step = next(iter(record["step_labels"]))
    record["step_labels"][step] = 2
    lines[3] = json.dumps(record)
    path.write_text("\n".join(lines) + "\n")
    proc = bon_run("dataset=agentprocessbench", f"dataset.root={root}", "dataset.subset=tau2", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    _user_error(proc, record["record_id"], ":4", "-1, 0 or 1")


@pytest.mark.parametrize("override, needles", [
    ("dataset.subset=gaia", ["unknown subset 'gaia'", "hotpotqa", "gaia_dev", "bfcl", "tau2", "all"]),
    ("judge.name=GPT-6", ["unknown judge 'GPT-6'", "GPT-5.2", "DeepSeek-V3.2", "all"]),
    ("dataset.name=swebench", ["unknown dataset 'swebench'", "agentprocessbench"]),
])
def test_unknown_choices_list_the_valid_ones(apb_root, tmp_path, override, needles):
    proc = bon_run("dataset=agentprocessbench", f"dataset.root={apb_root}", override, f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    _user_error(proc, *needles)


def test_unknown_selector_lists_the_valid_ones(apb_root, tmp_path):
    proc = bon_run("dataset=agentprocessbench", f"dataset.root={apb_root}", "selector=best", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    _user_error(proc, "selector/best", "two_stage", "pos_ratio")


def test_missing_data_directory_says_where_it_looked(tmp_path):
    missing = tmp_path / "nowhere"
    proc = bon_run("dataset=agentprocessbench", f"dataset.root={missing}", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    _user_error(proc, str(missing), "data/AnswerOnly")


def test_majority_without_answers_is_recorded_as_not_applicable(apb_root, tmp_path):
    """Never a guess: no accuracy is reported, the reason is, and a sweep can carry on."""
    out = tmp_path / "o"
    proc = bon_here("dataset=agentprocessbench", f"dataset.root={apb_root}", "dataset.subset=gaia_dev", "selector=majority",
                   "bootstrap_resamples=999", f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "not applicable" in proc.stderr and "hotpotqa" in proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["accuracy"] is None and summary["n_tasks"] == 0
    assert "not applicable" in summary["note"]


def test_replay_path_never_imports_litellm(apb_root, tmp_path):
    code = ("import sys; sys.argv = ['bon.run', 'dataset=agentprocessbench', 'dataset.subset=hotpotqa', 'hydra.run.dir=out']; "
            "from bon.run import main; main(); print('LITELLM_IMPORTED', 'litellm' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "LITELLM_IMPORTED False" in proc.stdout


def test_unknown_generator_kind_lists_valid(apb_root, tmp_path):
    proc = bon_run("dataset=agentprocessbench", f"dataset.root={apb_root}", "generator.kind=live", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    _user_error(proc, "unknown generator kind 'live'", "replay")


@pytest.mark.parametrize("override, needle", [
    ("bootstrap_resamples=0", "bootstrap_resamples"),
    ("confidence=1.5", "confidence"),
    ("seed=abc", "seed"),
    ("dataset.subset=hotpotqa", "dataset.profile=hotpotqa"),   # the simulator has profiles, not subsets
    ("judge.name=GPT-5.2", "judge.calibrate_from=GPT-5.2"),    # a sim judge is never relabelled as a real one
])
def test_bad_run_options_name_the_option(tmp_path, override, needle):
    proc = bon_run(override, f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    _user_error(proc, needle)


def test_duplicate_or_malformed_judge_records_are_errors(apb_root, tmp_path):
    root = _copy_root(apb_root, tmp_path / "apb")
    path = root / "eval" / "results" / "GPT-5.2" / "hotpotqa__blind_gpt-5.2.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines + [lines[2]]) + "\n")
    proc = bon_run("dataset=agentprocessbench", f"dataset.root={root}", "dataset.subset=hotpotqa",
                   f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    _user_error(proc, f"{path}:{len(lines) + 1}", "duplicate record_id", "line 3")
    record = json.loads(lines[0])
    record["step_labels"][next(iter(record["step_labels"]))] = [1]
    path.write_text("\n".join([json.dumps(record)] + lines[1:]) + "\n")
    proc = bon_run("dataset=agentprocessbench", f"dataset.root={root}", "dataset.subset=hotpotqa",
                   f"hydra.run.dir={tmp_path / 'o2'}", cwd=tmp_path)
    _user_error(proc, f"{path}:1", "-1, 0 or 1")

"""Sweeps past one process: the launcher presets of conf/hydra/launcher/ (the `cluster` extra).

A launcher only decides where each job of a sweep runs; what a job writes must not depend on it. These
run the README's commands ("Running on a cluster"): the same small sweep through the basic launcher, joblib
(`hydra/launcher=local_parallel`) and submitit's local executor (the code path of `hydra/launcher=slurm`:
the task pickled to a file, run by a fresh Python process). There is no SLURM here, so the SLURM preset is
checked as far as it goes without one: what it composes to, and the one-line errors before anything is
submitted.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from commands import run_in_process

SWEEP = ("selector=final,two_stage", "dataset.n_tasks=200", "bootstrap_resamples=999")  # the simulator: no data, key or network
JOBS = ("0", "1")
SLURM_VARIABLES = ("BON_SLURM_PARTITION", "BON_SLURM_ACCOUNT", "BON_SLURM_TIME_MIN", "BON_SLURM_CPUS",
                   "BON_SLURM_MEM_GB", "BON_SLURM_MAX_JOBS")


def bon_run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR" and k not in SLURM_VARIABLES}
    return subprocess.run([sys.executable, "-m", "bon.run", *args], capture_output=True, text=True, cwd=cwd,
                          env=clean | env, timeout=600)


def bon_here(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """`bon_run` in this process (commands.py): for the basic launcher, which runs the jobs in this process
    anyway, and for composing the config."""
    clean = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR" and k not in SLURM_VARIABLES}
    return run_in_process("bon.run", *args, cwd=cwd, env=clean | env)


def sweep(directory: Path, *launcher: str, run=bon_run) -> Path:
    proc = run("-m", *launcher, *SWEEP, f"hydra.sweep.dir={directory}", cwd=directory.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return directory


@pytest.fixture(scope="module")
def basic(tmp_path_factory) -> Path:
    return sweep(tmp_path_factory.mktemp("launchers") / "basic", run=bon_here)


@pytest.mark.parametrize("launcher", [("hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2"),
                                      ("hydra/launcher=submitit_local",)], ids=["local_parallel", "submitit_local"])
def test_a_sweep_through_a_launcher_writes_what_the_basic_launcher_writes(basic, tmp_path, launcher):
    out = sweep(tmp_path / "sweep", *launcher)
    choice = launcher[0].split("=")[1]
    for job in JOBS:
        ran = yaml.safe_load((out / job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert ran["runtime"]["choices"]["hydra/launcher"] == choice
        assert ((out / job / ".hydra" / "overrides.yaml").read_text()
                == (basic / job / ".hydra" / "overrides.yaml").read_text())  # job i is the same configuration
        ours, theirs = (json.loads((d / job / "summary.json").read_text()) for d in (out, basic))
        assert ours.keys() == theirs.keys()
        for field in theirs:  # no path or time in a summary: every field must agree
            assert ours[field] == theirs[field], field
        for table in ("candidates.parquet", "selections.parquet"):
            assert pl.read_parquet(out / job / table).equals(pl.read_parquet(basic / job / table)), table
    selectors = {json.loads((basic / job / "summary.json").read_text())["selector"] for job in JOBS}
    assert selectors == {"final", "two_stage"}  # two different configurations were compared
    if choice == "submitit_local":  # each job ran in its own process, from a pickle, as on SLURM
        assert list((out / ".submitit").glob("*/*_result.pkl")), "submitit wrote no job results"


def test_the_slurm_preset_reads_the_environment(tmp_path):
    proc = bon_here("hydra/launcher=slurm", "--cfg", "hydra", "--resolve", cwd=tmp_path,
                    BON_SLURM_PARTITION="gpu", BON_SLURM_ACCOUNT="lab42", BON_SLURM_TIME_MIN="90",
                    BON_SLURM_CPUS="8", BON_SLURM_MEM_GB="32")
    assert proc.returncode == 0, proc.stderr
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert {k: launcher[k] for k in ("partition", "account", "timeout_min", "cpus_per_task", "mem_gb")} == {
        "partition": "gpu", "account": "lab42", "timeout_min": 90, "cpus_per_task": 8, "mem_gb": 32}

    # only the partition is required; the command line wins over the environment
    proc = bon_here("hydra/launcher=slurm", "hydra.launcher.partition=cpu", "--cfg", "hydra", "--resolve",
                    cwd=tmp_path, BON_SLURM_PARTITION="gpu")
    assert proc.returncode == 0, proc.stderr
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert (launcher["partition"], launcher["account"]) == ("cpu", None)


def test_the_slurm_preset_without_a_partition_says_what_to_set(tmp_path):
    proc = bon_here("-m", "hydra/launcher=slurm", *SWEEP, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: hydra.launcher.partition: environment variable BON_SLURM_PARTITION is "
                                   "not set; set it, or give hydra.launcher.partition=... on the command line")
    assert not (tmp_path / "sweep" / ".submitit").exists()  # refused before anything was submitted


def test_the_slurm_preset_off_a_cluster_is_one_line(tmp_path):
    (tmp_path / "bin").mkdir()  # a PATH without srun, wherever the tests run
    proc = bon_here("-m", "hydra/launcher=slurm", *SWEEP, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
                    BON_SLURM_PARTITION="gpu", PATH=str(tmp_path / "bin"))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "srun is not on this machine's PATH" in lines[0], proc.stderr
    assert "hydra/launcher=local_parallel" in lines[0]


def test_a_job_stopped_by_bad_input_is_one_line_naming_its_logs(tmp_path):
    # the job, not the submitting process, refuses the profile: submitit reports it with the job's stderr
    proc = bon_run("-m", "hydra/launcher=submitit_local", "dataset.profile=nope", "dataset.n_tasks=50",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert proc.returncode == 2
    said = [line for line in proc.stderr.splitlines() if not line.startswith("[")]  # Hydra's own log lines
    assert len(said) == 1, proc.stderr
    assert said[0].startswith(f"error: a job of the sweep stopped (logs: {tmp_path / 'sweep' / '.submitit'}/")
    assert said[0].endswith("unknown dataset.profile 'nope'; valid choices: bfcl, gaia_dev, hotpotqa, tau2")
    # the job sent its stop back as a result: submitit did not wait 15 s for a result and call the job lost
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 1

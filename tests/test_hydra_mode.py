"""bon's commands skip the composition Hydra makes only to read `hydra.mode` (bon.config.hydra_command):
right only while no shipped config sets hydra.mode, and a command line that sets it must still be obeyed."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from bon import config


def test_no_shipped_config_sets_hydra_mode():
    for path in sorted(Path(config.conf_dir()).rglob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        package = next((line for line in path.read_text().splitlines() if line.startswith("# @package")), "")
        hydra_part = data if "_global_.hydra" in package or "package hydra" in package else data.get("hydra") or {}
        assert "mode" not in hydra_part, f"{path} sets hydra.mode: bon.config._mode_from_the_command_line assumes not"


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", "bon.run", "dataset.n_tasks=30", "generator.n=2", *args],
                          capture_output=True, text=True, cwd=tmp_path, env=env)


def test_hydra_mode_on_the_command_line_is_obeyed(tmp_path):
    proc = _run(tmp_path, "hydra.mode=MULTIRUN", "selector=final,two_stage", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert proc.returncode == 0, proc.stderr
    picked = {json.loads((tmp_path / "sweep" / job / "summary.json").read_text())["rows"][0]["selector"]
              for job in ("0", "1")}
    assert picked == {"final", "two_stage"}


def test_without_m_a_comma_list_is_one_run_not_a_sweep(tmp_path):
    """No -m and no hydra.mode: a single run (Hydra refuses a sweep override in RUN mode, in one line)."""
    proc = _run(tmp_path, "selector=final,two_stage", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2 and "add --multirun" in proc.stderr, proc.stderr
    assert not (tmp_path / "run" / "summary.json").exists()


def test_hydra_flags_that_do_not_go_together_are_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, "-m", "bon.run", "-m", "selector=final,two_stage", "--cfg", "hydra"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: Only one of --run, --multirun, --cfg, --info and --shell_completion can be specified "
        "(see --hydra-help)"]


def test_a_sweep_composes_each_job_once_and_a_job_listed_twice_is_its_own(tmp_path, monkeypatch):
    """Hydra's sweeper composes each job to check the batch, then its launcher again; bon hands the launcher
    the checked config (bon.config._each_job_composed_once), each one to one job only, and ${now:...} in a
    job is still the sweep's time (to the microsecond here), as when the launcher composed it."""
    from commands import run_in_process
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    composed = []
    original = ConfigLoaderImpl.load_configuration
    monkeypatch.setattr(ConfigLoaderImpl, "load_configuration",
                        lambda self, *a, **k: composed.append(k.get("run_mode")) or original(self, *a, **k))
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = run_in_process("bon.run", "-m", "dataset.n_tasks=30", "generator.n=2", "selector=final,two_stage,final",
                          f"hydra.sweep.dir={tmp_path}/sweep-${{now:%H-%M-%S-%f}}", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(composed) == 1 + 3  # the sweep's own config, then each job's once (Hydra alone: 1 + 2 x 3)
    (sweep,) = tmp_path.glob("sweep-*")  # one sweep directory: every job resolved the sweep's ${now:...}
    jobs = [yaml.safe_load((sweep / job / ".hydra" / "hydra.yaml").read_text())["hydra"] for job in ("0", "1", "2")]
    assert [(j["job"]["num"], j["runtime"]["output_dir"]) for j in jobs] == [(i, str(sweep / str(i))) for i in range(3)]
    picked = [json.loads((sweep / job / "summary.json").read_text())["rows"][0]["selector"] for job in ("0", "1", "2")]
    assert picked == ["final", "two_stage", "final"]
    assert proc.stdout.count("wrote") == 3

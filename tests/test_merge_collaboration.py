"""`python -m bon.merge` of live shards run with an intervention policy: the merged summary's collaboration block
(T, C, R = T - lambda*C) is the unsharded run's, against a scripted server on 127.0.0.1."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from commands import run_in_process
from llm_server import FakeLLMServer
from test_live import responder


def bon_run(tmp_path: Path, server: FakeLLMServer, tasks: Path, cache: str, *extra: str) -> None:
    args = ["dataset=tasks", f"dataset.path={tasks}", "generator=local", "judge=local", "generator.n=2",
            f"generator.api_base={server.base_url}", f"judge.api_base={server.base_url}",
            "generator.api_key_env=BON_TEST_KEY", "judge.api_key_env=BON_TEST_KEY",
            "intervention=rate", "intervention.rate=0.5", "intervention.lambda=0.1",
            "intervention.helper.model=openai/helper", f"intervention.helper.api_base={server.base_url}",
            "intervention.helper.api_key_env=BON_TEST_KEY", f"cache.dir={tmp_path / cache}",
            "bootstrap_resamples=200", *extra]
    args.sort(key=lambda a: a != "-m")  # Hydra's flag first
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"BON_TEST_KEY": "sk-test", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    proc = run_in_process("bon.run", *args, cwd=tmp_path, env=env)  # commands.py: the run's outputs are tested
    assert proc.returncode == 0, proc.stderr[-3000:]


def merge(root: Path, out: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = run_in_process("bon.merge", str(root), "--out", str(out), cwd=root.parent, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def collaboration(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["collaboration"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """One unsharded live run with intervention=rate and the same configuration as two shards."""
    root = tmp_path_factory.mktemp("collab")
    tasks = root / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"task_id": f"t{i}", "question": f"Task {i}: what is 2+3?",
                                         "answer": "5"}) + "\n" for i in range(8)))
    with FakeLLMServer(responder) as server:
        bon_run(root, server, tasks, "cache-whole", f"hydra.run.dir={root / 'whole'}")
        bon_run(root, server, tasks, "cache-shards", "-m", "dataset.num_shards=2", "dataset.shard=0,1",
                f"hydra.sweep.dir={root / 'shards'}")
    return root


def test_merged_collaboration_is_the_unsharded_runs(runs):
    whole = collaboration(runs / "whole")
    shards = [collaboration(runs / "shards" / job) for job in ("0", "1")]
    # a split that can tell a merge from a copy or an average: both shards helped, by different amounts
    assert whole["n"] == 16 and sum(s["n"] for s in shards) == 16 and all(s["n"] < 16 for s in shards)
    assert 0 < whole["interventions"] < whole["steps"]
    proc = merge(runs / "shards", runs / "merged")
    assert "combined from the shards' counts" not in proc.stderr  # recomputed from the stored trajectories
    merged = json.loads((runs / "merged" / "0" / "summary.json").read_text())
    assert merged["collaboration"] == whole  # every field, R to the last bit
    assert merged["merged"]["shards"] == 2


def test_without_the_trajectory_stores_the_counts_still_combine_exactly(runs, tmp_path):
    import shutil

    shutil.copytree(runs / "shards", tmp_path / "shards")
    for store in (tmp_path / "shards").glob("*/trajectories.jsonl"):
        store.unlink()
    proc = merge(tmp_path / "shards", tmp_path / "merged")
    assert "combined from the shards' counts" in proc.stderr
    got, whole = collaboration(tmp_path / "merged" / "0"), collaboration(runs / "whole")
    assert got.keys() == whole.keys()
    assert {k: v for k, v in got.items() if k != "R"} == {k: v for k, v in whole.items() if k != "R"}
    assert got["R"] == pytest.approx(whole["R"], rel=1e-12, abs=1e-15)

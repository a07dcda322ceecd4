"""One configuration split over K jobs (dataset.num_shards / dataset.shard) and joined by `python -m bon.merge`:
the merged summary is the unsharded run's, shards are disjoint and cover every task, and a missing or
duplicated shard is refused in one line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from commands import run_in_process

from bon import shard
from bon.datasets import candidate_table
from bon.datasets.taskset import load as load_taskset

SHARDING = ("shard", "merged")  # summary fields that describe the split, not the result


def bon(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python -m <module>` in a subprocess (kept for one exit-2 error of bon.merge, as a user sees it)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=cwd, env=env)


def bon_here(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The same command in this process (commands.py), for runs whose outputs the test reads and for
    one-line errors (same exit code and stderr)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    return run_in_process(module, *args, cwd=cwd, env=env)


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def result(run_dir: Path) -> dict[str, Any]:
    data = json.loads((run_dir / "summary.json").read_text())
    return {k: v for k, v in data.items() if k not in SHARDING}


def runs_by_selector(root: Path) -> dict[str, Path]:
    return {json.loads((p / "summary.json").read_text())["selector"]: p for p in sorted(root.iterdir())
            if (p / "summary.json").is_file()}


SIM_SWEEP = ("dataset.n_tasks=200", "selector=two_stage,listwise",  # listwise: the simulated comparing judge
             "bootstrap_resamples=999")  # the same in both: the merged intervals must equal the whole run's


@pytest.fixture(scope="module")
def sim_shards(tmp_path_factory) -> Path:
    """SIM_SWEEP split in 4 shards: jobs 0-3 are two_stage's shards 0-3, jobs 4-7 listwise's."""
    root = tmp_path_factory.mktemp("sim_shards")
    sharded = ok(bon_here("bon.run", "-m", *SIM_SWEEP, "dataset.num_shards=4", "dataset.shard=0,1,2,3",
                          f"hydra.sweep.dir={root / 'shards'}", cwd=root))
    assert "shard 3 of 4" in sharded.stdout
    return root / "shards"


def test_four_sim_shards_merged_equal_the_unsharded_runs(sim_shards, tmp_path):
    ok(bon_here("bon.run", "-m", *SIM_SWEEP, f"hydra.sweep.dir={tmp_path / 'whole'}", cwd=tmp_path))
    shutil.copytree(sim_shards, tmp_path / "shards")
    merged = ok(bon_here("bon.merge", str(tmp_path / "shards"), "--out", str(tmp_path / "merged"), cwd=tmp_path))
    assert merged.stdout.count("merging 4 shards") == 2

    whole, joined = runs_by_selector(tmp_path / "whole"), runs_by_selector(tmp_path / "merged")
    assert sorted(whole) == sorted(joined) == ["listwise", "two_stage"]
    for selector in whole:
        expected, got = result(whole[selector]), result(joined[selector])
        assert got["n_tasks"] == 200 and got["ci_low"] < got["accuracy"] < got["ci_high"]
        for key in expected.keys() | got.keys():  # every field: accuracies, intervals, best-of-k, compute, usage
            assert got.get(key) == expected.get(key), f"{selector}: {key}"
        summary = json.loads((joined[selector] / "summary.json").read_text())
        assert summary["merged"]["shards"] == 4 and "shard" not in summary
        key = ["task_id", "sample", "judge"]
        assert pl.read_parquet(joined[selector] / "candidates.parquet").sort(key).equals(
            pl.read_parquet(whole[selector] / "candidates.parquet").sort(key))

    # each shard holds exactly the unsharded rows of its own tasks; together they hold every task once
    full = pl.read_parquet(whole["two_stage"] / "candidates.parquet")
    seen: set[str] = set()
    for run_dir in sorted((tmp_path / "shards").iterdir()):
        if not (run_dir / "summary.json").is_file():
            continue
        info = json.loads((run_dir / "summary.json").read_text())
        if info["selector"] != "two_stage":
            continue
        part = pl.read_parquet(run_dir / "candidates.parquet")
        ids = set(part["task_id"])
        assert all(shard.in_shard(t, info["shard"]["index"], 4) for t in ids)
        assert not ids & seen
        seen |= ids
        assert part.equals(full.filter(pl.col("task_id").is_in(list(ids))))
    assert seen == set(full["task_id"])

    report = ok(bon_here("bon.report", str(tmp_path / "merged"), cwd=tmp_path))
    assert "wrote" in report.stdout
    rows = list(pl.read_csv(tmp_path / "merged" / "report_long.csv").iter_rows(named=True))
    two_stage = next(r for r in rows if r["selector"] == "two_stage")
    assert two_stage["accuracy"] == pytest.approx(100 * result(whole["two_stage"])["accuracy"])


def test_four_replay_shards_merged_equal_the_unsharded_run(apb_root, tmp_path):
    common = ("dataset=agentprocessbench", "judge.name=all", "dataset.subset=all",  # 15 judges x 4 subsets
              "bootstrap_resamples=999")
    ok(bon_here("bon.run", *common, f"hydra.run.dir={tmp_path / 'whole'}", cwd=tmp_path))
    ok(bon_here("bon.run", "-m", *common, "dataset.num_shards=4", "dataset.shard=0,1,2,3",
           f"hydra.sweep.dir={tmp_path / 'shards'}", cwd=tmp_path))
    ok(bon_here("bon.merge", str(tmp_path / "shards"), "--out", str(tmp_path / "merged"), cwd=tmp_path))
    expected, got = result(tmp_path / "whole"), result(tmp_path / "merged" / "0")
    assert len(got["rows"]) == 15 and got["rows"][0]["by_subset"]
    for key in expected.keys() | got.keys():
        assert got.get(key) == expected.get(key), key


def test_replay_shards_are_disjoint_and_cover_every_task(apb_root):
    def table(**part: int) -> pl.DataFrame:
        return candidate_table({"name": "agentprocessbench", "subset": "gaia_dev", "root": str(apb_root), **part},
                               {"kind": "replay", "name": "GPT-5.2"})

    full = table()
    parts = [table(num_shards=3, shard=i) for i in range(3)]
    ids = [set(p["task_id"]) for p in parts]
    assert all(ids) and sum(map(len, ids)) == len(set().union(*ids)) == full["task_id"].n_unique()
    assert pl.concat(parts).sort("task_id", "sample").equals(full.sort("task_id", "sample"))


def test_live_task_shards_are_disjoint_and_cover_every_task():
    cfg = {"name": "builtin", "n_tasks": None, "task_ids": None}
    every = [t.id for t in load_taskset(cfg).tasks]
    parts = [load_taskset(cfg | {"num_shards": 3, "shard": i}) for i in range(3)]
    ids = [[t.id for t in p.tasks] for p in parts]
    assert all(ids) and sorted(sum(ids, [])) == sorted(every)
    assert all(p.keeps(t) == (t in own) for p, own in zip(parts, ids) for t in every)  # replayed trajectories too


def test_the_split_does_not_depend_on_the_process():
    """Python's hash() of a string changes with PYTHONHASHSEED; the shard of a task id must not."""
    code = "from bon.shard import index; print([index(f'task-{i}', 7) for i in range(50)])"
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in ("1", "2")}
    assert len(outputs) == 1 and len(set(json.loads(outputs.pop()))) == 7




def refused(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_missing_shard_is_refused_in_one_line(sim_shards, tmp_path):
    for job in ("0", "1", "3"):
        shutil.copytree(sim_shards / job, tmp_path / "runs" / job)
    line = refused(bon("bon.merge", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), cwd=tmp_path))
    assert "missing shard 2 of 4" in line and "dataset.n_tasks=200" in line
    assert not (tmp_path / "out").exists()


def test_reporting_unmerged_shards_points_to_bon_merge(sim_shards, tmp_path):
    line = refused(bon_here("bon.report", str(sim_shards), "--out", str(tmp_path / "r"), cwd=tmp_path))
    assert "of a sharded run" in line and "python -m bon.merge" in line


def test_a_duplicated_shard_is_refused_in_one_line(sim_shards, tmp_path):
    shutil.copytree(sim_shards, tmp_path / "runs")
    shutil.copytree(sim_shards / "1", tmp_path / "runs" / "again")
    line = refused(bon_here("bon.merge", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), cwd=tmp_path))
    assert "shard 1 of 4 is there twice" in line
    assert not (tmp_path / "out").exists()


def test_shards_of_different_splits_are_refused(sim_shards, tmp_path):
    shutil.copytree(sim_shards, tmp_path / "runs")
    ok(bon_here("bon.run", *SIM_SWEEP[:1], "selector=two_stage", *SIM_SWEEP[2:], "dataset.num_shards=2", "dataset.shard=0",
           f"hydra.run.dir={tmp_path / 'runs' / 'two'}", cwd=tmp_path))
    line = refused(bon_here("bon.merge", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), cwd=tmp_path))
    assert "disagree on dataset.num_shards" in line


@pytest.mark.parametrize("overrides, message", [
    (("dataset.num_shards=4", "dataset.shard=4"), "dataset.shard must be an integer in [0, 3]"),
    (("dataset.num_shards=0",), "dataset.num_shards must be an integer >= 1, got 0"),
    (("dataset.n_tasks=2", "dataset.num_shards=50",
      f"dataset.shard={min(set(range(50)) - {shard.index(f'synthetic:{i}', 50) for i in range(2)})}"),
     "holds none of the dataset's 2 tasks"),
    (("dataset=rehac", "dataset.num_shards=2"), "dataset=rehac cannot be sharded"),
])
def test_bad_shard_options_are_one_line(overrides, message, tmp_path):
    line = refused(bon_here("bon.run", *overrides, f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path))
    assert message in line


def test_live_shards_generate_only_their_tasks_and_merge_to_the_unsharded_rows(tmp_path):
    """Against a scripted server on 127.0.0.1: two live shards make the unsharded run's calls between them,
    their merge has its rows, and replaying the whole run's trajectories in a shard judges only its own."""
    from llm_server import FakeLLMServer
    from test_live import responder

    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("".join(json.dumps({"task_id": f"t{i}", "question": f"Task {i}: what is 2+3?",
                                         "answer": "5"}) + "\n" for i in range(6)))
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"BON_TEST_KEY": "sk-test", "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def run(server: FakeLLMServer, cache: str, *extra: str) -> None:
        args = ["dataset=tasks", f"dataset.path={tasks}", "generator=local", "judge=local", "generator.n=2",
                f"generator.api_base={server.base_url}", f"judge.api_base={server.base_url}",
                "generator.api_key_env=BON_TEST_KEY", "judge.api_key_env=BON_TEST_KEY",
                f"cache.dir={tmp_path / cache}", "bootstrap_resamples=200", *extra]
        if "generator=replay" in extra:  # no live agent: drop its options
            args = [a for a in args if not a.startswith("generator") or a in extra]
        args.sort(key=lambda a: a != "-m")  # Hydra's flag first
        ok(run_in_process("bon.run", *args, cwd=tmp_path, env=env))

    with FakeLLMServer(responder) as server:
        run(server, "cache-whole", f"hydra.run.dir={tmp_path / 'whole'}")
        whole_calls = server.count
        run(server, "cache-shards", "-m", "dataset.num_shards=2", "dataset.shard=0,1",
            f"hydra.sweep.dir={tmp_path / 'shards'}")
        assert server.count == 2 * whole_calls  # the shards made the whole run's calls between them, once each
        ok(bon_here("bon.merge", str(tmp_path / "shards"), "--out", str(tmp_path / "merged"), cwd=tmp_path))
        assert result(tmp_path / "merged" / "0")["rows"] == result(tmp_path / "whole")["rows"]

        before = server.count
        run(server, "cache-replay", "generator=replay", f"generator.path={tmp_path / 'whole' / 'trajectories.jsonl'}",
            "dataset.num_shards=2", "dataset.shard=1", f"hydra.run.dir={tmp_path / 'replayed'}")
        own = {t for t in (f"t{i}" for i in range(6)) if shard.in_shard(t, 1, 2)}
        judged = pl.read_parquet(tmp_path / "replayed" / "candidates.parquet")
        assert set(judged["task_id"]) == own and server.count - before == 2 * len(own)  # one judge call each

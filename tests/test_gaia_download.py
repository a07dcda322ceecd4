"""GAIA as users download it: a repository root or Hugging Face snapshot, a split, a clone without Git LFS,
replayed trajectories scored by the dataset, and the answer-format system prompt."""
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
from llm_server import FakeLLMServer, tool_call, verdict

from bon.config import conf_dir
from bon.datasets import gaia
from bon.errors import BonError

POINTER = ("version https://git-lfs.github.com/spec/v1\n"
           "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\nsize 12345\n")
VALIDATION = [
    {"task_id": "v1", "Question": "What is 2+3?", "Level": 1, "Final answer": "5", "file_name": ""},
    {"task_id": "v2", "Question": "Sum the amounts in sales.csv.", "Level": 2, "Final answer": "42.5",
     "file_name": "sales.csv"},
]
TEST = [{"task_id": "t1", "Question": "What is 7*6?", "Level": 1, "Final answer": "?", "file_name": ""}]


def gaia_root(root: Path, *, clone: bool = False, parquet: bool = False) -> Path:
    """The layout of the Hugging Face repository (or a snapshot of it): <root>/2023/{validation,test}/."""
    for split, rows in (("validation", VALIDATION), ("test", TEST)):
        d = root / "2023" / split
        d.mkdir(parents=True)
        if parquet:  # the format since October 2025: file_path from the root, a struct column, per-level files
            frame = pl.DataFrame([{**r, "file_path": f"2023/{split}/{r['file_name']}" if r["file_name"] else "",
                                   "Annotator Metadata": {"Steps": "1. add", "Number of tools": "1"}} for r in rows])
            frame.write_parquet(d / "metadata.parquet")
            frame.filter(pl.col("Level") == 1).write_parquet(d / "metadata.level1.parquet")
        else:
            (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "2023" / "validation" / "sales.csv").write_text("item,amount\npen,10\nbook,32.5\n")
    if clone:
        (root / ".git").mkdir()
    return root


def ids(tasks) -> list[str]:
    return [t.id for t in tasks]


def test_root_snapshot_root_and_split_directory_all_work(tmp_path):
    root = gaia_root(tmp_path / "GAIA")
    assert ids(gaia.load(str(root))) == ["v1", "v2"]  # a root means the validation split
    assert ids(gaia.load(str(root), split="validation")) == ["v1", "v2"]
    test = gaia.load(str(root), split="test")
    assert ids(test) == ["t1"] and test[0].answer is None
    assert ids(gaia.load(str(root / "2023"))) == ["v1", "v2"]
    assert ids(gaia.load(str(root / "2023" / "test"))) == ["t1"]  # a split directory is used as given
    assert ids(gaia.load(str(root / "2023" / "test"), split="test")) == ["t1"]
    assert ids(gaia.load(str(root), level=2)) == ["v2"]
    assert gaia.load(str(root))[1].files == (str(root / "2023" / "validation" / "sales.csv"),)


def test_parquet_metadata_is_read(tmp_path):
    root = gaia_root(tmp_path / "snap", parquet=True)
    tasks = gaia.load(str(root))
    assert ids(tasks) == ["v1", "v2"] and tasks[1].answer == "42.5"


def test_a_hugging_face_cache_snapshot_with_symlinked_files(tmp_path):
    """huggingface_hub keeps files as blobs and the snapshot as symlinks to them."""
    snapshot = gaia_root(tmp_path / "hub" / "snapshots" / "abc123", parquet=True)
    blobs = tmp_path / "hub" / "blobs"
    blobs.mkdir()
    for f in sorted(snapshot.rglob("*")):
        if f.is_file():
            blob = blobs / f"{len(list(blobs.iterdir()))}"
            f.rename(blob)
            f.symlink_to(blob)
    tasks = gaia.load(str(snapshot))
    assert ids(tasks) == ["v1", "v2"] and Path(tasks[1].files[0]).read_text().startswith("item,amount")


def test_split_mistakes_are_named(tmp_path):
    root = gaia_root(tmp_path / "GAIA")
    with pytest.raises(BonError, match="dataset.split must be one of validation, test"):
        gaia.load(str(root), split="train")
    with pytest.raises(BonError, match="is the test split but dataset.split=validation"):
        gaia.load(str(root / "2023" / "test"), split="validation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BonError, match=r"holds no GAIA split.*2023/validation"):
        gaia.load(str(tmp_path / "empty"))


def test_clone_without_lfs_names_the_pointer_and_says_git_lfs_pull(tmp_path):
    root = gaia_root(tmp_path / "GAIA", clone=True, parquet=True)
    metadata = root / "2023" / "validation" / "metadata.parquet"
    metadata.write_text(POINTER)
    with pytest.raises(BonError) as err:
        gaia.load(str(root))
    message = str(err.value)
    assert str(metadata) in message and "git lfs pull" in message and f"in {root}" in message
    assert "ComputeError" not in message


def test_an_lfs_pointer_attachment_is_never_shown_to_the_agent(tmp_path):
    root = gaia_root(tmp_path / "GAIA", clone=True)
    (root / "2023" / "validation" / "sales.csv").write_text(POINTER)
    with pytest.raises(BonError, match=r"sales\.csv is a Git LFS pointer.*git lfs pull"):
        gaia.load(str(root))
    assert ids(gaia.load(str(root), level=1)) == ["v1"]  # tasks without that file are fine


def test_a_damaged_parquet_is_one_clear_error(tmp_path):
    root = gaia_root(tmp_path / "GAIA", parquet=True)
    metadata = root / "2023" / "validation" / "metadata.parquet"
    metadata.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(BonError, match=r"metadata\.parquet could not be read as parquet"):
        gaia.load(str(root))


# --- through the command line, against a loopback server -----------------------------------------------------


def agent_and_judge(body: dict) -> object:
    """Agent: answers 5 at once. Judge: every step +1."""
    if body.get("tools"):
        return tool_call("final_answer", {"answer": "5"})
    prompt = body["messages"][-1]["content"]
    steps = [int(line[1:line.index("]")]) for line in prompt.splitlines()
             if line.startswith("[") and "] assistant" in line]
    return verdict({s: 1 for s in steps}, 1)


def run_bon(tmp_path: Path, server: FakeLLMServer, *args: str, out: str = "out",
            in_process: bool = False) -> subprocess.CompletedProcess:
    """`python -m bon.run` against `server`; in_process: in this process (commands.py)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"BON_TEST_KEY": "sk-test", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    base = ["generator=local", f"generator.api_base={server.base_url}", "generator.api_key_env=BON_TEST_KEY",
            f"judge.api_base={server.base_url}", "judge.api_key_env=BON_TEST_KEY", f"cache.dir={tmp_path / 'cache'}",
            "bootstrap_resamples=200", f"hydra.run.dir={tmp_path / out}"]
    if any(a.startswith("generator=") for a in args):
        base = [a for a in base if not a.startswith("generator")]
    if in_process:
        return run_in_process("bon.run", *base, *args, cwd=tmp_path, env=env)
    return subprocess.run([sys.executable, "-m", "bon.run", *base, *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=180)


def test_the_lfs_error_stops_the_run_before_any_call(tmp_path):
    root = gaia_root(tmp_path / "GAIA", clone=True, parquet=True)
    (root / "2023" / "validation" / "metadata.parquet").write_text(POINTER)
    with FakeLLMServer(agent_and_judge) as server:
        proc = run_bon(tmp_path, server, "dataset=gaia", f"dataset.path={root}", in_process=True)
        assert server.count == 0
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "ComputeError" not in proc.stderr
    assert "git lfs pull" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_replayed_trajectories_are_scored_by_the_dataset(tmp_path):
    """The file's own `success` fields are wrong on purpose: the dataset's answers decide."""
    root = gaia_root(tmp_path / "GAIA")
    saved = tmp_path / "trajectories.jsonl"
    rows = []
    for task_id, answers in (("v1", ["5", "6"]), ("v2", ["42.50", "$42"])):
        for sample, answer in enumerate(answers):
            rows.append({"task_id": task_id, "sample": sample, "answer": answer, "success": sample == 1,
                         "messages": [{"role": "user", "content": "q"},
                                      {"role": "assistant", "content": f"FINAL ANSWER: {answer}"}]})
    saved.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with FakeLLMServer(agent_and_judge) as server:
        proc = run_bon(tmp_path, server, "dataset=gaia", f"dataset.path={root}", "generator=replay",
                       f"generator.path={saved}", "judge=local", in_process=True)
        assert server.count == 4  # judged, nothing generated
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = pl.read_parquet(tmp_path / "out" / "candidates.parquet").sort("task_id", "sample")
    assert table["success"].to_list() == [True, False, True, False]  # GAIA's rules: "42.50" matches 42.5, "$42" not
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["pass_at_n"] == 1.0 and summary["random"] == 0.5


def test_replaying_tasks_the_dataset_lacks_is_refused(tmp_path):
    root = gaia_root(tmp_path / "GAIA")
    saved = tmp_path / "trajectories.jsonl"
    saved.write_text(json.dumps({"task_id": "elsewhere", "sample": 0, "answer": "x",
                                 "messages": [{"role": "user", "content": "q"}]}) + "\n")
    with FakeLLMServer(agent_and_judge) as server:
        proc = run_bon(tmp_path, server, "dataset=gaia", f"dataset.path={root}", "generator=replay",
                       f"generator.path={saved}", "judge=local", in_process=True)
        assert server.count == 0
    assert proc.returncode == 2 and "'elsewhere'" in proc.stderr and "dataset=gaia" in proc.stderr


def test_gaia_poses_its_answer_format_rules_unless_the_generator_says_otherwise(tmp_path):
    root = gaia_root(tmp_path / "GAIA")
    rules = yaml.safe_load((Path(conf_dir()) / "dataset" / "gaia.yaml").read_text())["system_prompt"]
    assert "thousands separators" in rules and "comma" in rules and "units" in rules
    with FakeLLMServer(agent_and_judge) as server:
        proc = run_bon(tmp_path, server, "dataset=gaia", f"dataset.path={root}", "dataset.level=1", "generator.n=1",
                       in_process=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        first = [r.body["messages"][0] for r in server.requests if r.body.get("tools")]
        assert first == [{"role": "system", "content": rules}]
        server.reset()
        proc = run_bon(tmp_path, server, "dataset=gaia", f"dataset.path={root}", "dataset.level=1", "generator.n=1",
                       "generator.system_prompt=Answer in one word.", out="own", in_process=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        first = [r.body["messages"][0] for r in server.requests if r.body.get("tools")]
        assert first == [{"role": "system", "content": "Answer in one word."}]

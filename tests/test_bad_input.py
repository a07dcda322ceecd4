"""Bad input through the real entry point (`python -m bon.run`): one line on stderr, exit 2, nothing half-done.

Also Ctrl-C (one line, exit 130, files already written kept), a full disk and a run directory that
cannot be written. The process-level cases (Ctrl-C, a full disk, one typed-option error) run the command
in a subprocess, as a user would; the other one-line errors, and runs that a case needs to succeed, run in
this process (commands.py), which yields the same exit code and stderr.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from commands import run_in_process
from llm_server import FakeLLMServer, tool_call, verdict

from bon import config

CONF = Path(config.conf_dir())


def bon_run(*args: str, cwd: Path, timeout: float = 300, fresh: bool = False, **popen) -> subprocess.CompletedProcess:
    """`python -m bon.run`: in a subprocess when `fresh` (the process itself is under test), else in this
    process (commands.py), which gives the same exit code and stderr lines for a one-line error."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    if not fresh:
        assert not popen, popen
        return run_in_process("bon.run", *args, cwd=cwd, env=env)
    return subprocess.run([sys.executable, "-m", "bon.run", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout, **popen)


def bon_here(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`bon_run` in this process (commands.py): for the runs that must succeed, whose outputs the test reads."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    return run_in_process("bon.run", *args, cwd=cwd, env=env)


def one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2 and a single `error:` line on stderr holding every needle."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- typed options


@pytest.mark.parametrize("override, needles", [
    ("generator.n=abc", ["generator.n", "an integer", "'abc'"]),
    ("dataset.n_tasks=abc", ["dataset.n_tasks", "an integer", "'abc'"]),
    ("generator.n=2.5", ["generator.n", "an integer", "2.5"]),          # was silently run with n=2
    ("generator.n=0", ["generator.n", ">= 1"]),
    ("judge.fail_rate=1.5", ["judge.fail_rate", "<= 1"]),
    ("cache.mode=sometimes", ["cache.mode", "off, read, write, readwrite"]),
    ("bootstrap_resamples=1e4", ["bootstrap_resamples", "an integer"]),
])
def test_numeric_and_choice_options_are_typed(tmp_path, override, needles):
    size = [] if override.startswith("dataset.n_tasks") else ["dataset.n_tasks=50"]
    proc = bon_run(override, *size, f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    one_line_error(proc, *needles)
    assert not (tmp_path / "o" / "summary.json").exists()


def test_live_presets_options_are_typed_before_anything_runs(tmp_path):
    proc = bon_run("dataset=tasks", f"dataset.path={tmp_path / 'none.jsonl'}", "generator=local", "judge=local",
                   "generator.concurrency=0.5", f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path, fresh=True)
    one_line_error(proc, "generator.concurrency", "an integer >= 1", "0.5")


def _schema_for(group: str, values: dict) -> type | None:
    selector, schemas = config.GROUPS[group]
    return schemas.get(values.get(selector) if selector else None)


def test_every_shipped_option_is_in_the_schema_and_passes_it():
    """The schema mirrors conf/: every key of every shipped config of a group with a schema is a typed field."""
    checked, unchecked = 0, set()
    for group in config.GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")) if (CONF / group).is_dir() else []:
            values = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
            schema = _schema_for(group, values)
            if schema is None and group in ("intervention", "tools"):
                schema = config.GROUPS[group][1][None]
            if schema is None:
                unchecked.add(f"{group}/{path.stem}")
                continue
            fields = {config._FIELD_ALIASES.get(f, f) for f in schema.__dataclass_fields__}
            assert set(values) <= fields, f"{path}: {sorted(set(values) - fields)} missing from {schema.__name__}"
            config.check({group: values})
            checked += 1
    top = yaml.safe_load((CONF / "config.yaml").read_text())
    config.check({k: v for k, v in top.items() if k not in ("defaults", "hydra")})
    assert checked >= 20
    assert unchecked == {"dataset/rehac"}  # it checks its own options (bon/rehac/report.py)


# --------------------------------------------------------------------------- config files


@pytest.fixture()
def user_conf(tmp_path) -> Path:
    (tmp_path / "myconf" / "selector").mkdir(parents=True)
    return tmp_path / "myconf"


def run_selector(tmp_path: Path, conf: Path, name: str, *extra: str, out: str = "o",
                 run=bon_run) -> subprocess.CompletedProcess:
    return run(f"hydra.searchpath=[file://{conf}]", f"selector={name}", "dataset.n_tasks=300",
               f"hydra.run.dir={tmp_path / out}", *extra, cwd=tmp_path)


def test_selector_yaml_syntax_error_is_one_line_with_file_and_line(tmp_path, user_conf):
    path = user_conf / "selector" / "broken.yaml"
    path.write_text("name: broken\n  rank: [pos_ratio]\n")
    one_line_error(run_selector(tmp_path, user_conf, "broken"), f"{path}:2", "YAML syntax error")


def test_selector_whose_defaults_include_itself(tmp_path, user_conf):
    (user_conf / "selector" / "loop.yaml").write_text("defaults:\n  - loop\nname: loop\nrank: [pos_ratio]\n")
    proc = run_selector(tmp_path, user_conf, "loop")
    one_line_error(proc, "selector/loop", "defaults")
    assert len(proc.stderr) < 500  # was a 181 KB RecursionError


def test_selector_extending_itself(tmp_path, user_conf):
    (user_conf / "selector" / "selfish.yaml").write_text("name: selfish\nextends: selfish\n")
    one_line_error(run_selector(tmp_path, user_conf, "selfish"), "extends: selfish", "itself", "two_stage")


def test_rank_given_as_one_name_is_a_list_of_one(tmp_path, user_conf):
    """`rank: pos_ratio` was iterated by character; it now ranks like the built-in pos_ratio."""
    (user_conf / "selector" / "my_ratio.yaml").write_text("name: my_ratio\nrank: pos_ratio\n")
    mine = run_selector(tmp_path, user_conf, "my_ratio", "bootstrap_resamples=200", out="mine", run=bon_here)
    builtin = run_selector(tmp_path, user_conf, "pos_ratio", "bootstrap_resamples=200", out="builtin", run=bon_here)
    assert mine.returncode == 0 and builtin.returncode == 0, mine.stderr + builtin.stderr
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("mine", "builtin"))
    assert a["selector"] == "my_ratio"
    assert (a["accuracy"], a["accuracy_expected"], a["best_of_k"]["accuracy"]) == (
        b["accuracy"], b["accuracy_expected"], b["best_of_k"]["accuracy"])


def test_user_selector_cannot_take_a_builtin_name(tmp_path, user_conf):
    (user_conf / "selector" / "mine.yaml").write_text("name: two_stage\nrank: [pos_count]\n")
    proc = run_selector(tmp_path, user_conf, "mine")
    one_line_error(proc, "'two_stage' is a built-in selector", "name: my_two_stage")
    assert not (tmp_path / "o" / "summary.json").exists()


# --------------------------------------------------------------------------- run directory and disk


@contextlib.contextmanager
def tmpfs(where: Path, *options: str) -> Iterator[Path]:
    """A small tmpfs of our own (root only): a real full or read-only file system, unmounted afterwards."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


@pytest.mark.parametrize("kind", ["proc", "file", "under_file"])
def test_run_directory_that_cannot_be_made(tmp_path, kind):
    (tmp_path / "afile").write_text("x")
    target = {"proc": "/proc/bon-no-such/run", "file": str(tmp_path / "afile"),
              "under_file": str(tmp_path / "afile" / "run")}[kind]
    proc = bon_run(f"hydra.run.dir={target}", "dataset.n_tasks=50", cwd=tmp_path)
    one_line_error(proc, target.removesuffix("/run"), "hydra.run.dir")  # the part of the path that failed


def test_read_only_run_directory(tmp_path):
    with tmpfs(tmp_path / "ro", "ro", "size=64k") as ro:
        proc = bon_run(f"hydra.run.dir={ro / 'run'}", "dataset.n_tasks=50", cwd=tmp_path)
    one_line_error(proc, str(ro / "run"), "Read-only file system", "hydra.run.dir")


def test_disk_full_leaves_no_summary_beside_a_truncated_table(tmp_path):
    """Tables are written before summary.json, each by temporary file and rename; an older summary goes first."""
    with tmpfs(tmp_path / "small", "size=256k") as small:
        out = small / "run"
        ok = bon_here(f"hydra.run.dir={out}", "dataset.n_tasks=20", cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr
        assert (out / "summary.json").stat().st_mtime_ns >= (out / "selections.parquet").stat().st_mtime_ns
        proc = bon_run(f"hydra.run.dir={out}", "dataset.n_tasks=5000", "bootstrap_resamples=200",  # tables, not intervals
                       cwd=tmp_path, fresh=True)  # the same directory, bigger
        one_line_error(proc, "No space left on device", "summary.json was not written")
        assert not (out / "summary.json").exists()  # the earlier run's summary must not describe these tables
        assert not list(out.glob(".*.tmp"))


# --------------------------------------------------------------------------- Ctrl-C


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def test_ctrl_c_stops_a_big_run_at_once_with_one_line(tmp_path):
    """SIGINT while numpy/polars crunch 2M simulated tasks: one line, exit 130, well before the run would end."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen([sys.executable, "-m", "bon.run", "dataset.n_tasks=2000000", f"hydra.run.dir={tmp_path / 'o'}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 60
        while _rss_mb(proc.pid) < 300 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)  # until it is in the computation (imports take ~100 MB; the run peaks near 1 GB)
        time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-3000:]
    assert took < 15, f"took {took:.1f} s to stop"
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted"), err[-3000:]
    assert not (tmp_path / "o" / "summary.json").exists()


def agent_and_judge(body: dict) -> object:
    """Agent: calculator, then the answer 5; judge: every step +1."""
    messages = body["messages"]
    if body.get("tools"):
        if not any(m["role"] == "tool" for m in messages):
            return tool_call("calculator", {"expression": "2+3"})
        return tool_call("final_answer", {"answer": "5"})
    steps = [int(line[1:line.index("]")]) for line in messages[-1]["content"].splitlines()
             if line.startswith("[") and "] assistant" in line]
    return verdict({s: 1 for s in steps}, 1)


def live_args(tmp_path: Path, server: FakeLLMServer, tasks: Path, *extra: str, out: str = "out") -> list[str]:
    return ["dataset=tasks", f"dataset.path={tasks}", "generator=local", "judge=local",
            f"generator.api_base={server.base_url}", f"judge.api_base={server.base_url}", "generator.n=2",
            "generator.max_attempts=1", "judge.max_attempts=1", f"cache.dir={tmp_path / 'cache'}",
            "bootstrap_resamples=200", f"hydra.run.dir={tmp_path / out}", *extra]


def write_tasks(path: Path, *records: dict) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_ctrl_c_in_a_live_run_keeps_trajectories_and_cache_for_the_rerun(tmp_path):
    tasks = write_tasks(tmp_path / "tasks.jsonl", *({"task_id": f"t{i}", "question": "2+3?", "answer": "5"}
                                                    for i in range(30)))
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    with FakeLLMServer(agent_and_judge, latency=1.0) as server:
        args = live_args(tmp_path, server, tasks)
        slow = [*args, "generator.concurrency=2"]  # 60 trajectories of 2 calls of 1 s, 2 at a time: ~60 s
        proc = subprocess.Popen([sys.executable, "-m", "bon.run", *slow], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
        store = tmp_path / "out" / "trajectories.jsonl"
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None and (
                    not store.exists() or store.read_text().count("\n") < 2):
                time.sleep(0.05)
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=30)
            took = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
        # the run would take ~60 s; well under that means Ctrl-C stopped it (generous: CI machines are shared)
        assert proc.returncode == 130 and took < 20, (proc.returncode, took, err[-3000:])
        assert "interrupted" in err and "Traceback" not in err
        kept = [json.loads(line) for line in store.read_text().splitlines()]  # every line whole
        # samples cut short by the interrupt may be recorded as failed (they are generated again on resume);
        # what matters is that the finished ones are kept and the run did not complete
        finished = [t for t in kept if t["metadata"].get("stop_reason") not in ("error", "timeout")]
        assert 2 <= len(finished) < 60, [t["metadata"].get("stop_reason") for t in kept]
        with sqlite3.connect(tmp_path / "cache" / "responses.sqlite") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        calls_before = server.count
        server.latency = 0.0  # the rerun need not be slow
        again = run_in_process("bon.run", *args, cwd=tmp_path, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        assert summary["n_candidates"] == 60
        # the kept trajectories were not generated again (each new one costs 2 calls, each judgement 1)
        assert server.count - calls_before <= 2 * (60 - len(finished)) + 60


# --------------------------------------------------------------------------- live inputs: tasks, store, cache


@pytest.fixture()
def server():
    with FakeLLMServer(agent_and_judge) as s:
        yield s


def test_tasks_file_with_a_non_utf8_byte_names_the_line(tmp_path, server):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_bytes(b'{"task_id": "a", "question": "2+3?", "answer": "5"}\n'
                      b'{"task_id": "b", "question": "caf\xe9?", "answer": "5"}\n')
    one_line_error(bon_run(*live_args(tmp_path, server, tasks), cwd=tmp_path), f"{tasks}:2", "UTF-8")
    assert server.count == 0


def test_dataset_path_that_is_a_directory(tmp_path, server):
    one_line_error(bon_run(*live_args(tmp_path, server, tmp_path), cwd=tmp_path), "dataset.path", "is a directory")


def test_non_scalar_answer_is_refused_not_stringified(tmp_path, server):
    tasks = write_tasks(tmp_path / "tasks.jsonl", {"task_id": "a", "question": "2+3?", "answer": {"value": 5}})
    one_line_error(bon_run(*live_args(tmp_path, server, tasks), cwd=tmp_path), f"{tasks}:1", "answer must be")
    assert server.count == 0


def test_task_without_answer_is_left_out_of_accuracy_and_said(tmp_path, server):
    """Before: the unanswered task counted as wrong (accuracy 0.5 here)."""
    tasks = write_tasks(tmp_path / "tasks.jsonl", {"task_id": "a", "question": "2+3?", "answer": "5"},
                        {"task_id": "b", "question": "2+3?"})
    proc = bon_here(*live_args(tmp_path, server, tasks), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["n_tasks"] == 1 and summary["accuracy"] == 1.0
    assert "1 of 2 tasks have no reference answer" in summary["note"] and "'b'" in summary["note"]
    assert "no reference answer" in proc.stdout
    stored = {json.loads(line)["task_id"] for line in (tmp_path / "out" / "trajectories.jsonl").read_text().splitlines()}
    assert stored == {"a", "b"}  # still generated and judged


def test_trajectory_store_with_a_non_utf8_byte_names_the_line(tmp_path, server):
    store = tmp_path / "trajectories.jsonl"
    good = {"task_id": "a", "sample": 0, "answer": "5", "messages": [{"role": "user", "content": "2+3?"},
                                                                      {"role": "assistant", "content": "5"}]}
    line = json.dumps(good).encode()
    store.write_bytes(line.replace(b"2+3?", b"2+3\xff?") + b"\n" + line.replace(b'"sample": 0', b'"sample": 1') + b"\n")
    proc = bon_run("dataset=tasks", "generator=replay", f"generator.path={store}", "judge=local",
                   f"judge.api_base={server.base_url}", f"cache.dir={tmp_path / 'cache'}",
                   f"hydra.run.dir={tmp_path / 'o'}", cwd=tmp_path)
    one_line_error(proc, f"{store}:1")
    assert server.count == 0


def test_cache_dir_that_is_a_file_fails_before_any_call(tmp_path, server):
    tasks = write_tasks(tmp_path / "tasks.jsonl", {"task_id": "a", "question": "2+3?", "answer": "5"})
    (tmp_path / "cachefile").write_text("")
    proc = bon_run(*live_args(tmp_path, server, tasks, f"cache.dir={tmp_path / 'cachefile'}"), cwd=tmp_path)
    one_line_error(proc, "cache.dir", str(tmp_path / "cachefile"), "not a directory")
    assert server.count == 0  # was: one paid call first


def test_corrupt_cache_is_said_once_with_what_to_do(tmp_path, server):
    tasks = write_tasks(tmp_path / "tasks.jsonl", {"task_id": "a", "question": "2+3?", "answer": "5"})
    (tmp_path / "cache").mkdir()
    damaged = tmp_path / "cache" / "responses.sqlite"
    damaged.write_bytes(b"this is not SQLite " * 300)
    proc = bon_run(*live_args(tmp_path, server, tasks), cwd=tmp_path)
    one_line_error(proc, str(damaged), "delete it", "cache.mode=off")
    assert server.count == 0
    ok = bon_here(*live_args(tmp_path, server, tasks, "cache.mode=off", out="off"), cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-3000:]
    assert damaged.read_bytes().startswith(b"this is not SQLite")  # never touched with the cache off

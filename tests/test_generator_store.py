"""The trajectory store: crash-safe JSONL appends, tolerant loading, resume, and replay from a file."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
from llm_server import FAKE_KEY_ENV, Reply, llm_env_fixture, llm_server_fixture, server_error, tool_call  # noqa: F401 - pytest fixtures

from bon import tools as tool_registry
from bon.datasets.taskset import TaskSet
from bon.errors import BonError
from bon.generators.agent import AgentGenerator
from bon.generators.store import TrajectoryStore, dumps, load, replay
from bon.llm import LLMClient
from bon.types import Task, Trajectory


def traj(task_id: str = "t1", sample: int = 0, **kw) -> Trajectory:
    messages = (
        {"role": "user", "content": "Wie viel ist 6×7?\nBitte rechnen."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function",
             "function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "calculator", "content": "42"},
    )
    kw.setdefault("metadata", {"stop_reason": "answer", "tool_calls": [{"id": "c1", "error_kind": None}],
                               "cost_usd": None})
    return Trajectory(task_id, sample, messages, answer=kw.pop("answer", "42"), success=kw.pop("success", True), **kw)


def lines(path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def test_append_then_load_roundtrip(tmp_path):
    path = tmp_path / "runs" / "trajectories.jsonl"  # the directory is created on first append
    store = TrajectoryStore(path)
    written = [traj("t1", 0), traj("t1", 1, answer=None, success=None), traj("t2", 0, metadata={})]
    for t in written:
        store.append(t)
    assert len(lines(path)) == 3 and all(line.endswith(b"\n") for line in lines(path))
    assert "6×7" in path.read_text(encoding="utf-8")  # readable, not \u-escaped
    loaded = load(path)
    assert list(loaded) == [("t1", 0), ("t1", 1), ("t2", 0)]
    assert list(loaded.values()) == written
    assert store.load() == loaded


def test_each_line_carries_its_schema_and_a_file_from_before_versioning_still_resumes(tmp_path):
    path = tmp_path / "trajectories.jsonl"
    old = {k: v for k, v in json.loads(dumps(traj("t1", 0))).items() if k != "schema"}  # the format until now
    path.write_text(json.dumps(old, ensure_ascii=False) + "\n", encoding="utf-8")
    TrajectoryStore(path).append(traj("t1", 1))
    assert [json.loads(line).get("schema") for line in lines(path)] == [None, "bon.trajectory/1"]
    assert list(load(path).values()) == [traj("t1", 0), traj("t1", 1)]


def test_a_missing_store_is_empty(tmp_path):
    assert load(tmp_path / "none.jsonl") == {}


def test_a_later_line_for_the_same_pair_wins(tmp_path):
    store = TrajectoryStore(tmp_path / "s.jsonl")
    store.append(traj(answer="41"))
    store.append(traj(answer="42"))
    assert load(store.path)[("t1", 0)].answer == "42"


def test_a_torn_last_line_is_ignored_with_a_warning_and_cut_before_the_next_append(tmp_path, caplog):
    path = tmp_path / "s.jsonl"
    store = TrajectoryStore(path)
    store.append(traj("t1", 0))
    store.append(traj("t1", 1))
    with open(path, "ab") as f:  # a crash in the middle of writing a third line
        f.write(dumps(traj("t1", 2))[:-40])
    with caplog.at_level(logging.WARNING):
        assert list(load(path)) == [("t1", 0), ("t1", 1)]
    assert f"{path}:3: ignoring a torn last line" in caplog.text

    resumed = TrajectoryStore(path)  # a resumed run appends after cutting the torn tail
    resumed.append(traj("t1", 2))
    assert len(lines(path)) == 3
    assert list(load(path)) == [("t1", 0), ("t1", 1), ("t1", 2)]


def test_a_torn_write_inside_a_multibyte_character_is_still_just_torn(tmp_path):
    path = tmp_path / "s.jsonl"
    whole = dumps(traj("t1", 1))
    cut = whole.index("×".encode()) + 1  # half of a two-byte character
    path.write_bytes(dumps(traj("t1", 0)) + whole[:cut])
    assert list(load(path)) == [("t1", 0)]


def test_a_complete_last_line_without_newline_is_kept_and_terminated(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(dumps(traj("t1", 0)) + dumps(traj("t1", 1)).rstrip(b"\n"))
    assert list(load(path)) == [("t1", 0), ("t1", 1)]
    TrajectoryStore(path).append(traj("t1", 2))
    assert list(load(path)) == [("t1", 0), ("t1", 1), ("t1", 2)]


def test_a_malformed_middle_line_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_bytes(dumps(traj("t1", 0)) + b'{"task_id": "t1", "sample"\n' + dumps(traj("t1", 2)))
    with pytest.raises(BonError, match=rf"{path}:2: malformed JSON"):
        load(path)
    path.write_bytes(dumps(traj("t1", 0)) + b"\n[1, 2]\n")
    with pytest.raises(BonError, match=rf"{path}:3: expected a JSON object"):
        load(path)


def test_records_with_bad_fields_are_errors_naming_the_line(tmp_path):
    path = tmp_path / "s.jsonl"
    good = json.loads(dumps(traj()))
    for patch, message in [({"sample": -1}, "sample must be an integer"), ({"messages": []}, "messages"),
                           ({"messages": [{"content": "x"}]}, r"messages\[0\]"),
                           ({"success": "yes"}, "success"), ({"task_id": None}, "task_id")]:
        path.write_text(json.dumps(good) + "\n" + json.dumps({**good, **patch}) + "\n")
        with pytest.raises(BonError, match=rf"{path}:2: .*{message}"):
            load(path)


def test_replay_reads_any_openai_format_trajectory_file(tmp_path):
    path = tmp_path / "recorded.jsonl"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "FINAL ANSWER: 4"}]
    rows = [{"task_id": 7, "messages": msgs, "answer": 4},  # no sample: numbered in file order
            {"task_id": 7, "messages": msgs, "success": False},
            {"task_id": "x", "sample": 3, "messages": msgs, "answer": "4", "success": True, "extra": "ignored"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    out = replay(path)
    assert [(t.task_id, t.sample, t.answer, t.success) for t in out] == [
        ("7", 0, "4", None), ("7", 1, None, False), ("x", 3, "4", True)]
    assert out[0].messages == tuple(msgs) and out[0].step_indices == [1]

    path.write_text("\n".join(json.dumps(r) for r in [rows[2], rows[2]]) + "\n")
    with pytest.raises(BonError, match=rf"{path}:2: task 'x' sample 3 repeats line 1"):
        replay(path)
    path.write_text("")
    with pytest.raises(BonError, match="no trajectories"):
        replay(path)
    with pytest.raises(BonError, match="cannot read"):
        replay(tmp_path / "missing.jsonl")


# --------------------------------------------------------------------------- resume over real HTTP


def solver(body: dict) -> Reply:
    """One calculator call, then final_answer with its result (two requests per trajectory)."""
    last = body["messages"][-1]
    if last["role"] == "user":
        return tool_call("calculator", {"expression": last["content"]})
    return tool_call("final_answer", {"answer": last["content"]})


def run_generator(server, tasks, store, n=2, **kw):
    client = LLMClient("openai/test-model", api_base=server.base_url, api_key_env=FAKE_KEY_ENV, timeout=5.0,
                       max_attempts=1)
    agent = AgentGenerator(client, tool_registry.get(["calculator", "final_answer"]), n=n, max_steps=4, seed=0,
                           score=TaskSet("tasks", ()).score, **kw)

    async def go():
        async with client:
            return await agent.generate_all(tasks, store=store, progress=False)
    return asyncio.run(go())


@pytest.mark.usefixtures("llm_env")
def test_a_resumed_run_makes_only_the_missing_requests(llm_server, tmp_path, caplog):
    llm_server.responder = solver
    tasks = [Task(f"t{i}", f"{i} + {i}", answer=str(2 * i)) for i in range(3)]
    path = tmp_path / "trajectories.jsonl"

    first = run_generator(llm_server, tasks, path)
    assert llm_server.count == 12 and len(lines(path)) == 6  # 3 tasks x 2 samples x 2 requests
    assert all(t.success for t in first)

    # A crash: the last two trajectories never made it, and the write of one of them was torn.
    kept = lines(path)[:4]
    path.write_bytes(b"".join(kept) + lines(path)[4][:100])
    missing = set(load(path).keys()) ^ {(t.id, s) for t in tasks for s in range(2)}
    assert len(missing) == 2

    llm_server.reset()
    with caplog.at_level(logging.WARNING):
        second = run_generator(llm_server, tasks, TrajectoryStore(path))
    assert llm_server.count == 4  # two missing pairs x two requests; nothing else is redone
    redone = {(r.body["messages"][1]["content"], r.body["seed"]) for r in llm_server.requests}
    assert redone == {(next(t.question for t in tasks if t.id == tid), s) for tid, s in missing}
    assert "torn" in caplog.text

    on_disk = [json.loads(line) for line in lines(path)]
    assert len(on_disk) == 6 and len({(r["task_id"], r["sample"]) for r in on_disk}) == 6
    shape = lambda ts: [(t.answer, t.success, [m["role"] for m in t.messages]) for t in ts]  # noqa: E731
    assert shape(second) == shape(first)  # same order, same outcome (tool-call ids are the server's)
    assert [(t.task_id, t.sample) for t in second] == [(t.id, s) for t in tasks for s in range(2)]

    llm_server.reset()  # a finished run resumes to nothing
    run_generator(llm_server, tasks, path)
    assert llm_server.count == 0


@pytest.mark.usefixtures("llm_env")
def test_a_resumed_run_generates_failed_samples_again_unless_told_not_to(llm_server, tmp_path):
    tasks = [Task(f"t{i}", f"{i} + {i}", answer=str(2 * i)) for i in range(2)]
    path = tmp_path / "trajectories.jsonl"
    llm_server.responder = lambda body: server_error(503) if body["seed"] == 1 else solver(body)  # an outage
    first = run_generator(llm_server, tasks, path)
    assert [t.metadata["stop_reason"] for t in first] == ["answer", "error"] * 2

    llm_server.responder = solver  # the outage is over
    llm_server.reset()
    kept = run_generator(llm_server, tasks, path, retry_failed=False)
    assert llm_server.count == 0 and [t.metadata["stop_reason"] for t in kept] == ["answer", "error"] * 2

    again = run_generator(llm_server, tasks, path)
    assert llm_server.count == 4 and {r.body["seed"] for r in llm_server.requests} == {1}  # 2 failed x 2 calls
    assert [t.metadata["stop_reason"] for t in again] == ["answer"] * 4 and all(t.success for t in again)
    assert {k: t.metadata["stop_reason"] for k, t in load(path).items()} == {
        (t.id, s): "answer" for t in tasks for s in range(2)}  # the later line wins on the next load


CHILD = """
import asyncio, sys
from bon import tools
from bon.generators.agent import AgentGenerator
from bon.llm import LLMClient
from bon.types import Task
base, path, n_tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
tasks = [Task(f"t{i}", f"{i} + {i}") for i in range(n_tasks)]
client = LLMClient("openai/test-model", api_base=base, timeout=5.0, transport="native")  # the store is under test
agent = AgentGenerator(client, tools.get(["calculator", "final_answer"]), n=2, max_steps=4, seed=0, concurrency=2)
asyncio.run(agent.generate_all(tasks, store=path, progress=False))
"""


@pytest.mark.usefixtures("llm_env")
def test_resume_after_sigkill_mid_run(llm_server, tmp_path):
    llm_server.responder = solver
    llm_server.latency = 0.05
    n_tasks, path = 8, tmp_path / "trajectories.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, llm_server.base_url, str(path), str(n_tasks)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not (path.exists() and len(lines(path)) >= 3):
            assert child.poll() is None, child.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "the child wrote nothing"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    done = load(path)
    assert 3 <= len(done) < 2 * n_tasks  # killed mid-run, nothing it finished is lost

    time.sleep(0.2)  # let requests the child left in flight finish at the server before counting
    llm_server.reset()
    tasks = [Task(f"t{i}", f"{i} + {i}") for i in range(n_tasks)]
    out = run_generator(llm_server, tasks, path)
    assert llm_server.count == 2 * (2 * n_tasks - len(done))
    on_disk = [json.loads(line) for line in lines(path)]
    assert sorted((r["task_id"], r["sample"]) for r in on_disk) == sorted((t.id, s) for t in tasks for s in range(2))
    assert [t.answer for t in out] == [str(2 * i) for i in range(n_tasks) for _ in range(2)]

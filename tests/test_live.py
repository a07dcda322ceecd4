"""`python -m bon.run dataset=tasks` end to end: a real litellm agent and judge against a loopback server."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llm_server import FakeLLMServer, text, tool_call, verdict

SECRET = "sk-bon-test-7f3a9c1e5d-do-not-leak"


def responder(body: dict) -> object:
    """Agent: calculator then final_answer (odd samples answer wrongly); judge: grade by the answer."""
    messages = body["messages"]
    if body.get("tools"):  # the agent
        tool_turns = sum(1 for m in messages if m["role"] == "tool")
        if tool_turns == 0:
            return tool_call("calculator", {"expression": "2+3"})
        wrong = (body.get("seed") or 0) % 2 == 1
        return tool_call("final_answer", {"answer": "6" if wrong else "5"})
    prompt = messages[-1]["content"]
    steps = [int(line[1:line.index("]")]) for line in prompt.splitlines()
             if line.startswith("[") and "] assistant" in line]
    good = '"answer": "5"' in prompt
    return verdict({s: 1 if good else -1 for s in steps}, 1 if good else -1)


@pytest.fixture()
def server():
    with FakeLLMServer(responder) as s:
        yield s


def run_live(tmp_path: Path, server: FakeLLMServer, *extra: str, out: str = "out") -> subprocess.CompletedProcess:
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text("\n".join(json.dumps({"task_id": f"t{i}", "question": "What is 2+3?", "answer": "5"})
                               for i in range(2)) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"BON_TEST_KEY": SECRET, "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    args = ["dataset=tasks", f"dataset.path={tasks}", "generator=local", "judge=local",
            f"generator.api_base={server.base_url}", f"judge.api_base={server.base_url}",
            "generator.api_key_env=BON_TEST_KEY", "judge.api_key_env=BON_TEST_KEY", "generator.n=4",
            "generator.max_attempts=2", "judge.max_attempts=2", f"cache.dir={tmp_path / 'cache'}",
            "bootstrap_resamples=200", f"hydra.run.dir={tmp_path / out}"]
    if any(e.startswith("generator=") for e in extra):  # another generator: drop the live one's options
        args = [a for a in args if not a.startswith("generator")]
    args += list(extra)
    return subprocess.run([sys.executable, "-m", "bon.run", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=180)


def test_generate_judge_select_report_then_rerun_costs_nothing(tmp_path, server):
    proc = run_live(tmp_path, server, "selector=two_stage")
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tasks"] == 2 and summary["n_candidates"] == 8
    assert summary["accuracy"] == 1.0 and summary["random"] == 0.5  # the judge spots the wrong answers
    usage = summary["usage"]
    assert usage["generation"]["calls"] == 16 and usage["judging"]["calls"] == 8
    assert usage["generation"]["stop_reasons"] == {"answer": 8}
    trajectories = [json.loads(l) for l in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(trajectories) == 8 and {t["answer"] for t in trajectories} == {"5", "6"}
    judgements = [json.loads(l) for l in (out / "judgements.jsonl").read_text().splitlines()]
    assert all(j["status"] == "ok" for j in judgements)
    assert "generation: 16 calls" in proc.stdout
    made = server.count
    assert made == 24

    again = run_live(tmp_path, server, "selector=final", out="out2")
    assert again.returncode == 0, again.stderr
    assert server.count == made  # every response came from the cache
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["usage"]["generation"]["cache_hits"] == 16

    assert_key_sent_but_never_written(tmp_path, server, proc, again)


def assert_key_sent_but_never_written(tmp_path: Path, server: FakeLLMServer, *procs: subprocess.CompletedProcess):
    """The key reached the server, and nothing the runs wrote or printed contains it."""
    assert any(SECRET in str(r.headers) for r in server.requests)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.name != "tasks.jsonl"]
    assert any(p.suffix == ".yaml" for p in written) and any("cache" in p.parts for p in written)
    leaks = [p for p in written if SECRET.encode() in p.read_bytes()]
    assert not leaks
    assert all(SECRET not in p.stdout + p.stderr for p in procs)


def test_worker_processes_run_the_same_pipeline(tmp_path, server):
    proc = run_live(tmp_path, server, "generator.workers=2", "judge.workers=1")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (summary["accuracy"], summary["random"], summary["n_candidates"]) == (1.0, 0.5, 8)
    assert (summary["usage"]["generation"]["calls"], summary["usage"]["judging"]["calls"]) == (16, 8)
    assert server.count == 24
    assert_key_sent_but_never_written(tmp_path, server, proc)


def test_missing_key_is_named_before_any_call(tmp_path, server):
    proc = run_live(tmp_path, server, "judge.api_key_env=BON_NO_SUCH_KEY")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "BON_NO_SUCH_KEY" in proc.stderr
    assert server.count == 0


def test_replayed_trajectories_can_be_judged_again(tmp_path, server):
    first = run_live(tmp_path, server)
    assert first.returncode == 0, first.stderr
    before = server.count
    proc = run_live(tmp_path, server, "generator=replay", f"generator.path={tmp_path / 'out' / 'trajectories.jsonl'}",
                    "judge.mode=orm", out="again")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["n_candidates"] == 8 and "generation" not in summary["usage"]
    assert server.count == before + 8  # only the new (ORM) judge calls, nothing regenerated


def test_a_live_judge_is_scored_by_prm_eval_like_the_recorded_ones(apb_root, tmp_path):
    """Every hotpotqa step labelled +1 and FINAL_RESULT +1: StepAcc equals the share of human +1 steps."""
    def all_positive(body: dict) -> object:
        prompt = body["messages"][-1]["content"]
        steps = [int(line[1:line.index("]")]) for line in prompt.splitlines()
                 if line.startswith("[") and "] assistant" in line]
        return verdict({s: 1 for s in steps}, 1)

    with FakeLLMServer(all_positive) as srv:
        env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"} | {"NO_PROXY": "127.0.0.1"}
        proc = subprocess.run([sys.executable, "-m", "bon.prm_eval", f"dataset.root={apb_root}",
                               "dataset.subset=hotpotqa", "judge=local", f"judge.api_base={srv.base_url}",
                               "judge.concurrency=32", f"cache.dir={tmp_path / 'cache'}", "hydra.run.dir=out"],
                              capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert srv.count == 250
    import polars as pl

    row = pl.read_csv(tmp_path / "out" / "prm_eval.csv").filter(pl.col("subset") == "hotpotqa").row(0, named=True)
    assert row["judge"] == "local" and row["n_trajectories"] == 250 and row["n_failed"] == 0
    assert row["step_acc"] == pytest.approx(100 * 499 / 734, abs=0.01)  # 499 of the 734 human labels are +1


def test_gaia_split_without_answers_writes_a_submission(tmp_path, server):
    split = tmp_path / "GAIA" / "2023" / "test"
    split.mkdir(parents=True)
    (split / "notes.txt").write_text("2+3")
    rows = [{"task_id": "g1", "Question": "What is 2+3?", "Level": 1, "Final answer": "?", "file_name": "notes.txt"},
            {"task_id": "g2", "Question": "What is 2+3?", "Level": 2, "Final answer": "?", "file_name": ""}]
    (split / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    proc = run_live(tmp_path, server, "dataset=gaia", f"dataset.path={split}", "dataset.level=1")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["accuracy"] is None and "no task has a reference answer" in summary["note"]
    lines = [json.loads(l) for l in (tmp_path / "out" / "submission.jsonl").read_text().splitlines()]
    assert lines == [{"task_id": "g1", "model_answer": "5"}]  # level 1 only; the judge prefers the right answer


def test_gaia_without_a_path_says_where_to_get_it(tmp_path, server):
    proc = run_live(tmp_path, server, "dataset=gaia")
    assert proc.returncode == 2 and "huggingface.co/datasets/gaia-benchmark/GAIA" in proc.stderr

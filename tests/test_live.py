"""`python -m bon.run dataset=tasks` end to end: a real litellm agent and judge against a loopback server.

Runs are made in this process (commands.py), except where the exit code and stderr of the command are the
point: those run `python -m bon.run` in a subprocess.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from commands import run_in_process
from llm_server import FakeLLMServer, tool_call, verdict

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


NATIVE = ("generator.transport=native", "judge.transport=native")


def run_live(tmp_path: Path, server: FakeLLMServer, *extra: str, out: str = "out") -> subprocess.CompletedProcess:
    """A live run in this process (tests of the run's outputs; see commands.py)."""
    command, env = live_command(tmp_path, server, *extra, out=out)
    return run_in_process("bon.run", *command[3:], cwd=tmp_path, env=env)


def run_live_process(tmp_path: Path, server: FakeLLMServer, *extra: str, out: str = "out") -> subprocess.CompletedProcess:
    """A live run as `python -m bon.run` in a subprocess (tests of its exit code and what it says on stderr)."""
    command, env = live_command(tmp_path, server, *extra, out=out)
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=180)


def live_command(tmp_path: Path, server: FakeLLMServer, *extra: str, out: str = "out") -> tuple[list[str], dict]:
    """The `python -m bon.run` command line and environment of a live run on two tasks against `server`."""
    tasks = tmp_path / "tasks.jsonl"
    # the questions differ, so no request of one task is a cache hit of the other's (that would race)
    tasks.write_text("\n".join(json.dumps({"task_id": f"t{i}", "question": f"What is 2+3? ({i})", "answer": "5"})
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
    return [sys.executable, "-m", "bon.run", *args], env


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
    # one worker each: the pipeline through worker processes (tests/test_llm_workers.py runs two at once)
    proc = run_live(tmp_path, server, "generator.workers=1", "judge.workers=1")
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
        proc = run_in_process("bon.prm_eval", f"dataset.root={apb_root}", "dataset.subset=hotpotqa", "judge=local",
                              f"judge.api_base={srv.base_url}", "judge.concurrency=32", f"cache.dir={tmp_path / 'cache'}",
                              "hydra.run.dir=out", cwd=tmp_path, env=env)
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


# --- the design card's command, exactly as a new user types it ------------------------------------------------


def builtin_responder(body: dict) -> object:
    """Agent: inspect the attached file (or use the calculator), then answer; odd samples answer wrongly.
    Judge: a wrong answer gets -1 everywhere, a right one +1."""
    from bon.datasets import builtin

    messages = body["messages"]
    if body.get("tools"):
        user = next(m["content"] for m in messages if m["role"] == "user")
        attached = re.search(r"^- (\S+)$", user, re.MULTILINE)
        if not any(m["role"] == "tool" for m in messages):
            return (tool_call("inspect_file", {"path": attached.group(1)}) if attached
                    else tool_call("calculator", {"expression": "6*7"}))
        reference = {t.question: t.answer for t in builtin.all_tasks()}[user.split("\n\nAttached files")[0]]
        return tool_call("final_answer", {"answer": "-1" if (body.get("seed") or 0) % 2 else reference})
    prompt = messages[-1]["content"]
    steps = [int(line[1:line.index("]")]) for line in prompt.splitlines()
             if line.startswith("[") and "] assistant" in line]
    good = '"answer": "-1"' not in prompt
    return verdict({s: 1 if good else -1 for s in steps}, 1 if good else -1)


def test_the_card_command_runs_the_whole_live_pipeline_on_the_builtin_tasks(tmp_path):
    """`python -m bon.run generator=deepseek selector=two_stage` with only DEEPSEEK_API_KEY set (and the
    endpoint redirected by litellm's own DEEPSEEK_API_BASE): generate, judge, select, report."""
    from bon.datasets import builtin

    tasks = builtin.all_tasks()
    with FakeLLMServer(builtin_responder) as srv:
        env = {k: v for k, v in os.environ.items()
               if not k.endswith(("_API_KEY", "_API_BASE", "_BASE_URL")) and k != "HYDRA_FULL_ERROR"}
        env |= {"DEEPSEEK_API_KEY": SECRET, "DEEPSEEK_API_BASE": srv.base_url, "BON_CACHE_DIR": str(tmp_path / "cache"),
                "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
        proc = run_in_process("bon.run", "generator=deepseek", "selector=two_stage", cwd=tmp_path, env=env)
        requests = srv.requests
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    title = lines.index(f"two_stage on builtin/gaia_style ({len(tasks)} tasks, accuracy in %)")
    assert lines[title + 1].split()[:2] == ["judge", "tasks"]
    assert lines[title + 3].split()[:2] == ["deepseek", str(len(tasks))]  # the table's row for the judge
    summary_path = Path(next(l for l in lines if l.startswith("wrote ") and l.endswith("summary.json"))[len("wrote "):])
    assert summary_path.parent.parent.parent == tmp_path / "outputs"
    summary = json.loads(summary_path.read_text())
    n = 4 * len(tasks)  # the preset's 4 samples per task
    assert summary["n_candidates"] == n and summary["random"] == 0.5  # half the samples answer wrongly
    assert summary["accuracy"] == 1.0 and summary["pass_at_n"] == 1.0  # the judge finds the right half
    assert summary["usage"]["generation"]["calls"] == 2 * n and summary["usage"]["judging"]["calls"] == n
    agent = [r for r in requests if r.body.get("tools")]
    judge = [r for r in requests if not r.body.get("tools")]
    assert len(agent) == 2 * n and len(judge) == n
    assert {r.body["model"] for r in requests} == {"deepseek-chat"}  # litellm strips the provider prefix
    assert {r.path for r in requests} == {"/v1/chat/completions"}
    assert {t["function"]["name"] for t in agent[0].body["tools"]} == {"inspect_file", "python", "calculator",
                                                                     "final_answer"}
    system = agent[0].body["messages"][0]
    assert system["role"] == "system" and "thousands separators" in system["content"]  # GAIA's answer rules
    trajectories = [json.loads(l) for l in (summary_path.parent / "trajectories.jsonl").read_text().splitlines()]
    read = [t for t in trajectories if t["sample"] == 0 and t["metadata"]["tool_calls"][0]["name"] == "inspect_file"]
    assert len(read) == sum(1 for t in tasks if t.files)
    assert all(t["metadata"]["tool_errors"] == 0 for t in trajectories)
    assert all(SECRET in r.headers.get("authorization", "") for r in requests)


# --- outages, failed samples, budgets and what the terminal shows (issue 11, sections 2-4) -----------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def failing_sample(bad_sample: int, fault=None):
    """The usual responder, except that the agent's first call for `bad_sample` (seed) fails with `fault`
    (a 400 by default: not retried, and not a connection or key problem, so no breaker trips)."""
    from llm_server import bad_request

    def respond(body: dict) -> object:
        if body.get("tools") and body.get("seed") == bad_sample and not any(
                m["role"] == "assistant" for m in body["messages"]):
            return fault or bad_request("Invalid value for 'seed'.")
        return responder(body)
    return respond


def judge_requests(server: FakeLLMServer) -> int:
    return sum(1 for r in server.requests if not r.body.get("tools"))


def test_a_closed_port_stops_the_run_at_once_naming_the_endpoint(tmp_path, server):
    port = closed_port()
    proc = run_live(tmp_path, server, f"generator.api_base=http://127.0.0.1:{port}/v1", "generator.max_attempts=5")
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "ConnectionRefusedError" in errors[0]
    assert "Traceback" not in proc.stderr and "InternalServerError" not in proc.stdout + proc.stderr
    assert server.count == 0  # the judge was never called


def test_a_step_less_failed_sample_is_a_failed_candidate_not_a_judge_call(tmp_path, server):
    server.responder = failing_sample(3)
    proc = run_live(tmp_path, server)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["generation_failed"] == 2 and summary["judge_failed"] == 0  # task t0 and t1, sample 3
    assert summary["usage"]["generation"]["generation_failed"] == 2
    assert summary["usage"]["generation"]["stop_reasons"] == {"answer": 6, "error": 2}
    assert judge_requests(server) == 6 and summary["usage"]["judging"]["calls"] == 6
    judgements = [json.loads(l) for l in (tmp_path / "out" / "judgements.jsonl").read_text().splitlines()]
    skipped = [j for j in judgements if j["sample"] == 3]
    assert all(j["status"] == "failed" and "generation failed" in j["reason"] for j in skipped)
    import polars as pl

    table = pl.read_parquet(tmp_path / "out" / "candidates.parquet")
    failed = table.filter(pl.col("generation_failed"))
    assert failed["sample"].to_list() == [3, 3] and failed["success"].to_list() == [False, False]
    header, _, row = proc.stdout.splitlines()[1:4]
    assert "gen failed" in header and row.split()[-2:] == ["0", "2"]  # judge failed, gen failed
    # the terminal gets one line for the kind of failure, run.log every failed call
    said = [line for line in proc.stderr.splitlines() if "failed with bad_request" in line]
    assert len(said) == 1 and said[0].startswith("generation: 2 of ")
    assert "call failed after" not in proc.stdout + proc.stderr
    assert (tmp_path / "out" / "run.log").read_text().count("call failed after 1 attempt(s): bad_request") == 2


def test_a_run_in_which_every_generation_failed_exits_non_zero(tmp_path, server):
    from llm_server import bad_request

    server.responder = lambda body: bad_request("Unsupported parameter: 'tools'.") if body.get("tools") else "?"
    proc = run_live(tmp_path, server)  # exit codes as a process's: test_a_budget_stops_new_calls... runs one
    assert proc.returncode == 1
    assert "every generation failed (bad_request: 8)" in proc.stderr and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stopped"]["by"] == "failures" and summary["generation_failed"] == 8
    assert judge_requests(server) == 0


def test_a_run_in_which_every_judgement_failed_exits_non_zero(tmp_path, server):
    from llm_server import bad_request

    server.responder = lambda body: responder(body) if body.get("tools") else bad_request("Invalid 'messages'.")
    proc = run_live(tmp_path, server)
    assert proc.returncode == 1 and "every judgement failed (api: bad_request: 8)" in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["judge_failed"] == 8 and summary["generation_failed"] == 0


def test_resuming_from_a_store_generates_failed_samples_again(tmp_path, server):
    store = tmp_path / "store.jsonl"
    server.responder = failing_sample(3)
    first = run_live(tmp_path, server, f"generator.store={store}")
    assert first.returncode == 0, first.stderr
    server.responder = responder  # the outage is over
    server.reset()
    kept = run_live(tmp_path, server, f"generator.store={store}", "generator.retry_failed=false", out="kept")
    assert kept.returncode == 0, kept.stderr
    assert server.count - judge_requests(server) == 0  # nothing regenerated: the failures are reused
    assert json.loads((tmp_path / "kept" / "summary.json").read_text())["generation_failed"] == 2
    server.reset()
    again = run_live(tmp_path, server, f"generator.store={store}", out="again")
    assert again.returncode == 0, again.stderr
    agent = [r.body for r in server.requests if r.body.get("tools")]
    assert {b["seed"] for b in agent} == {3} and len(agent) == 4  # the two failed samples, two calls each
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["generation_failed"] == 0 and summary["usage"]["generation"]["stop_reasons"] == {"answer": 8}
    assert "8 trajectories: 6 reused" in again.stderr


def test_the_plan_is_printed_before_the_first_call_with_the_cache_hits_it_expects(tmp_path, server):
    first = run_live(tmp_path, server)
    assert first.returncode == 0, first.stderr
    plan = first.stderr.split("generate ")[0]  # what was said before the progress bar started
    assert "plan: 2 tasks x 4 samples = 8 trajectories: 0 reused" in plan
    assert "the cache answers 0 of their 8 first calls" in plan
    assert f"generator: openai/local-model at 127.0.0.1:{server.port} (concurrency 16, no rpm limit)" in plan
    assert "no price known for model openai/local-model" in plan
    assert "set generator.prices='{input_per_mtok: <USD>, output_per_mtok: <USD>}' (and judge.prices likewise)" in plan
    assert "cost=unpriced" in first.stderr and "$0.0000+?" not in first.stderr
    again = run_live(tmp_path, server, out="again")
    assert "the cache answers 8 of their 8 first calls" in again.stderr
    assert "judge local: 8 trajectories, 8 first calls of which the cache answers 8" in again.stderr


def priced(body: dict) -> object:
    """`responder` with 1000 prompt and 1000 completion tokens per reply: $0.002 a call at $1 per million."""
    return dataclasses.replace(responder(body), prompt_tokens=1000, completion_tokens=1000)


@pytest.mark.parametrize("cap", ["budget.usd=0.01", "budget.calls=5"])
def test_a_budget_stops_new_calls_writes_what_it_has_and_says_so(tmp_path, server, cap):
    server.responder = priced
    prices = "{input_per_mtok: 1.0, output_per_mtok: 1.0}"
    # one kind of stop as a user's process ends it (on the native transport: the budget is the client's, the
    # same on both), the other in this process through litellm (the same exit code and lines)
    run, transport = (run_live_process, NATIVE) if cap.startswith("budget.usd") else (run_live, ())
    proc = run(tmp_path, server, cap, "generator.concurrency=1", "judge.concurrency=1",
               f"generator.prices={prices}", f"judge.prices={prices}", *transport)
    assert proc.returncode == 3, proc.stderr
    assert server.count == 5  # $0.002 a call: the fifth reaches $0.01
    stop = [line for line in proc.stderr.splitlines() if line.startswith("stopped:")]
    assert len(stop) == 1 and "budget reached" in stop[0] and "Traceback" not in proc.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["stopped"]["by"] == "budget"
    budget = summary["usage"]["budget"]
    assert budget["stopped"] and budget["calls_made"] == 5 and budget["spent_usd"] == pytest.approx(0.01)
    assert summary["usage"]["generation"]["failures"]["budget"] >= 1
    assert (tmp_path / "out" / "candidates.parquet").exists() and summary["n_candidates"] == 8


def test_log_lines_are_never_glued_to_a_progress_bar(tmp_path, capsys):
    import logging
    import re

    from tqdm import tqdm

    from bon import live

    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)  # as Hydra's console handler
    root.addHandler(console)
    try:
        with live.run_logging(tmp_path):
            bar = tqdm(total=3, file=sys.stderr, desc="generate")
            bar.update(1)
            logging.getLogger("bon.some.module").warning("a warning while the bar runs")
            logging.getLogger("bon.llm.calls").info("one failed call's details")
            bar.update(1)
            bar.close()
    finally:
        root.removeHandler(console)
    err = capsys.readouterr().err
    assert "a warning while the bar runs" in re.split(r"[\r\n]", err)  # a line of its own
    assert "failed call" not in err
    assert "one failed call's details" in (tmp_path / "run.log").read_text()


@pytest.mark.parametrize("option,message", [
    ("budget.usd=1", "budget.usd is set but model openai/local-model has no known price"),
    ("budget.calls=0", "budget.calls must be an integer >= 1"),
])
def test_a_budget_that_cannot_be_kept_is_refused_before_any_call(tmp_path, server, option, message):
    proc = run_live(tmp_path, server, option)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert server.count == 0


# --- judgements.jsonl resumes like trajectories.jsonl (issue 17, section 4) -------------------------------------


def read_judgements(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def slow_judge(body: dict) -> object:
    """`responder`, with each judge reply taking 0.4 s, so a run can be killed mid-judging."""
    reply = responder(body)
    return reply if body.get("tools") else dataclasses.replace(reply, latency=0.4)


def test_a_run_killed_mid_judging_keeps_its_judgements_and_the_rerun_judges_only_the_rest(tmp_path, server):
    import signal
    import time

    from bon.judges.store import load

    server.responder = slow_judge
    # no response cache: every judge call the rerun makes reaches the server, so reuse is what is counted
    # the judge store is under test, not the transport: native spares the killed process litellm's import
    command, env = live_command(tmp_path, server, "cache.mode=off", "judge.concurrency=1", *NATIVE)
    path = tmp_path / "out" / "judgements.jsonl"
    child = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (path.exists() and len(path.read_bytes().splitlines()) >= 2):
            assert child.poll() is None, child.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run wrote no judgement"
            time.sleep(0.02)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(10)
        child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    kept = load(path)
    assert 2 <= len(kept) < 8  # killed mid-judging; what it finished is on disk
    before = {(r["task_id"], r["sample"]): r for r in read_judgements(path)}

    time.sleep(0.6)  # let the judge request the child left in flight reach the server before counting
    server.responder = responder
    server.reset()
    again = run_live(tmp_path, server, "cache.mode=off", "judge.concurrency=1")  # the same run directory
    assert again.returncode == 0, again.stderr
    assert server.count == judge_requests(server) == 8 - len(kept)  # nothing regenerated, nothing re-judged
    assert f"judge local: 8 trajectories, {len(kept)} reused from {path}, {8 - len(kept)} first calls" in again.stderr
    final = read_judgements(path)
    pairs = [(r["task_id"], r["sample"]) for r in final]
    assert sorted(pairs) == sorted(set(pairs)) == [(f"t{i}", s) for i in range(2) for s in range(4)]
    assert all(r["status"] == "ok" and r["schema"] == "bon.judgement/1" for r in final)
    assert all(r == before[(r["task_id"], r["sample"])] for r in final if (r["task_id"], r["sample"]) in before)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["accuracy"] == 1.0 and summary["judge_failed"] == 0


def test_a_judge_store_reuses_finished_judgements_judges_failed_ones_again_and_keys_on_the_settings(tmp_path, server):
    from llm_server import bad_request

    from bon.judges.store import load

    store = tmp_path / "judgements.jsonl"
    shared = ("cache.mode=off", f"judge.store={store}", f"generator.store={tmp_path / 'trajectories.jsonl'}")
    # an outage of the judge for the wrong answers (samples 1 and 3): four judgements fail
    server.responder = lambda body: (bad_request("Invalid 'messages'.")
                                     if not body.get("tools") and '"answer": "6"' in body["messages"][-1]["content"]
                                     else responder(body))
    first = run_live(tmp_path, server, *shared)
    assert first.returncode == 0, first.stderr
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["judge_failed"] == 4

    server.responder = responder  # the outage is over
    server.reset()
    again = run_live(tmp_path, server, *shared, out="again")
    assert again.returncode == 0, again.stderr
    assert server.count == judge_requests(server) == 4  # only the failed judgements are judged again
    assert f"judge local: 8 trajectories, 4 reused from {store}, 4 first calls" in again.stderr
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["judge_failed"] == 0 and summary["accuracy"] == 1.0
    final = read_judgements(tmp_path / "again" / "judgements.jsonl")  # the run directory gets its own, each once
    assert sorted((r["task_id"], r["sample"]) for r in final) == [(f"t{i}", s) for i in range(2) for s in range(4)]

    server.reset()
    orm = run_live(tmp_path, server, *shared, "judge.mode=orm", out="orm")
    assert orm.returncode == 0, orm.stderr
    assert judge_requests(server) == 8  # other judge settings: nothing is reused
    assert len(load(store)) == 16  # the shared store keeps both settings' judgements

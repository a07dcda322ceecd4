"""Cost-aware Best-of-N on ReHAC episodes with a live LLM judge as the predictor (loopback server)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from commands import run_in_process
from llm_server import FakeLLMServer, text, verdict

LINES = [*range(1, 11), *range(31, 41)]  # three questions of strategyqa (idx 296, 201, 419)
FAILING = "jackfruit"  # every episode of idx 296: the judge's reply is unusable
LAM = 0.08


def judge(body: dict) -> object:
    """Predicts success iff the agent answered true; garbage for one question."""
    prompt = body["messages"][-1]["content"]
    if FAILING in prompt:
        return text("I cannot decide.")
    return verdict({}, 1 if "Finish[true]" in prompt else -1)


@pytest.fixture()
def episodes_file(rehac_root, tmp_path) -> Path:
    lines = (rehac_root / "dataset/gpt4/strategyqa.jsonl").read_text().splitlines()
    path = tmp_path / "few.jsonl"
    path.write_text("\n".join(lines[i - 1] for i in LINES) + "\n")
    return path


def run(tmp_path: Path, episodes: Path, *extra: str, base_url: str = "http://127.0.0.1:9/v1",
        out: str = "out", in_process: bool = False) -> subprocess.CompletedProcess:
    """`python -m bon.run dataset=rehac` with the live judge; in_process: in this process (commands.py)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    args = ["dataset=rehac", f"dataset.episodes={episodes}", "dataset.reference=[]", "dataset.test_episodes=null",
            "dataset.trained=null",
            "dataset.predictors=[judge,oracle]", "judge=local", f"judge.api_base={base_url}", "judge.mode=orm",
            "judge.max_attempts=1", f"cache.dir={tmp_path / 'cache'}", "bootstrap_resamples=200",
            f"hydra.run.dir={tmp_path / out}"]
    if any(e.startswith("judge=") for e in extra):  # another judge: drop the local one's options
        args = [a for a in args if not a.startswith("judge")]
    args += list(extra)
    if in_process:
        return run_in_process("bon.run", *args, cwd=tmp_path, env=env)
    return subprocess.run([sys.executable, "-m", "bon.run", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=env, timeout=180)


def expected_judge_row(path: Path) -> tuple[float, int, int]:
    """Mean R at LAM of the judge's picks, from the raw JSON and the judge's rule (no bon code)."""
    by_idx = defaultdict(list)
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if FAILING in rec["trajectory"]:
            continue
        predicted = 1.0 if "Finish[true]" in rec["trajectory"] else 0.0
        by_idx[rec["idx"]].append((predicted - LAM * rec["trajectory"].count("<solver> human"),
                                   rec["em"] - LAM * rec["trajectory"].count("<solver> human")))
    r = []
    for candidates in by_idx.values():
        best = max(score for score, _ in candidates)
        tied = [value for score, value in candidates if score >= best - 1e-9]
        r.append(sum(tied) / len(tied))
    skipped = len({json.loads(line)["idx"] for line in path.read_text().splitlines()}) - len(by_idx)
    return sum(r) / len(r), len(by_idx), skipped


def test_judge_predictor_picks_by_the_judges_verdicts_and_counts_failures(tmp_path, episodes_file):
    with FakeLLMServer(judge) as server:
        proc = run(tmp_path, episodes_file, base_url=server.base_url, in_process=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert server.count == len(LINES)
        prompts = [r.body["messages"][-1]["content"] for r in server.requests]
        # the judge predicts the outcome, it does not read it; nor does it see who acted
        for prompt in prompts:
            assert "reward =" not in prompt and "<solver>" not in prompt and "human" not in prompt
        assert sum("Finish[" in p for p in prompts) >= len(LINES) - 2

        summary = json.loads((tmp_path / "out" / "summary.json").read_text())
        row = next(r for r in summary["best_of_n"] if r["selector"] == "judge" and r["lambda"] == LAM)
        r, n_questions, skipped = expected_judge_row(episodes_file)
        assert row["r"] == pytest.approx(r)
        assert (row["n_questions"], row["questions_skipped"], row["no_prediction"]) == (n_questions, skipped, 4)
        assert summary["usage"]["judging"]["judgements_failed"] == 4
        records = [json.loads(line) for line in (tmp_path / "out" / "judge_predictions.jsonl").read_text().splitlines()]
        assert len(records) == len(LINES)
        failed = [rec for rec in records if rec["status"] == "failed"]
        assert len(failed) == 4 and all(rec["reason"] and rec["predicted_t"] is None for rec in failed)
        assert "no prediction for 4 episodes" in proc.stdout and "judging: 20 calls" in proc.stdout

        # a rerun is served by the cache: no request reaches the server, same numbers
        before = server.count
        again = run(tmp_path, episodes_file, base_url=server.base_url, out="again", in_process=True)
        assert again.returncode == 0, again.stderr[-3000:]
        assert server.count == before
        rerun = json.loads((tmp_path / "again" / "summary.json").read_text())
        assert next(r for r in rerun["best_of_n"] if r["selector"] == "judge" and r["lambda"] == LAM)["r"] == row["r"]


def test_judge_predictor_needs_a_live_judge_and_its_key(tmp_path, episodes_file):
    proc = run(tmp_path, episodes_file, "judge=sim", in_process=True)
    assert proc.returncode == 2 and "needs a live LLM judge" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(tmp_path, episodes_file, "judge.api_key_env=BON_UNSET_TEST_KEY", in_process=True)
    assert proc.returncode == 2 and "BON_UNSET_TEST_KEY is not set" in proc.stderr
    assert not (tmp_path / "out" / "summary.json").exists()

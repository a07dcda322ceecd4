"""StepAcc / FirstErrAcc on the recorded judges must reproduce the AgentProcessBench paper's Table 3."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from bon_error import bon_error
from commands import run_in_process

from bon import prm_eval
from bon.datasets import agentprocessbench as apb
from bon.errors import BonError
from bon.metrics import PrmScore
from bon.types import Judgement

# Table 3 of arXiv 2603.14465 (see the file's header for what is transcribed and from where)
PAPER = pl.read_csv(Path(__file__).with_name("paper_table3.csv"), comment_prefix="#")
TOLERANCE = 0.1  # the paper prints one decimal


@pytest.fixture(scope="module")
def frame(apb_root) -> pl.DataFrame:
    scores = prm_eval.score({"name": "agentprocessbench", "subset": "all", "root": str(apb_root)},
                            {"kind": "replay", "name": "all"})
    return prm_eval.to_frame(scores)


def test_every_recorded_judge_has_a_paper_row(apb_root, frame):
    judges = list(apb.judge_dirs(apb_root))
    assert judges, f"no judge directories under {apb_root / 'eval' / 'results'}"
    unmapped = sorted(set(judges) - set(PAPER["judge"]))
    assert not unmapped, f"judges in the data with no row of the paper's Table 3: {unmapped}"
    assert sorted(frame["judge"].unique()) == sorted(judges)


def test_reproduces_paper_table3(frame):
    ours = {(r["judge"], r["subset"]): r for r in frame.iter_rows(named=True)}
    checked, wrong = 0, []
    for row in PAPER.filter(pl.col("judge").is_in(frame["judge"].unique().to_list())).iter_rows(named=True):
        for metric in ("step_acc", "first_err_acc"):
            if row[metric] is None:
                continue
            got = ours[row["judge"], row["subset"]][metric]
            checked += 1
            if abs(got - row[metric]) > TOLERANCE:
                wrong.append(f"{row['judge']} {row['subset']} {metric}: {got} vs paper {row[metric]}")
    assert checked > 0, "no paper cell to compare with"
    assert not wrong, "\n".join(wrong)


def test_every_judge_and_step_is_counted(apb_root, frame):
    assert frame["judge"].n_unique() == len(apb.judge_dirs(apb_root))
    avg = frame.filter(pl.col("subset") == "avg")
    # 8,509 human-labelled steps and 1,000 trajectories in the benchmark, none dropped
    assert set(avg["n_steps"]) == {8509}
    assert set(avg["n_trajectories"]) == {1000}
    # the failed calls in the release (comment llm_annotate_failed:) are counted, not dropped
    llama = avg.filter(pl.col("judge") == "Llama-3.2-3B-Instruct").row(0, named=True)
    assert llama["n_failed"] == 98
    # the stricter reading never credits more than the published one
    assert (avg["first_err_acc_strict"] <= avg["first_err_acc"]).all()


def test_judge_slug_and_stripped_names_resolve(apb_root):
    for name in ("GPT-5.2-Thinking (medium)", "gpt-5.2-thinking-medium"):
        scores = prm_eval.score({"name": "agentprocessbench", "subset": "hotpotqa", "root": str(apb_root)},
                                {"kind": "replay", "name": name})
        assert list(scores) == ["GPT-5.2-Thinking (medium)"]


def test_human_judge_is_perfect(apb_root):
    scores = prm_eval.score({"name": "agentprocessbench", "subset": "all", "root": str(apb_root)}, {"kind": "human"})
    pooled = scores["human"]["avg"]
    assert pooled.step_acc == 1.0 and pooled.first_err_acc == 1.0 and pooled.first_err_acc_strict == 1.0


def test_failed_call_compares_its_empty_labels_like_the_paper():
    clean, flawed = Judgement("human", {2: 1, 4: 1}, 1), Judgement("human", {2: 1, 4: -1}, -1)
    failed = Judgement("j", {2: None, 4: None}, None, status="failed", reason="timeout")
    score = PrmScore()
    score.add([2, 4], clean, failed)   # no -1 on either side: a first-error match, as in the paper
    score.add([2, 4], flawed, failed)  # the human found an error the failed call cannot have found
    assert score.n_first_error_correct == 1 and score.n_first_error_strict_correct == 0
    assert score.n_steps == 4 and score.n_step_correct == 0  # a failed call never becomes labels
    assert score.n_failed == 2
    assert score.confusion[:, 3].tolist() == [1, 0, 3]  # every step of a failed call is "missing"


def test_judge_first_error_skips_unlabelled_steps():
    human = Judgement("human", {2: 1, 4: -1, 6: -1}, -1)
    gap = Judgement("j", {2: None, 4: -1, 6: -1}, -1)  # step 2 unlabelled, first -1 at 4
    score = PrmScore()
    score.add([2, 4, 6], human, gap)
    assert score.n_first_error_correct == 1  # the paper: first -1 among the labels given
    assert score.n_first_error_strict_correct == 0  # strict: the judge's first error is unknown
    assert score.n_step_correct == 2
    clean = PrmScore()  # a judge that labels nothing -1 matches a trajectory without errors, gaps or not
    clean.add([2, 4], Judgement("human", {2: 1, 4: 0}, 1), Judgement("j", {2: 1}, 1))
    assert clean.first_err_acc == 1.0 and clean.first_err_acc_strict == 0.0


def test_first_error_compares_index_of_first_minus_one():
    human = Judgement("human", {2: 1, 4: -1, 6: -1}, -1)
    early, same = PrmScore(), PrmScore()
    early.add([2, 4, 6], human, Judgement("j", {2: -1, 4: -1, 6: -1}, -1))
    same.add([2, 4, 6], human, Judgement("j", {2: 0, 4: -1, 6: 1}, -1))
    assert early.first_err_acc == 0.0 and early.first_err_acc_strict == 0.0
    assert same.first_err_acc == 1.0 and same.first_err_acc_strict == 1.0


def test_pooling_adds_every_count():
    a, b = PrmScore(), PrmScore()
    a.add([1], Judgement("human", {1: -1}, -1), Judgement("j", {1: -1}, -1))
    b.add([1, 3], Judgement("human", {1: 1, 3: 0}, 1), Judgement("j", {}, None, status="failed"))
    pooled = a + b
    assert (pooled.n_steps, pooled.n_step_correct, pooled.n_trajectories, pooled.n_failed) == (3, 1, 2, 1)
    assert (pooled.n_first_error_correct, pooled.n_first_error_strict_correct) == (2, 1)
    assert pooled.confusion.sum() == 3


def test_prm_eval_command_writes_csv(apb_root, tmp_path):
    out = tmp_path / "run"
    proc = run_in_process("bon.prm_eval", "dataset=agentprocessbench", f"dataset.root={apb_root}", "judge.name=GPT-5.2",
                          f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    csv = pl.read_csv(out / "prm_eval.csv")
    assert csv.columns == ["judge", "subset", "step_acc", "first_err_acc", "first_err_acc_strict", "n_steps",
                           "n_trajectories", "n_failed"]
    assert csv.filter(pl.col("subset") == "avg")["step_acc"].item() == pytest.approx(70.1, abs=0.1)
    assert "Confusion" in proc.stdout


@pytest.mark.parametrize("args, said", [
    # a run's option that judge scoring does not read is refused, not silently ignored
    (["selector=majority"], "Could not override 'selector'"),
    (["bootstrap_resamples=10"], "bootstrap_resamples"),
    # a dataset without human step labels, before its options are read (rehac's read the run's seed)
    (["dataset=rehac"], "judge quality needs human step labels: use dataset=agentprocessbench (got dataset=rehac)"),
    (["dataset=sim"], "judge quality needs human step labels: use dataset=agentprocessbench (got dataset=sim)"),
])
def test_options_prm_eval_does_not_read_are_one_line(apb_root, tmp_path, args, said):
    proc = run_in_process("bon.prm_eval", *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and said in lines[0], proc.stderr


def test_released_trajectories_address_steps_by_assistant_message_index(apb_root):
    from bon.datasets import agentprocessbench as apb

    trajectories = apb.trajectories(apb_root)
    records = {r.record_id: r for r in apb.load_records(apb_root, "hotpotqa")}
    assert len(trajectories) == len(records) == 250
    for record_id, trajectory in trajectories.items():
        # every assistant message is one human-labelled step, keyed by its absolute index
        assert trajectory.step_indices == list(records[record_id].steps)
        assert trajectory.success == records[record_id].success
        assert records[record_id].answer == trajectory.answer


# --- a small synthetic release written in tmp_path: names and bad inputs (never a copy of the data) ---

def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _human(q: int, s: int) -> dict:
    return {"record_id": f"searchR1_hotpotqa:{q}:{s}", "query_index": q, "sample_index": s,
            "step_labels": {"2": 1, "4": -1 if s else 1}, "final_label": -1 if s else 1}


def _judged(q: int, s: int, labels: dict) -> dict:
    return {"record_id": f"searchR1_hotpotqa:{q}:{s}", "step_labels": labels, "final_label": 1, "comment": ""}


KEYS = [(q, s) for q in range(2) for s in range(2)]


def _fake_release(root: Path, judges: dict[str, str]) -> Path:
    """hotpotqa labels for 2 tasks x 2 samples, and one results file per judge directory (name -> file)."""
    _write_jsonl(root / "data" / "AnswerOnly" / "hotpotqa_final.jsonl", [_human(q, s) for q, s in KEYS])
    for directory, filename in judges.items():
        _write_jsonl(root / "eval" / "results" / directory / filename,
                     [_judged(q, s, {"2": 1, "4": 1}) for q, s in KEYS])  # right on samples 0, wrong on step 4 of 1
    return root


ODD_NAMES = {
    "GPT-5.2-Chat ": "hotpotqa__blind_gpt-5.2-chat.jsonl",  # trailing space, as upstream
    "GPT-5.2-Thinking (medium) ": "hotpotqa__blind_gpt-5.2-medium.jsonl",
    "Qwen3-8B": "hotpotqa__blind_Qwen3-8B-Non-Thinking.jsonl",
    "Qwen3-8B-Thinking": "hotpotqa__blind_Qwen3-8B-Thinking.jsonl",
    "Kimi-K2.5": "hotpotqa__blind_kimi-k2.5-Non-Thinking.jsonl",
}


def _score(root: Path, name: str) -> dict:
    return prm_eval.score({"name": "agentprocessbench", "subset": "hotpotqa", "root": str(root)},
                          {"kind": "replay", "name": name})


@pytest.mark.parametrize("name, canonical", [
    ("GPT-5.2-Chat", "GPT-5.2-Chat"), ("GPT-5.2-Chat ", "GPT-5.2-Chat"), ("gpt-5.2-chat", "GPT-5.2-Chat"),
    ("GPT-5.2-Thinking (medium)", "GPT-5.2-Thinking (medium)"),
    ("gpt-5.2-thinking-medium", "GPT-5.2-Thinking (medium)"),
    ("Qwen3-8B", "Qwen3-8B"), ("qwen3-8b-thinking", "Qwen3-8B-Thinking"), ("kimi-k2.5", "Kimi-K2.5"),
])
def test_judge_names_with_spaces_dots_and_parentheses_resolve(tmp_path, name, canonical):
    scores = _score(_fake_release(tmp_path, ODD_NAMES), name)
    assert list(scores) == [canonical]
    pooled = scores[canonical]["avg"]
    assert (pooled.n_steps, pooled.n_step_correct) == (8, 6)  # step 4 of the two sample-1 records is wrong
    assert pooled.first_err_acc == 0.5


def test_all_counts_every_judge_directory_and_unknown_names_list_them(tmp_path):
    root = _fake_release(tmp_path, ODD_NAMES)
    assert sorted(_score(root, "all")) == sorted(n.strip() for n in ODD_NAMES)
    with pytest.raises(BonError, match="unknown judge 'Qwen3-8'") as err:
        _score(root, "Qwen3-8")
    assert "GPT-5.2-Chat" in str(err.value) and "GPT-5.2-Thinking (medium)" in str(err.value)


def test_non_integer_sample_index_names_file_and_line(tmp_path):
    root = _fake_release(tmp_path, {"J": "hotpotqa__blind_j.jsonl"})
    records = [_human(q, s) for q, s in KEYS]
    records[1]["sample_index"] = "x"
    path = _write_jsonl(root / "data" / "AnswerOnly" / "hotpotqa_final.jsonl", records)
    message = bon_error(lambda: apb.load_records(root, "hotpotqa"))
    assert f"{path}:2" in message and "sample_index" in message and "'x'" in message


@pytest.mark.parametrize("target", ["labels", "judge", "trajectories"])
def test_a_byte_that_is_not_utf8_names_file_and_line(tmp_path, target):
    root = _fake_release(tmp_path, {"J": "hotpotqa__blind_j.jsonl"})
    path = {"labels": root / "data" / "AnswerOnly" / "hotpotqa_final.jsonl",
            "judge": root / "eval" / "results" / "J" / "hotpotqa__blind_j.jsonl",
            "trajectories": root / "data" / "AgentProcessBench" / "hotpotqa.jsonl"}[target]
    if target == "trajectories":
        _write_jsonl(path, [{"data_source": "searchR1_hotpotqa", "query_index": 0, "sample_index": 0, "messages": []}])
    lines = path.read_bytes().splitlines(keepends=True)
    lines.insert(1 if len(lines) > 1 else 0, b'{"comment": "caf\xe9"}\n')  # Latin-1, not UTF-8
    path.write_bytes(b"".join(lines))
    line = 2 if target != "trajectories" else 1
    message = bon_error(lambda: _score(root, "J"))
    assert f"{path}:{line}" in message and "UTF-8" in message and "0xe9" in message


def test_trajectory_without_data_source_says_why_it_is_needed(tmp_path):
    root = _fake_release(tmp_path, {"J": "hotpotqa__blind_j.jsonl"})
    path = _write_jsonl(root / "data" / "AgentProcessBench" / "hotpotqa.jsonl",
                        [{"query_index": 0, "sample_index": 0, "messages": []}])
    message = bon_error(lambda: apb.trajectories(root))
    assert f"{path}:1" in message and "data_source" in message and "record_id" in message


@pytest.mark.parametrize("target", ["labels", "trajectories"])
def test_duplicate_query_and_sample_index_names_both_lines(tmp_path, target):
    root = _fake_release(tmp_path, {"J": "hotpotqa__blind_j.jsonl"})
    if target == "labels":
        records = [_human(q, s) for q, s in KEYS]
        records.append({**records[0], "record_id": "searchR1_hotpotqa:copy"})
        path = _write_jsonl(root / "data" / "AnswerOnly" / "hotpotqa_final.jsonl", records)
        call = lambda: apb.load_records(root, "hotpotqa")  # noqa: E731
    else:
        step = {"data_source": "searchR1_hotpotqa", "query_index": 1, "sample_index": 0, "messages": []}
        path = _write_jsonl(root / "data" / "AgentProcessBench" / "hotpotqa.jsonl",
                            [step, {**step, "sample_index": 1}, step])
        call = lambda: apb.trajectories(root)  # noqa: E731
    message = bon_error(call)
    assert f"{path}:{5 if target == 'labels' else 3}" in message and "line 1" in message
    assert "query_index, sample_index" in message


def test_empty_judge_file_is_an_error_not_250_failed_calls(tmp_path):
    root = _fake_release(tmp_path, {"J": "hotpotqa__blind_j.jsonl"})
    path = root / "eval" / "results" / "J" / "hotpotqa__blind_j.jsonl"
    path.write_bytes(b"")
    proc = subprocess.run([sys.executable, "-m", "bon.prm_eval", f"dataset.root={root}", "dataset.subset=hotpotqa",
                           "judge.name=J", f"hydra.run.dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and str(path) in proc.stderr and "empty" in proc.stderr
    assert "StepAcc" not in proc.stdout and not (tmp_path / "out" / "prm_eval.csv").exists()


def test_judge_file_of_other_trajectories_is_an_error(tmp_path):
    root = _fake_release(tmp_path, {"J": "hotpotqa__blind_j.jsonl"})
    path = _write_jsonl(root / "eval" / "results" / "J" / "hotpotqa__blind_j.jsonl",
                        [{**_judged(0, 0, {}), "record_id": "tau2:0:0"}])
    message = bon_error(lambda: _score(root, "J"))
    assert str(path) in message and "tau2:0:0" in message


def test_judge_names_that_collide_are_refused_not_guessed(tmp_path):
    root = _fake_release(tmp_path, {"Qwen3 8B": "hotpotqa__blind_a.jsonl", "qwen3-8b": "hotpotqa__blind_b.jsonl"})
    assert list(_score(root, "qwen3-8b")) == ["qwen3-8b"]  # an exact name wins
    message = bon_error(lambda: _score(root, "QWEN3 8b"))
    assert "Qwen3 8B" in message and "qwen3-8b" in message
    (root / "eval" / "results" / "Qwen3 8B ").mkdir()
    message = bon_error(lambda: _score(root, "all"))
    assert "'Qwen3 8B'" in message and "'Qwen3 8B '" in message


def test_csv_files_are_the_bytes_polars_writes(apb_root, tmp_path):
    """prm_eval writes its CSVs without polars; readers of earlier runs' files must see no difference."""
    scores = prm_eval.score({"name": "agentprocessbench", "subset": "all", "root": str(apb_root)},
                            {"kind": "replay", "name": "all"})
    odd = [{"judge": name, "share": share, "count": i} for i, (name, share) in enumerate(zip(
        ["a,b", 'say "x"', "two\nlines", "cr\rhere", "", " spaced ", "é"],
        [1e-5, 6.787239593088919e-05, 1.5e-7, float("nan"), 1e16, -0.0, 100.0]))]
    odd += [{"judge": "r", "share": float(x), "count": 0}
            for x in np.random.default_rng(0).random(2000) * 10.0 ** np.random.default_rng(1).integers(-12, 20, 2000)]
    for name, rows in [("prm_eval", prm_eval.table_rows(scores)), ("confusion", prm_eval.confusion_rows(scores)),
                       ("odd", odd)]:
        prm_eval.write_csv(rows, tmp_path / f"{name}.csv")
        pl.DataFrame(rows).write_csv(tmp_path / f"{name}.polars.csv")
        assert (tmp_path / f"{name}.csv").read_bytes() == (tmp_path / f"{name}.polars.csv").read_bytes(), name

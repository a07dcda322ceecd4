"""Every recorded judge, not just the ones whose paper numbers we have: bon.prm_eval must give exactly
the counts of a plain, independent reading of the published metric definitions over the raw files.

The reading below (the paper's, as its evaluation script applies it): StepAcc compares the judge's label
with the human one on every human-labelled step (a null or absent label never matches); FirstErrAcc
compares the smallest step index labelled -1 on each side, taking the judge's labels exactly as the
record gives them (a failed call's null labels are simply not -1), and no -1 on both sides is a match.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bon import prm_eval

SUBSETS = ("hotpotqa", "gaia_dev", "bfcl", "tau2")


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _first_minus_one(labels: dict[str, object]) -> int | None:
    return min((int(k) for k, v in labels.items() if v == -1), default=None)


def _reference_counts(root: Path, judge_dir: Path) -> dict[str, tuple[int, int, int, int]]:
    """(steps, steps correct, trajectories, first errors correct) per subset, straight from the JSON."""
    counts = {}
    for subset in SUBSETS:
        human = {r["record_id"]: r for r in _read(root / "data" / "AnswerOnly" / f"{subset}_final.jsonl")}
        (results,) = judge_dir.glob(f"{subset}__*.jsonl")
        judged = {r["record_id"]: r for r in _read(results)}
        steps = correct = first_ok = 0
        for record_id, h in human.items():
            predicted = (judged.get(record_id) or {}).get("step_labels") or {}
            for index, label in h["step_labels"].items():
                steps += 1
                correct += predicted.get(index) == label
            first_ok += _first_minus_one(h["step_labels"]) == _first_minus_one(predicted)
        counts[subset] = (steps, correct, len(human), first_ok)
    return counts


@pytest.fixture(scope="module")
def bon_scores(apb_root):
    return prm_eval.score({"name": "agentprocessbench", "subset": "all", "root": str(apb_root)},
                          {"kind": "replay", "name": "all"})


def test_every_judge_matches_the_published_definition_exactly(apb_root, bon_scores):
    judge_dirs = sorted((apb_root / "eval" / "results").iterdir())
    assert judge_dirs, "no recorded judges in the data"
    assert sorted(bon_scores) == sorted(d.name.strip() for d in judge_dirs)
    mismatches = []
    for judge_dir in judge_dirs:
        ours = bon_scores[judge_dir.name.strip()]
        for subset, expected in _reference_counts(apb_root, judge_dir).items():
            s = ours[subset]
            got = (s.n_steps, s.n_step_correct, s.n_trajectories, s.n_first_error_correct)
            if got != expected:
                mismatches.append(f"{judge_dir.name!r} {subset}: bon {got} vs reference {expected}")
    assert not mismatches, "\n".join(mismatches)

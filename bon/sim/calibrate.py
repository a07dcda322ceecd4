"""Measure simulator parameters from AgentProcessBench: benchmark profiles and recorded judges.

`experiments/calibrate_sim.py` prints these as the YAML stored in conf/; `judge.calibrate_from`
calls `judge_model` at run time.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bon.datasets import agentprocessbench as apb
from bon.sim.model import Chain, JudgeModel, Profile, generate

QUANTILES = 21  # step counts stored at 0, 5, ..., 100 %


def _human_label(record: apb.Record, i: int) -> int:
    """The human label of step `i`; the loader refuses a null human label, so there is always one."""
    label = record.human.step_labels[i]
    assert label is not None, f"{record.record_id}: step {i} has no human label"
    return label


def _label_lists(records: Sequence[apb.Record]) -> list[list[int]]:
    return [[_human_label(r, i) for i in r.steps] for r in records]


def _chain(labels: list[list[int]]) -> dict[str, Any]:
    initial = np.ones(3) * 0.5  # a half-count prior keeps unseen moves possible but rare
    transition = np.ones((3, 3)) * 0.5
    for seq in labels:
        initial[seq[0] + 1] += 1
        for a, b in zip(seq, seq[1:]):
            transition[a + 1, b + 1] += 1
    lengths = np.array([len(s) for s in labels])
    return {
        "initial": np.round(initial / initial.sum(), 4).tolist(),
        "transition": np.round(transition / transition.sum(axis=1, keepdims=True), 4).tolist(),
        "length_quantiles": np.percentile(lengths, np.linspace(0, 100, QUANTILES), method="inverted_cdf")
        .astype(int).tolist(),
    }


def profile_config(records: Sequence[apb.Record], samples_per_task: int = 5, seed: int = 0) -> dict[str, Any]:
    """Profile parameters: Beta task difficulty (method of moments, binomial noise removed) and two chains."""
    success = np.array([r.success for r in records])
    labels = _label_lists(records)
    on = _chain([l for l, s in zip(labels, success) if s])
    off = _chain([l for l, s in zip(labels, success) if not s])
    by_task: dict[str, list[bool]] = {}
    for r in records:
        by_task.setdefault(r.task_id, []).append(r.success)
    rates = np.array([np.mean(v) for v in by_task.values()])
    # an on-track attempt can still end on an uncorrected error; aim the on-track rate above the success rate
    probe = Profile("probe", 1.0, 1.0, Chain.from_config(on, "on"), Chain.from_config(off, "off"))
    rng = np.random.default_rng(seed)
    survive = generate(probe, np.ones(20_000), 1, rng, wrong_answers=0).success.mean()
    mean = min(success.mean() / survive, 0.999)
    var_p = max((rates.var() - rates.mean() * (1 - rates.mean()) / samples_per_task) / (1 - 1 / samples_per_task), 1e-4)
    spread = max(mean * (1 - mean) / var_p - 1, 0.05)
    return {"task_alpha": round(float(mean * spread), 4), "task_beta": round(float((1 - mean) * spread), 4),
            "on_track": on, "off_track": off,
            "measured": {"success_rate": round(float(success.mean()), 4),
                         "pass_at_5": round(float(np.mean([any(v) for v in by_task.values()])), 4),
                         "mean_steps": round(float(np.mean([len(l) for l in labels])), 2),
                         "label_share": _label_share(labels)}}


def _label_share(labels: list[list[int]]) -> list[float]:
    flat = np.concatenate([np.asarray(l) for l in labels])
    return [round(float(np.mean(flat == v)), 4) for v in (-1, 0, 1)]


def judge_config(root: Path, judge: str, records: Sequence[apb.Record]) -> dict[str, Any]:
    """A recorded judge's measured confusion (ok calls only), positive bias 0, and ORM rates."""
    confusion = np.zeros((3, 3))
    outcome = {True: [0, 0], False: [0, 0]}  # success -> [final +1 count, labelled count]
    failed = missing = 0
    for record in records:
        j = apb.judgement_for(root, judge, record)
        if j.failed:
            failed += 1
            continue
        for i in record.steps:
            predicted = j.step_labels.get(i)
            if predicted is not None:
                confusion[_human_label(record, i) + 1, predicted + 1] += 1
        if j.final_label is None:
            missing += 1
        else:
            outcome[record.success][0] += j.final_label == 1
            outcome[record.success][1] += 1
    confusion += 0.5
    ok = len(records) - failed
    return {
        "name": f"sim:{judge}",
        "confusion": np.round(confusion / confusion.sum(axis=1, keepdims=True), 4).tolist(),
        "positive_bias": 0.0,
        "orm_tpr": round(float(outcome[True][0] / max(outcome[True][1], 1)), 4),
        "orm_fpr": round(float(outcome[False][0] / max(outcome[False][1], 1)), 4),
        "orm_missing": round(missing / max(ok, 1), 4),
        "fail_rate": round(failed / len(records), 4),
    }


def judge_model(root: Path, judge: str, subsets: Sequence[str]) -> JudgeModel:
    """A JudgeModel that behaves like the recorded judge on these subsets."""
    records = [r for s in subsets for r in apb.load_records(root, s)]
    cfg = judge_config(root, judge, records)
    return JudgeModel(**{k: v for k, v in cfg.items()})

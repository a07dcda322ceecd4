"""The compact simulated candidate table (bon/memory.py's figure rests on it) gives the results of the plain one.

The simulator keeps its string columns as Categorical codes and works on its label arrays a block of rows at a
time; neither may change a selection, a best-of-k curve, an interval or a single random draw."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from bon.candidates import SCHEMA
from bon.datasets import sim as sim_dataset
from bon.evaluate import evaluate
from bon.selectors import SELECTORS
from bon.sim import model

CONF = Path(__file__).resolve().parents[1] / "conf"
PROFILES = sim_dataset.shipped_profiles()
JUDGE_FIELDS = ("confusion", "positive_bias", "orm_tpr", "orm_fpr", "orm_missing", "fail_rate")


def simulated(n_tasks: int, n: int, seed: int = 0, profile: str = "tau2") -> pl.DataFrame:
    judge_cfg = yaml.safe_load((CONF / "judge" / "sim.yaml").read_text())
    judge = model.JudgeModel("sim", **{f: judge_cfg[f] for f in JUDGE_FIELDS} | {"fail_rate": 0.05})
    prof = model.Profile.from_config(profile, PROFILES[profile])
    rng = np.random.default_rng(seed)
    trajs = model.generate(prof, model.sample_tasks(prof, n_tasks, rng), n, rng)
    predicted, final, failed = model.judge(judge, trajs, rng)
    return model.candidate_table(trajs, predicted, final, failed, judge.name, prof.name)


def as_strings(table: pl.DataFrame) -> pl.DataFrame:
    return table.with_columns(pl.col(c).cast(pl.String) for c in model.INTERNED if c in table.columns)


def test_the_simulated_table_keeps_its_strings_as_codes():
    table = simulated(50, 4)
    assert all(table.schema[c] == pl.Categorical for c in model.INTERNED)
    assert as_strings(table).schema == pl.Schema(SCHEMA)  # every other column has the usual type
    assert table["task_id"].cast(pl.String).to_list()[:5] == ["synthetic:0"] * 4 + ["synthetic:1"]


def test_blockwise_judging_draws_exactly_what_one_big_draw_does(monkeypatch):
    whole = simulated(300, 4, seed=7)
    monkeypatch.setattr(model, "BLOCK_CELLS", 37)  # blocks of one row, ragged against the 96-step width
    assert simulated(300, 4, seed=7).equals(whole)


@pytest.fixture(scope="module")
def tables() -> tuple[pl.DataFrame, pl.DataFrame]:
    """A simulated table with unanswered candidates, blank answers and a second judge, as codes and as strings."""
    one = simulated(400, 16, seed=3)
    blank = pl.Series(np.arange(one.height) % 7 == 0)
    none = pl.Series(np.arange(one.height) % 11 == 0)
    answer = pl.when(none).then(None).when(blank).then(pl.lit("  ")).otherwise(pl.col("answer").cast(pl.String))
    one = one.with_columns(answer.cast(pl.Categorical).alias("answer"))
    other = one.with_columns(pl.lit("other judge").cast(pl.Categorical).alias("judge"),
                             pl.col("pos_ratio").reverse())
    coded = pl.concat([other, one])  # judges out of sort order: the layout must not read codes as ranks
    return coded, as_strings(coded)


@pytest.mark.parametrize("name", ["majority", "weighted_majority", "two_stage", "clean_prefix", "pos_count",
                                  "final", "random"])
def test_codes_and_strings_select_and_score_alike(tables, name):
    coded, plain = tables
    selector = SELECTORS[name]
    picks_coded, rows_coded = evaluate(selector, coded, "sim", "tau2", resamples=500, seed=1)
    picks_plain, rows_plain = evaluate(selector, plain, "sim", "tau2", resamples=500, seed=1)
    assert [r.judge for r in rows_coded] == [r.judge for r in rows_plain] == ["other judge", "sim"]
    assert [vars(r) for r in rows_coded] == [vars(r) for r in rows_plain]  # accuracies, intervals, best-of-k
    assert as_strings(picks_coded).equals(picks_plain)  # the same tasks in the same order, the same picks

"""bon's numpy bootstrap and McNemar test against scipy's, and scipy kept off the everyday paths.

bon.metrics resamples with numpy (scipy.stats costs about a second of import on every run). Its
interval comes from a different stream of resamples than scipy.stats.bootstrap's, so the endpoints
are compared within the Monte Carlo error of two percentile estimates, not to the last digit.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from bon.metrics import bootstrap_bands, bootstrap_ci, bootstrap_cis, mcnemar_exact

SAMPLES = {
    "binary, 50 tasks": (np.random.default_rng(0).random(50) < 0.6).astype(float),
    "binary, 200 tasks": (np.random.default_rng(1).random(200) < 0.3).astype(float),
    "normal, 120": np.random.default_rng(2).normal(3.0, 2.0, 120),
    "skewed, 30": np.random.default_rng(3).exponential(1.0, 30),
    "differences in {-1, 0, 1}, 80": np.random.default_rng(4).choice([-1.0, 0.0, 1.0], 80, p=[0.2, 0.5, 0.3]),
}


@pytest.fixture(scope="module")
def stats():
    """scipy.stats for the tests that compare with it: imported at collection, its ~1 s would be paid by
    every pytest-xdist worker."""
    from scipy import stats as scipy_stats

    return scipy_stats


@pytest.mark.parametrize("name", SAMPLES)
@pytest.mark.parametrize("confidence", [0.95, 0.9])
def test_interval_matches_scipy_percentile_bootstrap(stats, name, confidence):
    data = SAMPLES[name]
    ours = bootstrap_ci(data, confidence, n_resamples=9999, seed=0)
    ref = stats.bootstrap((data,), np.mean, confidence_level=confidence, n_resamples=9999, method="percentile",
                          vectorized=True, rng=np.random.default_rng(0)).confidence_interval
    # a percentile estimate from 9999 resamples is within ~0.03 standard errors of the mean of its limit;
    # on a grid of means (binary data) the two may also land one grid step apart
    se = data.std() / np.sqrt(data.size)
    tol = max(0.15 * se, 1.01 / data.size if np.all(np.isin(data, [-1, 0, 1])) else 0.0)
    assert ours[0] == pytest.approx(ref.low, abs=tol) and ours[1] == pytest.approx(ref.high, abs=tol)
    assert ours[0] < data.mean() < ours[1]


def test_interval_covers_the_true_mean_at_about_the_nominal_rate():
    rng = np.random.default_rng(7)
    covered = 0
    trials = 300
    for trial in range(trials):
        low, high = bootstrap_ci(rng.normal(0.0, 1.0, 40), n_resamples=999, seed=trial)
        covered += low <= 0.0 <= high
    # percentile bootstrap at n = 40 under-covers a little (about 93%); 300 trials have a sd of ~1.5 points
    assert 0.88 <= covered / trials <= 0.98


def test_seed_semantics_are_documented_ones():
    data = SAMPLES["normal, 120"]
    assert bootstrap_ci(data, seed=5) == bootstrap_ci(data, seed=5)  # same seed, same interval
    assert bootstrap_ci(data, seed=5) != bootstrap_ci(data, seed=6)  # another seed, another draw
    # on many distinct values both draw task indices from the same stream, so one column of bootstrap_bands
    # is bootstrap_ci
    low, high = bootstrap_bands(np.column_stack([data, data[::-1]]), 0.95, 4000, seed=3)
    assert (low[0], high[0]) == pytest.approx(bootstrap_ci(data, 0.95, 4000, seed=3), rel=1e-12)


def test_columns_bootstrapped_together_get_each_its_own_interval_to_the_last_bit():
    """A best-of-k curve's columns share their draws of task indices (bootstrap_cis); each interval must
    still be the one bootstrap_ci gives that column alone: sizes, few values, constant and empty columns mixed."""
    rng = np.random.default_rng(11)
    columns = [rng.random(300), rng.random(300), rng.random(299), (rng.random(300) < 0.5).astype(float),
               np.full(300, 0.25), np.array([]), np.round(rng.random(300), 3), rng.normal(size=300)]
    together = bootstrap_cis(columns, 0.9, 2001, seed=4)
    alone = [bootstrap_ci(c, 0.9, 2001, seed=4) for c in columns]
    np.testing.assert_array_equal(np.array(together), np.array(alone))
    assert len(set(together[:3])) == 3  # and they are the columns' own, not one interval for all


def test_counts_of_few_distinct_values_resample_like_task_indices():
    """With few distinct values bootstrap_ci draws how often each value is picked (multinomial) instead
    of task indices; the intervals must agree with the index resampling of bootstrap_bands."""
    for name in ("binary, 200 tasks", "differences in {-1, 0, 1}, 80"):
        data = SAMPLES[name]
        low, high = bootstrap_bands(data, 0.95, 20000, seed=1)
        ours = bootstrap_ci(data, 0.95, 20000, seed=2)
        assert ours == pytest.approx((low, high), abs=1.01 / data.size)


@pytest.mark.parametrize("a_only, b_only", [(12, 2), (2, 12), (0, 5), (7, 7), (1, 0), (40, 25), (3000, 2880)])
def test_mcnemar_matches_scipy_binomtest(stats, a_only, b_only):
    expected = stats.binomtest(a_only, a_only + b_only).pvalue
    assert mcnemar_exact(a_only, b_only) == pytest.approx(expected, rel=1e-9)


def test_no_discordant_tasks_is_no_evidence():
    assert mcnemar_exact(0, 0) == 1.0


_PROBE = """
import atexit, runpy, sys
atexit.register(lambda: sys.stderr.write("SCIPY_LOADED=%s\\n" % sorted(m for m in sys.modules if m.split(".")[0] == "scipy")[:3]))
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


@pytest.mark.parametrize("module, args", [
    ("bon.run", ["dataset=agentprocessbench", "dataset.subset=all", "judge=replay", "judge.name=GPT-5.2"]),
    ("bon.prm_eval", ["dataset.subset=all", "judge=replay", "judge.name=all"]),
])
def test_replay_and_table3_never_import_scipy(apb_root, tmp_path, module, args):
    env = {**os.environ, "BON_DATA_DIR": str(apb_root)}
    proc = subprocess.run([sys.executable, "-c", _PROBE, module, *args, f"hydra.run.dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "wrote" in proc.stdout
    assert "SCIPY_LOADED=[]" in proc.stderr, proc.stderr[-500:]

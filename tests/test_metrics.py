"""Bootstrap intervals and the paired comparison of two selectors."""
from __future__ import annotations

import numpy as np
import pytest

from bon.metrics import bootstrap_ci, paired


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_more_tasks():
    rng = np.random.default_rng(0)
    small = rng.random(50) < 0.6
    large = rng.random(5000) < 0.6
    lo_s, hi_s = bootstrap_ci(small.astype(float), n_resamples=2000)
    lo_l, hi_l = bootstrap_ci(large.astype(float), n_resamples=2000)
    assert lo_s <= small.mean() <= hi_s and lo_l <= large.mean() <= hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5
    # a binomial proportion at n=5000 has a 95% half-width near 1.96 * sqrt(p(1-p)/n) = 0.0136
    assert (hi_l - lo_l) / 2 == pytest.approx(1.96 * np.sqrt(0.24 / 5000), rel=0.15)


def test_bootstrap_of_identical_values_is_a_point():
    assert bootstrap_ci([1.0] * 20) == (1.0, 1.0)


def test_paired_counts_discordant_tasks_and_tests_them_exactly():
    a = [1] * 30 + [0] * 10 + [1] * 12 + [0] * 2   # A right and B wrong on 12 tasks, the reverse on 2
    b = [1] * 30 + [0] * 10 + [0] * 12 + [1] * 2
    result = paired(a, b)
    assert (result.a_only, result.b_only, result.n_tasks) == (12, 2, 54)
    assert result.diff == pytest.approx(10 / 54)
    # exact two-sided McNemar: P(X <= 2 or X >= 12), X ~ Bin(14, 0.5)
    from math import comb
    expected = 2 * sum(comb(14, i) for i in range(3)) / 2**14
    assert result.p_value == pytest.approx(expected)
    assert result.ci_low > 0  # A is reliably better here


def test_paired_needs_the_same_tasks():
    with pytest.raises(ValueError, match="same tasks"):
        paired([1, 0], [1])


def test_large_samples_use_the_normal_interval_which_matches_the_bootstrap():
    from bon import metrics

    rng = np.random.default_rng(1)
    data = (rng.random(metrics.NORMAL_ABOVE + 1) < 0.3).astype(float)
    lo, hi = bootstrap_ci(data)
    assert lo < data.mean() < hi
    boot_lo, boot_hi = bootstrap_ci(data[: metrics.NORMAL_ABOVE], n_resamples=2000)
    assert (hi - lo) == pytest.approx(boot_hi - boot_lo, rel=0.1)

"""bon.fmt: the one number check and the one percent formatter every table uses."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bon.fmt import is_number, pct


@pytest.mark.parametrize("value", [0, 3, -2.5, 1e300, np.float64(0.25), np.float32(1.5), np.int64(7)])
def test_finite_numbers_are_numbers(value):
    assert is_number(value)


@pytest.mark.parametrize("value", [True, False, np.bool_(True), math.nan, math.inf, -math.inf, np.float64("nan"),
                                   None, "0.5", [0.5]])
def test_bools_non_finite_values_and_text_are_not(value):
    assert not is_number(value)


def test_pct_writes_a_fraction_as_percent_with_one_decimal():
    assert pct(0.5) == "50.0"
    assert pct(1) == "100.0"
    assert pct(0.1234) == "12.3"
    assert pct(-0.0123) == "-1.2"
    assert pct(12.34, points=True) == "12.3"


@pytest.mark.parametrize("value", [None, math.nan, math.inf, "0.5", True])
def test_pct_of_a_missing_value_is_the_missing_text(value):
    assert pct(value) == ""
    assert pct(value, "n/a") == "n/a"
    assert pct(value, "-", points=True) == "-"

"""Number checks and percent text shared by everything that validates or prints figures."""
from __future__ import annotations

import math
import numbers
from typing import Any


def is_number(x: Any) -> bool:
    """True for a finite real number (int, float, numpy's too); False for a bool, NaN, infinity, None or text.

    Finite on purpose: every number bon reads (an option, a count, a fraction in a summary) is meaningless as
    NaN or infinity, so a check that let them through would pass a wrong value on instead of naming it.
    """
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def pct(x: Any, missing: str = "", *, points: bool = False) -> str:
    """A fraction as a percent with one decimal ('12.3', no sign); `missing` when it is not a finite number.
    With `points`, `x` is already in percent."""
    if not is_number(x):
        return missing
    return f"{x if points else 100 * x:.1f}"

"""The GAIA scorer on tricky pairs: (model answer, ground truth, match?)."""
from __future__ import annotations

import pytest

from bon.scoring.gaia import lenient_scorer, question_scorer

PAIRS = [
    ("$1,234.50", "1234.5", True),
    ("1000", "1,000", False),          # a list of two on the ground-truth side
    ("50%", "0.5", False),
    ("Sea Gull!", "seagull", True),
    ("The Eiffel Tower", "Eiffel Tower", False),
    ("a; b; c", "a, b, c", True),
    ("Paris, France.", "Paris, France", False),  # punctuation is kept inside list elements
    ("B, A", "A, B", False),
    ("3 km", "3", False),
    ("3", "3", True),
    ("3.0", "3", True),
    ("  42 ", "42", True),
    ("forty-two", "42", False),
    ("1, 2, 3", "1,2,3", True),        # number elements compare numerically
    ("1, 2", "1, 2, 3", False),
    ("a,,b", "a,,b", True),            # empty elements are kept
    ("St. Petersburg", "st petersburg", True),
    (None, "anything", False),
    ("", "x", False),
]


@pytest.mark.parametrize("answer, truth, expected", PAIRS)
def test_question_scorer(answer, truth, expected):
    assert question_scorer(answer, truth) is expected


def test_lenient_variant_is_looser_but_still_says_no_to_wrong_answers():
    assert lenient_scorer("The Eiffel Tower", "Eiffel Tower")
    assert lenient_scorer("B, A", "A, B")
    assert not lenient_scorer("Louvre", "Eiffel Tower")
    assert not lenient_scorer(None, "x")


def test_live_trajectories_are_scored_by_the_gaia_rules():
    from bon.generators.agent import reference_success

    assert reference_success("$1,234.50", "1234.5") is True
    assert reference_success("1000", "1,000") is False
    assert reference_success(None, "5") is False
    assert reference_success("5", None) is None  # no reference: success unknown, not False

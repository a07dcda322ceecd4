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


def test_task_datasets_score_by_the_gaia_rules():
    from bon.datasets.taskset import TaskSet
    from bon.types import Task, Trajectory

    tasks = TaskSet("tasks", (Task("a", answer="1234.5"), Task("b", answer="1,000"), Task("c", answer="5"), Task("d")))
    score = {t.id: t for t in tasks.tasks}
    assert tasks.score(score["a"], "$1,234.50") is True
    assert tasks.score(score["b"], "1000") is False
    assert tasks.score(score["c"], None) is False
    assert tasks.score(score["d"], "5") is None  # no reference: success unknown, not False
    # a replayed trajectory's recorded success gives way to the dataset's; one of an unknown task keeps its own
    replayed = [Trajectory("a", 0, answer="1234.5", success=False), Trajectory("zz", 0, answer="x", success=True)]
    assert [t.success for t in tasks.scored(replayed)] == [True, True]

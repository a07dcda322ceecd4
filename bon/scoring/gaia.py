"""The GAIA leaderboard's answer matching, re-implemented from its published rules.

`question_scorer(model_answer, ground_truth)`:
* a ground truth that parses as a number: strip every `$`, `%` and `,` from the model answer,
  parse it as a float (unparseable: no match) and compare exactly;
* else a ground truth containing `,` or `;`: a list; split both on either character (elements
  untrimmed, empty ones kept); lengths must agree; compare position by position, numerically when
  the ground-truth element is a number, else with all whitespace removed and lower-cased
  (punctuation kept);
* else: remove all whitespace, lower-case, remove ASCII punctuation, compare exactly.
A missing answer never matches. `lenient_scorer` is a looser variant for analysis only.
"""
from __future__ import annotations

import re
import string

_SPLIT = re.compile(r"[,;]")
_WHITESPACE = re.compile(r"\s+")
_PUNCT = str.maketrans("", "", string.punctuation)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _number_match(model_answer: str, truth: float) -> bool:
    value = _float(model_answer.replace("$", "").replace("%", "").replace(",", "").strip())
    return value is not None and value == truth


def _squeeze(text: str, punctuation: bool) -> str:
    text = _WHITESPACE.sub("", text).lower()
    return text.translate(_PUNCT) if punctuation else text


def question_scorer(model_answer: str | None, ground_truth: str) -> bool:
    """True when `model_answer` counts as correct for `ground_truth` under the GAIA rules."""
    if model_answer is None:
        return False
    model_answer = str(model_answer)
    truth_number = _float(ground_truth)
    if truth_number is not None:
        return _number_match(model_answer, truth_number)
    if _SPLIT.search(ground_truth):
        truths, answers = _SPLIT.split(ground_truth), _SPLIT.split(model_answer)
        if len(truths) != len(answers):
            return False
        for answer, truth in zip(answers, truths):
            number = _float(truth)
            if number is not None:
                if not _number_match(answer, number):
                    return False
            elif _squeeze(answer, punctuation=False) != _squeeze(truth, punctuation=False):
                return False
        return True
    return _squeeze(model_answer, punctuation=True) == _squeeze(ground_truth, punctuation=True)


def lenient_scorer(model_answer: str | None, ground_truth: str) -> bool:
    """For analysis only, never for leaderboard numbers: also accepts answers that differ by
    leading articles, trailing punctuation or list order."""
    if question_scorer(model_answer, ground_truth):
        return True
    if model_answer is None:
        return False

    def loose(text: str) -> str:
        text = re.sub(r"^(the|a|an)\s+", "", str(text).strip().lower())
        return _squeeze(text, punctuation=True)

    if _SPLIT.search(ground_truth) and _SPLIT.search(model_answer):
        return sorted(map(loose, _SPLIT.split(model_answer))) == sorted(map(loose, _SPLIT.split(ground_truth)))
    return loose(model_answer) == loose(ground_truth)

"""Answer normalisers for majority voting: two answers vote together when they normalise equal.

Each normaliser is a list of text steps, so the per-task path (Python `re`) and the
vectorised path (polars string expressions) run the very same definition.
"""
from __future__ import annotations

import functools
import re

import polars as pl

from bon.errors import unknown_choice

# Only ASCII classes are used: Python `re` and Rust `regex` disagree on what Unicode `\w`, `\b`
# and `\s` match, and both engines must split the same text the same way.
_WS = " \t\n\r\f\v"
_PUNCT = r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~]"
# Articles go while words are separated by two spaces, so each match consumes only its own
# spaces and adjacent articles ("a an the") all match: one regex pass, same in both engines.
_SQUAD = (("lower",), ("sub", _PUNCT, ""), ("sub", f"[{_WS}]+", "  "), ("sub", "(^| )(a|an|the)( |$)", " "),
          ("sub", "[ ]+", " "), ("strip",))
_FIRST_SENTENCE = (("strip",), ("sub1", r"\n[\s\S]*$", ""), ("sub1", f"([.!?])[{_WS}][\\s\\S]*$", "$1"))

STEPS: dict[str, tuple[tuple[str, ...], ...]] = {
    "exact": (("strip",),),
    "squad": _SQUAD,  # lower case, punctuation deleted ("U.S.A." = "USA"), no articles, single spaces
    "first_line": _FIRST_SENTENCE + _SQUAD,  # the squad form of the first sentence only
}


def _steps(name: str) -> tuple[tuple[str, ...], ...]:
    try:
        return STEPS[name]
    except KeyError:
        raise unknown_choice("answer normaliser", name, STEPS) from None


@functools.cache
def get(name: str):
    """The Python normaliser `str -> str` called `name` (built once per name)."""
    steps = _steps(name)

    def run(text: str) -> str:
        for op, *args in steps:
            if op == "lower":
                text = text.lower()
            elif op == "strip":
                text = text.strip(_WS)
            else:
                pattern, repl = args
                text = re.sub(pattern, repl.replace("$1", r"\1"), text, count=0 if op == "sub" else 1)
        return text

    return run


def normalize(answer: str | None, name: str) -> str | None:
    """Normalise one answer; None and answers that normalise to '' cast no vote."""
    if answer is None:
        return None
    return get(name)(answer) or None


def expr(column: str, name: str) -> pl.Expr:
    """The polars expression for the same normaliser, with '' mapped to null (no vote)."""
    e = pl.col(column)
    for op, *args in _steps(name):
        if op == "lower":
            e = e.str.to_lowercase()
        elif op == "strip":
            e = e.str.strip_chars(_WS)
        elif op == "sub":
            e = e.str.replace_all(args[0], args[1])
        else:
            e = e.str.replace(args[0], args[1])
    return pl.when(e == "").then(None).otherwise(e).alias(column)

"""Selectors: pick one of N candidates per task.

    from bon.selectors import two_stage
    best = two_stage(candidates)          # candidates: list of candidate-table rows

Every selector is a `Selector` (filters with fallback, then ranking keys, ties to the
lowest sample index) and also runs vectorised: `bon.selectors.select(sel, table)`.
"""
from bon.selectors.library import FILTERS, KEYS, SELECTORS, from_config, get
from bon.selectors.spec import Filter, Key, Selector, Votes
from bon.selectors.vectorized import select, to_batch, top_mask

random = SELECTORS["random"]  # not in __all__: it would shadow the stdlib module on `import *`
final = SELECTORS["final"]
pos_count = SELECTORS["pos_count"]
pos_ratio = SELECTORS["pos_ratio"]
two_stage = SELECTORS["two_stage"]
clean_prefix = SELECTORS["clean_prefix"]
majority = SELECTORS["majority"]
weighted_majority = SELECTORS["weighted_majority"]
pass_at_n = SELECTORS["pass_at_n"]

__all__ = [
    "FILTERS", "KEYS", "SELECTORS", "Filter", "Key", "Selector", "Votes", "from_config", "get", "select",
    "to_batch", "top_mask", "final", "pos_count", "pos_ratio", "two_stage", "clean_prefix",
    "majority", "weighted_majority", "pass_at_n",
]

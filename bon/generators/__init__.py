"""Generators produce N trajectories per task.

Kinds: `replay` (recorded trajectories), `sim` (the synthetic label-level agent of bon.sim) and
`llm` (the tool-calling agent through litellm, bon.generators.agent). The types and ranges of
their options are checked by bon.config before a run starts.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bon.errors import unknown_choice

KINDS = ("replay", "sim", "llm")


def check(generator_cfg: Mapping[str, Any]) -> None:
    """Fail early, listing the valid kinds, for a generator this build cannot run."""
    if generator_cfg.get("kind") not in KINDS:
        raise unknown_choice("generator kind", generator_cfg.get("kind"), KINDS)

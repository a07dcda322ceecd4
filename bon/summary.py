"""summary.json, defined once: what `bon.run` writes (bon.evaluate's rows) and `bon.report` reads back.

A summary says which kind of run wrote it and under which schema version, and carries the run's
confidence level and seed, so a report needs nothing but the file. Reading checks every field a report
uses and refuses a bad or older file in one line naming the file and the field.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bon.errors import BonError
from bon.fmt import is_number

SCHEMA = 1  # raise when a field changes meaning or a required field is added
KIND = "selection"  # a selector evaluated over a candidate table
REHAC_KIND = "rehac_offline"  # ReHAC's policy evaluation (bon.rehac.report): its own tables, no selector rows
_FRACTIONS = ("accuracy", "accuracy_expected", "ci_low", "ci_high", "pass_at_n", "random")
_BY_SUBSET_NUMBERS = ("n_tasks", "accuracy", "accuracy_expected", "pass_at_n", "random")


@dataclass
class Row:
    """One selector x judge on one dataset/subset. Fractions are in [0, 1]; None where nothing was scored
    (n_tasks 0: the selector did not apply, `note` says why) or there is no interval."""

    dataset: str
    subset: str
    judge: str
    selector: str
    description: str
    oracle: bool
    n_tasks: int
    n_candidates: int
    accuracy: float | None  # the deterministic pick (ties to the lowest sample index)
    accuracy_expected: float | None  # tie-aware: the mean success over the candidates a selector could not tell apart
    ci_low: float | None  # bootstrap interval of `accuracy` at the summary's confidence
    ci_high: float | None
    pass_at_n: float | None
    random: float | None
    judge_failed: int
    generation_failed: int | None  # live runs only; recorded candidates have no generation to fail
    judge_missing_final: int
    judge_missing_steps: int
    best_of_k: dict[str, Any] | None  # {method, k, accuracy, ci_low, ci_high, std_error}: lists over k
    by_subset: dict[str, dict[str, Any]]  # pooled runs: point estimates per subset
    note: str
    synthetic: bool = False  # dataset=sim: simulated trajectories and judge (written only when true)

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if not self.synthetic:
            del out["synthetic"]
        return out

    @classmethod
    def from_json(cls, data: Any, where: str) -> Row:
        """The row in `data`, or a BonError naming `where` and the first bad field."""
        if not isinstance(data, dict):
            raise BonError(f"{where}: expected a JSON object, got {type(data).__name__}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise BonError(f"{where}: missing {', '.join(missing)}")
        for key in ("dataset", "subset", "judge", "selector"):
            if not isinstance(data[key], str) or not data[key]:
                raise BonError(f"{where}.{key} must be a non-empty string, got {data[key]!r}")
        for key in _FRACTIONS:
            value = data[key]
            if value is None and (key in ("ci_low", "ci_high") or data["n_tasks"] == 0):
                continue  # no interval, or a selector that did not apply (n_tasks 0, see its note)
            if not _is_nan(value) and not (is_number(value) and -1e-9 <= value <= 1 + 1e-9):
                raise BonError(f"{where}.{key} must be a fraction in [0, 1], got {value!r}")
        for key in ("n_tasks", "n_candidates", "judge_failed", "judge_missing_final", "judge_missing_steps"):
            _count(data[key], f"{where}.{key}")
        if data["generation_failed"] is not None:
            _count(data["generation_failed"], f"{where}.generation_failed")
        for key in ("oracle", "synthetic"):
            if not isinstance(data.get(key, False), bool):
                raise BonError(f"{where}.{key} must be true or false, got {data[key]!r}")
        for key in ("description", "note"):
            if not isinstance(data[key], str):
                raise BonError(f"{where}.{key} must be a string, got {data[key]!r}")
        _check_best_of_k(data["best_of_k"], where)
        _check_by_subset(data["by_subset"], where)
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclass
class Summary:
    """A `bon.run` result: one Row per judge, the run's interval level and seed, and for live runs what
    the calls cost (`usage`), who helped (`collaboration`) and why the run stopped early (`stopped`)."""

    rows: list[Row]
    confidence: float
    seed: int
    collaboration: dict[str, Any] | None = None
    stopped: dict[str, Any] | None = None  # {by: budget | failures, message}: the results are partial
    usage: dict[str, Any] | None = None
    by_model: list[dict[str, Any]] | None = None  # mixed-model runs: bon.breakdown.by_model's rows
    compute: dict[str, Any] | None = None  # live runs: what the method cost per task (bon.compute)
    shard: dict[str, int] | None = None  # a sharded run ({index, of}: dataset.shard, dataset.num_shards; bon.shard)
    merged: dict[str, Any] | None = None  # bon.merge's result: {shards, runs}, the shard run directories it joined
    # rows written to candidates.parquet (bon.report checks the file against it): all of the run's candidates,
    # also those a selector left out of its accuracy (majority: tasks without any final answer)
    table_rows: int | None = None
    kind: str = KIND
    schema: int = SCHEMA

    def to_json(self) -> dict[str, Any]:
        """The file's object; a single-row summary also repeats its row's fields at the top level."""
        rows = [r.to_json() for r in self.rows]
        out: dict[str, Any] = {"schema": self.schema, "kind": self.kind, "confidence": self.confidence,
                               "seed": self.seed}
        if len(rows) == 1:
            out |= rows[0]
        out["rows"] = rows
        for key in ("collaboration", "stopped", "usage", "by_model", "compute", "shard", "merged", "table_rows"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_json(cls, data: Any, path: Path | str) -> Summary:
        """The summary in `data` (parsed from `path`), or a BonError naming the file and the field."""
        where = f"malformed {path}"
        if not isinstance(data, dict):
            raise BonError(f"{where}: expected a JSON object with 'rows', got {type(data).__name__}")
        schema = data.get("schema")
        if schema is None:
            raise BonError(f"{path}: no schema field: written by an older bon (this one reads schema {SCHEMA}); "
                           f"rerun that configuration to rewrite it")
        if schema != SCHEMA:
            raise BonError(f"{path}: schema {schema!r} is not the one this bon reads ({SCHEMA}); "
                           f"use the bon that wrote it, or rerun that configuration")
        if data.get("kind") != KIND:
            raise BonError(f"{where}: kind must be {KIND!r} for a selector report, got {data.get('kind')!r}")
        rows = data.get("rows")
        if not isinstance(rows, list) or not rows:
            raise BonError(f"{where}: 'rows' must be a non-empty list")
        confidence: Any = data.get("confidence")  # unchecked JSON until is_number says otherwise
        if not is_number(confidence) or not 0 < confidence < 1:
            raise BonError(f"{where}: confidence must be a number in (0, 1), got {confidence!r}")
        seed = data.get("seed")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise BonError(f"{where}: seed must be an integer, got {seed!r}")
        return cls(rows=[Row.from_json(r, f"{where}: rows[{i}]") for i, r in enumerate(rows)],
                   confidence=float(confidence), seed=seed, collaboration=data.get("collaboration"),
                   stopped=data.get("stopped"), usage=data.get("usage"), by_model=data.get("by_model"),
                   compute=data.get("compute"), shard=data.get("shard"), merged=data.get("merged"),
                   table_rows=data.get("table_rows"))


def _is_nan(x: Any) -> bool:
    """NaN is written where a figure is undefined (e.g. an interval over one task); it is no fraction to refuse."""
    return isinstance(x, float) and x != x


def _count(value: Any, option: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BonError(f"{option} must be a non-negative integer, got {value!r}")


def _check_best_of_k(bok: Any, where: str) -> None:
    if bok is None:
        return
    if not isinstance(bok, dict) or not isinstance(bok.get("k"), list) or not isinstance(bok.get("accuracy"), list):
        raise BonError(f"{where}.best_of_k must be an object with lists 'k' and 'accuracy'")
    for key in ("accuracy", "ci_low", "ci_high"):
        values = bok.get(key)
        if values is None and key != "accuracy":
            continue
        if not isinstance(values, list) or len(values) != len(bok["k"]):
            raise BonError(f"{where}.best_of_k.{key} must be a list as long as best_of_k.k")
        if not all(v is None or _is_nan(v) or is_number(v) for v in values):
            raise BonError(f"{where}.best_of_k.{key} must hold numbers")
    if not all(isinstance(k, int) and k >= 1 for k in bok["k"]):
        raise BonError(f"{where}.best_of_k.k must hold positive integers")


def _check_by_subset(by_subset: Any, where: str) -> None:
    if not isinstance(by_subset, Mapping):
        raise BonError(f"{where}.by_subset must be an object")
    for name, part in by_subset.items():
        if not isinstance(part, dict) or not all(_is_nan(part.get(k)) or is_number(part.get(k))
                                                 for k in _BY_SUBSET_NUMBERS):
            raise BonError(f"{where}.by_subset[{name!r}] needs numbers {', '.join(_BY_SUBSET_NUMBERS)}")

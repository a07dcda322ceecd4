"""`python -m bon.merge DIR --out OUT`: join the shards of each configuration under DIR and evaluate it once.

A configuration run as `dataset.num_shards=K dataset.shard=0,...,K-1` (bon.shard) leaves K run directories,
each with a summary of its 1/K of the tasks. Intervals and best-of-k curves do not add up across shards, so
this concatenates the shards' candidate tables and evaluates the whole table with the configuration's
selector, confidence, bootstrap_resamples and seed, exactly as an unsharded `bon.run` would (bon.run.finish).
Shards are of one configuration when their resolved configs agree apart from dataset.shard and
dataset.num_shards. Each configuration is written to OUT/<n>/ (summary.json, candidates.parquet,
selections.parquet, .hydra/config.yaml), which `python -m bon.report OUT` reads like any run.
A missing, duplicated or early-stopped shard, or shards that disagree on dataset.num_shards, is refused
(one line, exit 2) before anything is written.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from omegaconf import DictConfig, OmegaConf

from bon.errors import BonError, command, finished
from bon.report import find_summaries
from bon.summary import KIND

SHARD_KEYS = ("shard", "num_shards")  # the dataset options that differ between shards of one configuration


@dataclass(frozen=True)
class ShardRun:
    """One shard's run directory: which shard it is, of which configuration."""

    run_dir: Path
    index: int
    of: int
    key: str  # the resolved config without dataset.shard / dataset.num_shards
    name: str  # the job's overrides without dataset.shard, for messages
    summary: dict[str, Any]


def _config(run_dir: Path) -> DictConfig:
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        raise BonError(f"{run_dir}: a shard's summary.json but no .hydra/config.yaml, so its configuration is "
                       f"unknown; merge shards written by `python -m bon.run`")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # noqa: BLE001 - YAML and OmegaConf raise several kinds
        raise BonError(f"cannot read {path}: {str(exc).splitlines()[0]}") from None
    assert isinstance(cfg, DictConfig)
    return cfg


def _key(cfg: DictConfig, path: Path) -> str:
    import bon.datasets  # noqa: F401 - registers the bon_default_dataset resolver a saved config may use

    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # noqa: BLE001 - an interpolation that no longer resolves
        raise BonError(f"cannot resolve {path}: {str(exc).splitlines()[0]}") from None
    assert isinstance(values, dict)
    for key in SHARD_KEYS:
        values.get("dataset", {}).pop(key, None)
    return json.dumps(values, sort_keys=True, default=str)


def _name(run_dir: Path) -> str:
    """The job's command-line overrides without the shard index: how the user wrote the configuration."""
    try:
        overrides = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    except Exception:  # noqa: BLE001 - a run directory made by hand may have none
        return str(run_dir)
    kept = [str(o) for o in overrides or [] if not str(o).lstrip("+~").startswith("dataset.shard=")] \
        if isinstance(overrides, list) else []
    return " ".join(kept) or "(no overrides)"


def find_shards(root: Path) -> tuple[list[ShardRun], int]:
    """The shard runs under `root`, and how many other (unsharded) runs were passed over."""
    shards, others = [], 0
    for path in find_summaries(root):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BonError(f"cannot read {path}: {exc}") from None
        part = data.get("shard") if isinstance(data, dict) else None
        if not isinstance(part, dict) or data.get("kind") != KIND:
            others += 1
            continue
        run_dir = path.parent
        if not (run_dir / "candidates.parquet").is_file():
            raise BonError(f"{run_dir}: summary.json is there but candidates.parquet is missing (an interrupted or "
                           f"altered run); rerun that shard")
        cfg = _config(run_dir)
        shards.append(ShardRun(run_dir, int(part["index"]), int(part["of"]), _key(cfg, path), _name(run_dir), data))
    return shards, others


def group(shards: Sequence[ShardRun]) -> list[list[ShardRun]]:
    """The shards of each configuration, in index order; a configuration with a missing, duplicated or
    early-stopped shard, or whose shards disagree on dataset.num_shards, is a one-line BonError."""
    groups: dict[str, list[ShardRun]] = {}
    for s in shards:
        groups.setdefault(s.key, []).append(s)
    out = []
    for runs in groups.values():
        name = f"configuration '{runs[0].name}'"
        counts = sorted({s.of for s in runs})
        if len(counts) > 1:
            where = ", ".join(f"{s.run_dir} has {s.of}" for s in runs if s.of != runs[0].of)
            raise BonError(f"{name}: its shards disagree on dataset.num_shards ({runs[0].run_dir} has {runs[0].of}, "
                           f"{where}); merge shards of one split only")
        of = counts[0]
        by_index: dict[int, ShardRun] = {}
        for s in runs:
            if s.index in by_index:
                raise BonError(f"{name}: shard {s.index} of {of} is there twice ({by_index[s.index].run_dir} and "
                               f"{s.run_dir}); move one of them out")
            by_index[s.index] = s
        missing = [i for i in range(of) if i not in by_index]
        if missing:
            raise BonError(f"{name}: missing shard{'s' if len(missing) > 1 else ''} "
                           f"{', '.join(map(str, missing))} of {of} (found {', '.join(map(str, sorted(by_index)))}); "
                           f"run dataset.shard={','.join(map(str, missing))} first")
        stopped = next((s for s in by_index.values() if s.summary.get("stopped")), None)
        if stopped is not None:
            raise BonError(f"{name}: shard {stopped.index} ({stopped.run_dir}) stopped early "
                           f"({stopped.summary['stopped'].get('by')}), so its results are partial; rerun that shard")
        out.append([by_index[i] for i in range(of)])
    return out


# numbers in usage blocks that are settings, the same in every shard, not counts to add up: a simulated
# search's k, n and track_memory, a comparing judge's permutations, a budget's caps
SETTINGS = {"k", "n", "track_memory", "permutations", "budget.usd", "budget.calls"}


def _combine(values: Sequence[Any], path: str = "") -> Any:
    """The shards' values of one usage field as one: counts summed, flags all true, maps field by field."""
    name = path.rsplit(".", 1)[-1]
    if name in SETTINGS or path in SETTINGS:
        return values[0]  # one configuration: the same setting in every shard
    if any(v is None for v in values):
        return None  # unknown in some shard (e.g. a price): unknown overall
    first = values[0]
    if isinstance(first, bool):
        return all(values)
    if isinstance(first, (int, float)) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sum(values)
    if isinstance(first, dict) and all(isinstance(v, dict) for v in values):
        keys = list(dict.fromkeys(k for v in values for k in v))
        return {k: _combine([v[k] for v in values if k in v], f"{path}.{k}".lstrip(".")) for k in keys}
    if all(v == first for v in values):
        return first
    if isinstance(first, list):
        return list(dict.fromkeys(x for v in values for x in v))
    return "; ".join(dict.fromkeys(str(v) for v in values))


def _per(calls: float, tokens: float, usd: float | None, n: int) -> dict[str, Any]:
    if n == 0:
        return {"calls": 0, "tokens": 0, "usd": None}
    return {"calls": calls / n, "tokens": tokens / n, "usd": None if usd is None else round(usd / n, 8)}


def _compute(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The shards' `compute` blocks (bon.compute) as one: stages, tasks and trajectories summed, and the costs
    per task and per sample divided again (an average of averages would weigh shards wrongly)."""
    out = _combine(blocks)
    stages = out["stages"].values()

    def total(parts: Any) -> tuple[float, float, float | None]:
        parts = list(parts)
        usd = None if any(p["usd"] is None for p in parts) else sum(p["usd"] for p in parts)
        return sum(p["calls"] for p in parts), sum(p["tokens"] for p in parts), usd

    out["per_task"] = _per(*total(stages), out["tasks"])
    if "per_sample" in out:
        out["per_sample"] = _per(*total(p for n, p in out["stages"].items() if n != "selection"), out["trajectories"])
    return out


def _usage(shards: Sequence[ShardRun]) -> dict[str, Any] | None:
    """The usage a merged run reports, as bon.run's `_candidate_table` returns it (compute and all)."""
    summaries = [s.summary for s in shards]
    if all(s.get("usage") is None and s.get("compute") is None for s in summaries):
        return None
    usage = _combine([s.get("usage") or {} for s in summaries])
    if any(s.get("compute") is not None for s in summaries):
        usage["compute"] = _compute([s["compute"] for s in summaries])
    usage.pop("submission", None)  # written again from the joined table (bon.live)
    return usage


COUNTS = ("n", "n_scored", "interventions", "steps", "reflections", "judge_failures")  # collaboration sums


def _collaboration(shards: Sequence[ShardRun], chosen: Any, table: pl.DataFrame) -> dict[str, Any] | None:
    """The unsharded run's collaboration block (T, C and R = T - lambda*C, bon.generators.intervention).

    Recomputed from the shards' trajectory stores, in the unsharded run's order (task, then sample), so
    even R's floating-point sum is the one an unsharded run makes; when a store is gone or no longer
    matches its shard's counts, combined from the shards' exact counts instead (T and C exactly, R to
    the last digit), never as an average of the shards' averages."""
    found = [s.summary.get("collaboration") for s in shards]
    if all(b is None for b in found):
        return None
    blocks = [b for b in found if isinstance(b, dict)]
    if len(blocks) < len(found):
        raise BonError(f"configuration '{shards[0].name}': only some shards report a collaboration summary; "
                       f"rerun the shards with one bon")
    from bon.generators.intervention import reward_summary

    summed = _summed_collaboration(blocks)
    trajectories = _stored_trajectories(shards, chosen, table)
    if trajectories is not None:
        recomputed = {"policy": blocks[0]["policy"], "budget": blocks[0].get("budget"),
                      **reward_summary(trajectories, float(blocks[0]["lambda"]))}
        if all(recomputed.get(k) == summed.get(k) for k in COUNTS):
            return recomputed
    print("note: the shards' trajectory stores are missing or have changed since their runs, so the "
          "collaboration summary is combined from the shards' counts (R may differ from an unsharded run's "
          "in the last digit)", file=sys.stderr)
    return summed


def _summed_collaboration(blocks: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collaboration blocks combined through their counts: T and C are means of whole numbers over n_scored,
    so each shard's sums come back exactly and the merged means are the unsharded run's."""
    out = dict(blocks[0])
    for key in COUNTS:
        if key in out:
            out[key] = sum(int(b.get(key) or 0) for b in blocks)
    out["intervention_rate"] = out["interventions"] / out["steps"] if out.get("steps") else None
    scored = [b for b in blocks if b.get("T") is not None and b.get("n_scored")]
    if scored:
        n = sum(int(b["n_scored"]) for b in scored)
        wins = sum(round(float(b["T"]) * int(b["n_scored"])) for b in scored)
        helped = sum(round(float(b["C"]) * int(b["n_scored"])) for b in scored)
        lam = float(out["lambda"])
        out.update(T=wins / n, C=helped / n, R=(wins - lam * helped) / n)
        out.pop("note", None)
    return out


def _stored_trajectories(shards: Sequence[ShardRun], chosen: Any, table: pl.DataFrame) -> list[Any] | None:
    """The run's trajectories (one per candidate of the joined table) from the shards' stores, scored and
    ordered as the unsharded run has them; None when some are not there."""
    from bon.datasets.taskset import load as taskset_of
    from bon.generators import store

    found: dict[tuple[str, int], Any] = {}
    for s in shards:
        where = _config(s.run_dir).get("generator", {}).get("store")
        path = Path(str(where)).expanduser() if where else s.run_dir / "trajectories.jsonl"
        try:
            found |= store.load(path)
        except BonError:  # a damaged store: the counts still combine exactly
            return None
    wanted = table.select("task_id", "sample").unique().rows()
    if any(key not in found for key in wanted):
        return None
    taskset = taskset_of(chosen.dataset, chosen.replaying)
    position = {t.id: i for i, t in enumerate(taskset.tasks)}
    if any(task_id not in position for task_id, _ in wanted):
        return None
    ordered = sorted(wanted, key=lambda key: (position[key[0]], key[1]))
    return taskset.scored(found[key] for key in ordered)


def merge_one(shards: Sequence[ShardRun], out_dir: Path) -> dict[str, Any]:
    """Evaluate one configuration's joined shards into `out_dir`; returns the summary written."""
    from bon import run
    from bon.plan import Live, RehacOffline, plan

    cfg = _config(shards[0].run_dir)
    cfg.dataset.shard, cfg.dataset.num_shards = 0, 1  # the whole dataset: the unsharded run's config
    chosen = plan(cfg)
    assert not isinstance(chosen, RehacOffline)  # dataset=rehac refuses sharding (bon.plan)
    tables = []
    for s in shards:
        try:
            tables.append(pl.read_parquet(s.run_dir / "candidates.parquet"))
        except Exception as exc:  # noqa: BLE001 - polars raises several kinds for a damaged file
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise BonError(f"{s.run_dir}: candidates.parquet is unreadable ({reason}); rerun that shard") from None
    try:
        table = pl.concat(tables, how="vertical")
    except pl.exceptions.PolarsError as exc:
        raise BonError(f"the shards of configuration '{shards[0].name}' have candidate tables with different columns "
                       f"({str(exc).splitlines()[0]}); rerun them with one bon") from None
    run._prepare_out_dir(out_dir)
    (out_dir / ".hydra").mkdir(exist_ok=True)
    OmegaConf.save(cfg, out_dir / ".hydra" / "config.yaml")
    overrides = [o for o in shards[0].name.split(" ") if o and o != "(no overrides)"]
    OmegaConf.save(OmegaConf.create([o for o in overrides if not o.startswith("dataset.num_shards=")]),
                   out_dir / ".hydra" / "overrides.yaml")
    usage = _usage(shards)
    collaboration = _collaboration(shards, chosen, table)
    if collaboration is not None:
        usage = (usage or {}) | {"collaboration": collaboration}
    if isinstance(chosen, Live) and any("submission" in (s.summary.get("usage") or {}) for s in shards):
        from bon.live import _write_submission

        usage = (usage or {}) | {"submission": str(_write_submission(out_dir, table))}
    merged = {"shards": len(shards), "runs": [str(s.run_dir.resolve()) for s in shards]}
    return run.finish(chosen, out_dir, table, usage, merged=merged)


def merge(root: Path, out: Path) -> list[Path]:
    """Merge every sharded configuration under `root` into out/0, out/1, ...; returns those directories."""
    shards, others = find_shards(root)
    if not shards:
        raise BonError(f"no shard runs under {root} (summary.json files of runs with dataset.num_shards > 1); "
                       f"run `python -m bon.run -m dataset.num_shards=K dataset.shard=0,...,K-1 ...` first")
    groups = group(shards)
    if others:
        print(f"note: {others} run(s) under {root} are not shards and were left out", file=sys.stderr)
    written = []
    for n, runs in enumerate(groups):
        out_dir = out / str(n)
        print(f"merging {len(runs)} shards of '{runs[0].name}' into {out_dir}")
        merge_one(runs, out_dir)
        written.append(out_dir)
    return written


@command
def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bon.merge DIR --out OUT`; bad input is one line and exit 2."""
    parser = argparse.ArgumentParser(
        prog="python -m bon.merge",
        description="Join the shards (dataset.num_shards / dataset.shard) of each configuration under ROOT, "
                    "evaluate each once, and write it to OUT/<n>/ like a `python -m bon.run` run.")
    parser.add_argument("root", type=Path, help="a multirun (or any) directory holding the shards' run directories")
    parser.add_argument("--out", type=Path, required=True, help="where each merged configuration is written")
    args = parser.parse_args(argv)
    merge(args.root, args.out)


if __name__ == "__main__":
    main()
    finished()  # done: no interpreter teardown (bon.errors.finished)

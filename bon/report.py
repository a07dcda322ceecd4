"""`python -m bon.report DIR [--out OUT]`: gather every summary.json under DIR into one report.

Writes into OUT (default DIR):

* report.csv -- like the paper's Table 4: one line per selector, one accuracy column (percent) per
  judge / subset (the deterministic pick; report_long.csv has the tie-aware expectation beside it).
* report_long.csv -- one line per (selector, judge, subset) with every figure, accuracies in percent;
  pooled `subset=all` runs also contribute one line per subset from their `by_subset` breakdown
  (row_kind "by_subset", no interval).
* report.md  -- selectors x (judge, subset) table of the tie-aware expected accuracy "[CI low, CI high]" in
  percent, then the same for the deterministic pick, best-of-k at each k, a paired comparison against
  `final` (tie-aware and deterministic), and notes; missing jobs are named at the top.
* report.png -- per subset, every judge's tie-aware accuracy per selector and each selector's paired
  difference from `final`, with intervals; report_best_of_k_<subset>.png -- best-of-k curves, a panel
  per judge (bon.plots).

A run directory whose candidates.parquet / selections.parquet are missing, unreadable or disagree with its
summary.json is refused; a job Hydra started (or a multirun.yaml lists) without a summary.json is named.
"""
from __future__ import annotations

import argparse
import csv
import functools
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bon.errors import BonError, exit_on_user_error, finished
from bon.fmt import is_number, pct
from bon.plots import tie_aware
from bon.summary import REHAC_KIND, Summary

SUMMARY = "summary.json"
FRACTION_KEYS = ("accuracy", "accuracy_expected", "ci_low", "ci_high", "pass_at_n", "random")
# Table 4 order of AgentProcessBench: baseline first, the PRM/ORM selectors, then anything else, oracles last.
PREFERRED_ORDER = ("random", "final", "pos_count", "pos_ratio", "two_stage")
CSV_COLUMNS = ("dataset", "subset", "judge", "selector", "oracle", "row_kind", "n_tasks", "n_candidates",
               "accuracy", "accuracy_expected", "ci_low", "ci_high", "pass_at_n", "random", "judge_failed",
               "note", "source")


# --------------------------------------------------------------------------- loading


def _natural_key(path: Path) -> list[Any]:
    """multirun/<date>/<time>/10 after .../9, not after .../1."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_summaries(root: Path) -> list[Path]:
    """Every summary.json under `root`, in natural (job-number) order."""
    if not root.exists():
        raise BonError(f"no such directory: {root}")
    if not root.is_dir():
        raise BonError(f"not a directory: {root} (pass the run or multirun directory that holds summary.json files)")
    found = sorted((p for p in root.rglob(SUMMARY) if p.is_file()), key=_natural_key)
    if not found:
        raise BonError(f"no {SUMMARY} found under {root} (run `python -m bon.run` first, "
                       f"or point at its outputs/ or multirun/ directory)")
    return found


def _read(path: Path) -> Any:
    """The parsed JSON of one summary.json (read once: it is dispatched on its kind, then checked)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise BonError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BonError(f"malformed {path}: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None


def load_rows(path: Path, root: Path | None = None, data: Any = None) -> list[dict[str, Any]]:
    """The rows of one summary.json (bon.summary checks them), each with `source` (path relative to `root`)
    and the run's `confidence` added. `data`: the file's JSON if already parsed."""
    summary = Summary.from_json(_read(path) if data is None else data, path)
    source = str(path.relative_to(root)) if root is not None and path.is_relative_to(root) else str(path)
    rows = [{**row.to_json(), "source": source, "_path": str(path), "confidence": summary.confidence,
             "compute": summary.compute, "_shard": summary.shard} for row in summary.rows]
    method = (summary.compute or {}).get("method")
    for row in rows:  # runs of one selector by different methods (search, mixture, reflection) stay apart
        if method and method != row["selector"]:
            row["selector"] = method
    return rows


def _key(row: dict[str, Any]) -> tuple[str, str, str, str]:
    return row["dataset"], row["selector"], row["judge"], row["subset"]


RUN_FILES = ("candidates.parquet", "selections.parquet")


def check_run_files(summary_path: Path, rows: list[dict[str, Any]], table_rows: int | None = None) -> None:
    """Refuse a run directory whose tables do not back its summary.json (an interrupted or altered run).

    bon.run writes candidates.parquet (one line per judge x candidate) and selections.parquet (one line per
    judge x task) before summary.json, so both must be there, readable, and as long as the summary says.
    """
    import polars as pl

    run_dir = summary_path.parent
    advice = "rerun it, or move the directory out of the report"
    lengths = {}
    for name in RUN_FILES:
        path = run_dir / name
        if not path.is_file():
            raise BonError(f"{run_dir}: summary.json is there but {name} is missing (an interrupted or altered run); "
                           f"{advice}")
        try:
            lengths[name] = int(pl.scan_parquet(path).select(pl.len()).collect().item())
        except Exception as exc:  # noqa: BLE001 - polars raises several kinds for a damaged file
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise BonError(f"{run_dir}: {name} is unreadable ({reason}); {advice}") from None
    tasks = sum(r["n_tasks"] for r in rows)
    if lengths["selections.parquet"] != tasks:
        raise BonError(f"{run_dir}: selections.parquet has {lengths['selections.parquet']} rows but summary.json "
                       f"counts {tasks} tasks; {advice}")
    if table_rows is None:  # a summary from before `table_rows`: its rows' candidates, where they are all of them
        candidates = [r.get("n_candidates") for r in rows]
        counts = [n for n in candidates if isinstance(n, int) and not isinstance(n, bool)]
        applied = all(r["n_tasks"] for r in rows)  # a selector that did not apply counts no candidates (yet has them)
        table_rows = sum(counts) if applied and len(counts) == len(candidates) else None
    if table_rows is not None and lengths["candidates.parquet"] != table_rows:
        raise BonError(f"{run_dir}: candidates.parquet has {lengths['candidates.parquet']} rows but summary.json "
                       f"counts {table_rows} candidates; {advice}")


def _overrides(run_dir: Path) -> str:
    """The job's command-line overrides (Hydra's .hydra/overrides.yaml), for naming it."""
    try:
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "overrides.yaml"))
    except Exception:  # noqa: BLE001 - a job that died early may have none
        return ""
    return " ".join(str(v) for v in values) if isinstance(values, list) else ""


def _expected_jobs(manifest: Path) -> int | None:
    """How many jobs a Hydra multirun.yaml's sweep launches (None when it cannot be told, e.g. a glob sweep)."""
    try:
        from hydra.core.override_parser.overrides_parser import OverridesParser
        from omegaconf import OmegaConf

        hydra = OmegaConf.load(manifest).hydra
        sweep = OmegaConf.to_container(hydra.sweep, resolve=False)
        if not isinstance(sweep, dict) or str(sweep.get("subdir")) != "${hydra.job.num}":
            return None  # job directories are not numbered: only the directories themselves can be checked
        count = 1
        for override in OverridesParser.create().parse_overrides(list(hydra.overrides.task)):
            if override.is_sweep_override():
                count *= len(list(override.sweep_string_iterator()))
        return count
    except Exception:  # noqa: BLE001 - a sweep we cannot expand is checked by its job directories alone
        return None


def missing_jobs(root: Path) -> list[str]:
    """Jobs under `root` without a summary.json: run directories Hydra started (they hold .hydra/) that never
    finished, and jobs a multirun.yaml launches whose directory is absent. Each named with its overrides."""
    missing = {}
    for config in root.rglob(".hydra/config.yaml"):
        run_dir = config.parent.parent
        if not (run_dir / SUMMARY).is_file():
            missing[run_dir] = _overrides(run_dir)
    for manifest in root.rglob("multirun.yaml"):
        expected = _expected_jobs(manifest)
        for job in range(expected or 0):
            run_dir = manifest.parent / str(job)
            if not run_dir.is_dir():
                missing[run_dir] = "never started"
    ordered = sorted(missing.items(), key=lambda item: _natural_key(item[0]))
    return [f"{d}" + (f" ({why})" if why else "") for d, why in ordered]


def collect(root: Path) -> list[dict[str, Any]]:
    """All rows under `root`; two results for the same (selector, judge, subset) are an error, and so is a run
    directory whose tables do not back its summary.json."""
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, str, str, str], str] = {}
    skipped = []
    for path in find_summaries(root):
        data = _read(path)
        if isinstance(data, dict) and data.get("kind") == REHAC_KIND:  # own tables: policies.csv, best_of_n.csv
            skipped.append(path)
            continue
        loaded = load_rows(path, root, data)
        check_run_files(path, loaded, data.get("table_rows") if isinstance(data, dict) else None)
        for row in loaded:
            key = _key(row)
            if key in seen:
                dataset, selector, judge, subset = key
                if row.get("_shard"):  # shards of one configuration: they are joined first, not reported side by side
                    raise BonError(f"{row['_path']} is shard {row['_shard']['index']} of {row['_shard']['of']} of a "
                                   f"sharded run: join the shards with `python -m bon.merge {root} --out <dir>` and "
                                   f"report that directory")
                raise BonError(f"duplicate result for selector {selector!r}, judge {judge!r}, subset {subset!r} "
                               f"({dataset}) in {seen[key]} and {row['_path']}; move one of them out of {root}")
            seen[key] = row["_path"]
            rows.append(row)
    if skipped and not rows:
        raise BonError(f"{root} holds only dataset=rehac runs ({len(skipped)}); their tables are policies.csv and "
                       "best_of_n.csv beside each summary.json, not a selector report")
    return rows


# --------------------------------------------------------------------------- ordering


def _first_seen(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def selector_order(rows: list[dict[str, Any]]) -> list[str]:
    """random, final, pos_count, pos_ratio, two_stage, other selectors (alphabetical), oracles (pass_at_n last)."""
    names = _first_seen(r["selector"] for r in rows)
    oracle = {r["selector"] for r in rows if r["oracle"]}
    known = [n for n in PREFERRED_ORDER if n in names and n not in oracle]
    others = sorted(n for n in names if n not in PREFERRED_ORDER and n not in oracle)
    oracles = sorted(oracle, key=lambda n: (n == "pass_at_n", n))
    return known + others + oracles


def subset_order(rows: list[dict[str, Any]]) -> list[str]:
    """In order of first appearance, with the pooled 'all' last."""
    names = _first_seen(r["subset"] for r in rows)
    return [n for n in names if n != "all"] + [n for n in names if n == "all"]


def judge_order(rows: list[dict[str, Any]]) -> list[str]:
    return _first_seen(r["judge"] for r in rows)


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(dataset, judge, subset) columns: judge-major, as in `judge x subset`."""
    present = {(r["dataset"], r["judge"], r["subset"]) for r in rows}
    return [(d, j, s) for d in _first_seen(r["dataset"] for r in rows)
            for j in judge_order(rows) for s in subset_order(rows) if (d, j, s) in present]


# --------------------------------------------------------------------------- formatting


def _cell(row: dict[str, Any], expected: bool = False) -> str:
    """'accuracy [CI]' in percent: the deterministic pick, or (expected) the tie-aware expectation."""
    value, low, high = tie_aware(row) if expected else (row["accuracy"], row["ci_low"], row["ci_high"])
    text = pct(value) or "n/a"
    if is_number(low) and is_number(high):
        text += f" [{pct(low)}, {pct(high)}]"
    return text + (" †" if row["note"] else "")


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: list[str], body: list[list[str]], align: list[str]) -> str:
    rule = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
             "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def _selector_label(name: str, oracle: bool) -> str:
    return f"{name} (oracle)" if oracle else name


def baseline(rows: list[dict[str, Any]], field: str) -> float | None:
    """The run-level baseline (`random` or `pass_at_n`) shared by a column's rows.

    Rows whose selector saw only part of the tasks (a `note`) are used only if nothing else is there.
    """
    pool = [r for r in rows if not r["note"]] or rows
    values = [r[field] for r in pool if is_number(r[field])]
    return values[0] if values else None


def main_table(rows: list[dict[str, Any]], expected: bool = False) -> str:
    """Selectors down, judge x subset across, cells 'accuracy [CI]' in percent: the deterministic pick, or
    (expected) the tie-aware expectation with the interval of its best-of-k curve at k = N."""
    cols = columns(rows)
    multi_dataset = len({c[0] for c in cols}) > 1
    by_key = {_key(r): r for r in rows}
    oracle = {r["selector"]: r["oracle"] for r in rows}
    names = selector_order(rows)
    col_rows = {c: [r for r in rows if (r["dataset"], r["judge"], r["subset"]) == c] for c in cols}
    header = ["selector"] + [f"{d} / " * multi_dataset + f"{j} / {s}" for d, j, s in cols]
    body: list[list[str]] = []
    body.append(["random (expected)"] + [pct(baseline(col_rows[c], "random")) for c in cols])
    for name in names:
        label = "random (lowest sample index)" if name == "random" and not expected else _selector_label(
            name, oracle[name])
        line = [label]
        for d, j, s in cols:
            row = by_key.get((d, name, j, s))
            line.append(_cell(row, expected) if row else "–")
        body.append(line)
    if "pass_at_n" not in names:
        body.append(["pass@N (oracle)"] + [pct(baseline(col_rows[c], "pass_at_n")) for c in cols])
    return _md_table(header, body, ["l"] + ["r"] * len(cols))


def best_of_k_table(rows: list[dict[str, Any]]) -> str | None:
    """Expected accuracy (%) of each selector choosing among k of the N candidates."""
    with_curve = [r for r in rows if r.get("best_of_k")]
    if not with_curve:
        return None
    ks = sorted({k for r in with_curve for k in r["best_of_k"]["k"]})
    rank = {n: i for i, n in enumerate(selector_order(rows))}
    cols = {c: i for i, c in enumerate(columns(rows))}
    with_curve.sort(key=lambda r: (rank[r["selector"]], cols[(r["dataset"], r["judge"], r["subset"])]))
    body = []
    for r in with_curve:
        curve = dict(zip(r["best_of_k"]["k"], r["best_of_k"]["accuracy"]))
        body.append([_selector_label(r["selector"], r["oracle"]), r["judge"], r["subset"],
                     str(r["best_of_k"].get("method", ""))] + [pct(curve.get(k)) for k in ks])
    return _md_table(["selector", "judge", "subset", "method"] + [f"k={k}" for k in ks], body,
                     ["l", "l", "l", "l"] + ["r"] * len(ks))


def breakdown_table(rows: list[dict[str, Any]]) -> str | None:
    """Per-subset point estimates of pooled runs (their by_subset), which carry no interval."""
    pooled = [r for r in rows if r["by_subset"]]
    if not pooled:
        return None
    subsets = _first_seen(s for r in pooled for s in r["by_subset"])
    rank = {n: i for i, n in enumerate(selector_order(rows))}
    judges = {j: i for i, j in enumerate(judge_order(rows))}
    pooled.sort(key=lambda r: (rank[r["selector"]], judges[r["judge"]]))
    body = [[_selector_label(r["selector"], r["oracle"]), r["judge"], r["subset"]]
            + [pct(r["by_subset"][s]["accuracy"]) if s in r["by_subset"] else "–" for s in subsets]
            for r in pooled]
    return _md_table(["selector", "judge", "pooled"] + subsets, body, ["l", "l", "l"] + ["r"] * len(subsets))


def level_label(rows: list[dict[str, Any]]) -> str:
    """The interval level(s) of the runs, e.g. '95%', as their summaries record them."""
    levels = sorted({r["confidence"] for r in rows})
    return " / ".join(f"{100 * c:g}%" for c in levels)


def _level_text(rows: list[dict[str, Any]]) -> str:
    levels = sorted({r["confidence"] for r in rows})
    text = " / ".join(f"{100 * c:g}%" for c in levels)
    if len(levels) > 1:
        text += " (runs used different levels: see report.csv sources)"
    return text


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """One line per distinct note, naming the rows it applies to."""
    grouped: dict[str, list[str]] = {}
    for r in rows:
        if r["note"]:
            grouped.setdefault(r["note"], []).append(f"{r['selector']} ({r['judge']}, {r['subset']})")
    return [f"† {', '.join(where)}: {note}." for note, where in grouped.items()]


def missing_text(missing: list[str]) -> str:
    return (f"MISSING: {len(missing)} job(s) have no summary.json (failed, interrupted or still running) and are "
            f"not in this report: " + "; ".join(missing))


def markdown(rows: list[dict[str, Any]], missing: list[str] | None = None) -> tuple[str, str]:
    """(the whole report.md, the main table with its caption for stdout); `missing` names absent jobs."""
    datasets = ", ".join(_first_seen(r["dataset"] for r in rows))
    counts = {s: _first_seen(str(r["n_tasks"]) for r in rows if r["subset"] == s and r["n_tasks"])
              for s in subset_order(rows)}
    tasks = "; ".join(f"{s}: {', '.join(n)}" for s, n in counts.items())
    caption = (f"Tie-aware expected selection accuracy (%) on {datasets} with {_level_text(rows)} bootstrap "
               f"intervals over tasks [low, high]: a tie counts as the mean success of the tied candidates, so the "
               f"numbers do not depend on sample order. Columns are judge / subset; tasks per subset: {tasks}.")
    table = main_table(rows, expected=True)
    lines = notes(rows)
    summary = "\n".join(([f"**{missing_text(missing)}**", ""] if missing else []) + [caption, "", table]
                        + ([""] + lines if lines else []))
    parts = ["# Best-of-N selection report", "", summary, "",
             "`random (expected)` is the exact expected accuracy of a uniformly random pick (no interval); "
             "`pass@N` counts a task as solved if any of its N candidates is correct, the ceiling for any "
             "selector. Oracle selectors use ground truth."]
    parts += ["", "## Deterministic pick (ties to the lowest sample index)", "",
              "The same selectors when a tie goes to the candidate with the lowest sample index. On "
              "AgentProcessBench each sample index is a different policy model, so this favours whichever model "
              "is sample 0 (on tau2 the weakest): read it beside the tie-aware table above, not instead of it.",
              "", main_table(rows)]
    bok = best_of_k_table(rows)
    if bok:
        parts += ["", "## Best-of-k", "",
                  "Expected accuracy (%) when the selector chooses among k candidates drawn from the N recorded ones "
                  "(k=1 is the random baseline, k=N the selector's expected accuracy over tie-breaks).", "", bok]
    spent = compute_table(rows)
    if spent:
        parts += ["", "## Accuracy against compute", "",
                  "What each method cost per task (every call it needs, cache hits included, so a rerun shows the same "
                  "cost) beside its tie-aware accuracy. report_compute.png draws Best-of-N at every k (k samples cost "
                  "k times one sample's generation and judging) against the other methods' single points, so methods "
                  "can be compared at equal tokens.", "", spent]
    breakdown = breakdown_table(rows)
    if breakdown:
        parts += ["", "## Per-subset breakdown of pooled runs", "",
                  "Accuracy (%) within each subset of runs with subset=all (point estimates; no intervals).", "",
                  breakdown]
    versus = paired_table(rows)
    if versus:
        parts += ["", f"## Paired comparison against `{PAIRED_BASELINE}`", "",
                  "Same tasks, same judge: accuracy difference in points with its bootstrap interval, first of the "
                  "tie-aware per-task success, then of the deterministic pick, with the tasks only the selector / "
                  "only the baseline gets right by the deterministic pick and its exact McNemar p-value.", "",
                  versus]
    sources = _first_seen(r["source"] for r in rows)
    parts += ["", f"Built by `python -m bon.report` from {len(sources)} summary.json file(s)."]
    return "\n".join(parts) + "\n", summary


PAIRED_BASELINE = "final"


def _picks(row: dict[str, Any], column: str = "correct") -> dict[str, float] | None:
    """Per-task correctness of a row's selector (`correct`: the deterministic pick; `expected`: tie-aware), from
    the selections.parquet beside its summary.json."""
    return _read_picks(str(Path(row["_path"]).with_name("selections.parquet")), row["judge"], column)


@functools.lru_cache(maxsize=512)
def _read_picks(file: str, judge: str, column: str) -> dict[str, float] | None:
    """Read once per (file, judge, column): the baseline's file serves every selector compared with it."""
    path = Path(file)
    if not path.is_file():
        return None
    import polars as pl

    frame = pl.read_parquet(path, columns=["judge", "subset", "task_id", column])
    frame = frame.filter(pl.col("judge") == judge)
    return {f"{s}:{t}": float(c) for s, t, c in frame.select("subset", "task_id", column).iter_rows()}


def attach_tie_aware_differences(rows: list[dict[str, Any]]) -> None:
    """Give every row with a `final` row on its (dataset, judge, subset) `vs_final`: the mean paired difference
    of the tie-aware per-task success (selector minus final) with a bootstrap interval over the shared tasks."""
    from bon.metrics import bootstrap_ci

    base = {(r["dataset"], r["judge"], r["subset"]): r for r in rows
            if r["selector"] == PAIRED_BASELINE and r["n_tasks"]}
    for r in rows:
        ref = base.get((r["dataset"], r["judge"], r["subset"]))
        r["vs_final"] = None
        if ref is None or r is ref or not r["n_tasks"]:
            continue
        mine, theirs = _picks(r, "expected"), _picks(ref, "expected")
        if mine is None or theirs is None:
            continue
        tasks = sorted(set(mine) & set(theirs))
        if not tasks:
            continue
        diffs = [mine[t] - theirs[t] for t in tasks]
        low, high = bootstrap_ci(diffs, r["confidence"])
        r["vs_final"] = {"n_tasks": len(tasks), "diff": sum(diffs) / len(diffs), "ci_low": low, "ci_high": high}


def compute_table(rows: list[dict[str, Any]]) -> str | None:
    """What each method cost per task beside its tie-aware accuracy (live runs; issue 14's comparison)."""
    priced = [r for r in rows if r.get("compute") and r["accuracy"] is not None]
    if not priced:
        return None
    body = []
    for r in sorted(priced, key=lambda r: (r["judge"], r["compute"]["per_task"]["tokens"])):
        per = r["compute"]["per_task"]
        value, low, high = tie_aware(r)
        ci = f" [{pct(low)}, {pct(high)}]" if is_number(low) and is_number(high) else ""
        body.append([_md_escape(r["selector"]), _md_escape(r["judge"]), f"{per['tokens']:.0f}", f"{per['calls']:.1f}",
                     "-" if per["usd"] is None else f"{per['usd']:.4f}", f"{pct(value)}{ci}",
                     _md_escape(r["compute"].get("note") or "")])
    header = ["method", "judge", "tokens / task", "calls / task", "USD / task", "accuracy (tie-aware)", "note"]
    return _md_table(header, body, ["l", "l", "r", "r", "r", "r", "l"])


def paired_table(rows: list[dict[str, Any]]) -> str | None:
    """Each selector against the ORM baseline on the same tasks (bon.metrics.paired)."""
    from bon.metrics import paired

    base = {(r["dataset"], r["judge"], r["subset"]): r for r in rows
            if r["selector"] == PAIRED_BASELINE and r["n_tasks"]}
    body = []
    for r in sorted(rows, key=lambda r: (r["judge"], r["subset"], selector_order(rows).index(r["selector"]))):
        ref = base.get((r["dataset"], r["judge"], r["subset"]))
        if ref is None or r is ref or not r["n_tasks"]:
            continue
        mine, theirs = _picks(r), _picks(ref)
        if not mine or not theirs:
            continue
        tasks = sorted(set(mine) & set(theirs))
        result = paired([mine[t] for t in tasks], [theirs[t] for t in tasks])
        tie = r.get("vs_final")
        tie_text = (f"{100 * tie['diff']:+.1f} [{100 * tie['ci_low']:+.1f}, {100 * tie['ci_high']:+.1f}]"
                    if tie else "")
        body.append([_selector_label(r["selector"], r["oracle"]), r["judge"], r["subset"], str(result.n_tasks),
                     tie_text, f"{100 * result.diff:+.1f} [{100 * result.ci_low:+.1f}, {100 * result.ci_high:+.1f}]",
                     f"{result.a_only} / {result.b_only}", f"{result.p_value:.3f}"])
    if not body:
        return None
    return _md_table(["selector", "judge", "subset", "tasks", "Δ tie-aware [CI]", "Δ deterministic [CI]",
                      "only it / only base", "p"], body, ["l", "l", "l", "r", "r", "r", "r", "r"])


# --------------------------------------------------------------------------- CSV


def csv_records(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """report_long.csv's lines: each run row, then its by_subset breakdown; fractions as percent, 1 decimal."""
    out = []
    rank = {n: i for i, n in enumerate(selector_order(rows))}
    cols = {c: i for i, c in enumerate(columns(rows))}
    for r in sorted(rows, key=lambda r: (rank[r["selector"]], cols[(r["dataset"], r["judge"], r["subset"])])):
        base = {"dataset": r["dataset"], "judge": r["judge"], "selector": r["selector"],
                "oracle": str(r["oracle"]).lower(), "note": r["note"], "source": r["source"]}
        out.append({**base, "subset": r["subset"], "row_kind": "run", "n_tasks": str(r["n_tasks"]),
                    "n_candidates": str(r.get("n_candidates", "")),
                    **{k: pct(r[k]) for k in FRACTION_KEYS}, "judge_failed": str(r["judge_failed"])})
        for name, part in r["by_subset"].items():
            out.append({**base, "subset": name, "row_kind": "by_subset", "n_tasks": str(part["n_tasks"]),
                        "n_candidates": "", **{k: pct(part.get(k)) for k in FRACTION_KEYS}, "judge_failed": ""})
    return out


def wide_records(rows: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, str]]]:
    """report.csv like Table 4: one line per selector, one accuracy column (percent) per judge / subset."""
    cols = columns(rows)
    multi_dataset = len({c[0] for c in cols}) > 1
    names = {c: f"{c[0]} / " * multi_dataset + f"{c[1]} / {c[2]}" for c in cols}
    by_key = {_key(r): r for r in rows}
    records = []
    for selector in selector_order(rows):
        line = {"selector": selector}
        for d, j, sub in cols:
            row = by_key.get((d, selector, j, sub))
            line[names[(d, j, sub)]] = pct(row["accuracy"]) if row else ""
        records.append(line)
    return ["selector", *names.values()], records


def write_csv(records: list[dict[str, str]], path: Path, fieldnames: Sequence[str] = CSV_COLUMNS) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(records)


# --------------------------------------------------------------------------- command


def build(root: Path, out: Path | None = None) -> dict[str, Path]:
    """Write report.csv, report.md and report.png for every summary under `root`; returns their paths."""
    root = Path(root)
    out = Path(out) if out is not None else root
    rows = collect(root)
    missing = missing_jobs(root)
    attach_tie_aware_differences(rows)
    if out.exists() and not out.is_dir():
        raise BonError(f"--out {out} exists and is not a directory")
    paths = {"csv": out / "report.csv", "long_csv": out / "report_long.csv", "md": out / "report.md",
             "png": out / "report.png"}
    md, summary = markdown(rows, missing)
    try:
        out.mkdir(parents=True, exist_ok=True)
        header, wide = wide_records(rows)
        write_csv(wide, paths["csv"], header)
        write_csv(csv_records(rows), paths["long_csv"])
        paths["md"].write_text(md)
        from bon import plots

        scored = [r for r in rows if r["accuracy"] is not None]  # not-applicable rows stay in the tables only
        selectors, judges, subsets, level = (selector_order(scored), judge_order(scored), subset_order(scored),
                                             level_label(rows))
        plots.report_figure(scored, paths["png"], selectors=selectors, judges=judges, subsets=subsets, level=level)
        for i, path in enumerate(plots.best_of_k_figures(scored, out, selectors=selectors, judges=judges,
                                                         subsets=subsets, level=level)):
            paths[f"best_of_k_png_{i}"] = path
        if any(r.get("compute") for r in scored):
            paths["compute_png"] = plots.compute_figure(scored, out / "report_compute.png", selectors=selectors,
                                                        level=level)
    except OSError as exc:
        raise BonError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    print(summary)
    print()
    for path in paths.values():
        print(f"wrote {path}")
    if missing:
        print(f"warning: {missing_text(missing)}", file=sys.stderr)
    return paths


@exit_on_user_error
def _run(root: Path, out: Path | None) -> dict[str, Path]:
    return build(root, out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bon.report",
        description="Collect every summary.json written by `python -m bon.run` under DIR (runs and multiruns) "
                    "into report.csv, report.md and report.png.")
    parser.add_argument("dir", type=Path, help="directory searched recursively for summary.json files")
    parser.add_argument("--out", type=Path, default=None, help="where to write the report (default: DIR)")
    args = parser.parse_args(argv)
    _run(args.dir, args.out)


if __name__ == "__main__":
    main()
    finished()  # done: no interpreter teardown (bon.errors.finished)

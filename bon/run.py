"""`python -m bon.run`: select among recorded candidates and report accuracy with intervals.

Writes summary.json, candidates.parquet and selections.parquet into the Hydra run directory.
"""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import polars as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from bon import config, datasets, shard
from bon.config import conf_dir
from bon.errors import BonError, exit_on_user_error, finished, leave
from bon.evaluate import evaluate
from bon.fmt import pct
from bon.plan import Live, RehacOffline, Replay, Sim, plan
from bon.sim import SYNTHETIC
from bon.summary import Row, Summary

EXIT_FAILED = 1  # every generation or every judgement failed (outputs written)
EXIT_BUDGET = 3  # budget.usd / budget.calls stopped the run (partial outputs written)
SYNTHETIC_NOTE = f"{SYNTHETIC}: simulated trajectories and judge, calibrated to AgentProcessBench statistics"


def format_rows(rows: list[Row]) -> str:
    """The short table a run prints: one line per judge, accuracies in percent.

    The tie-aware expectation comes first (the mean success over the candidates a selector could not
    tell apart); then the accuracy of the deterministic pick (the lowest sample index among them)
    and its interval. Failures: judge calls that failed, candidates whose generation failed (live
    runs; "-" for recorded candidates)."""
    width = max([len("judge")] + [len(r.judge) for r in rows])
    cols = ("exp (tie-aware)", "acc (ties→first)", "95% CI (acc)", "random", "pass@N", "judge failed", "gen failed")
    widths = [max(len(c), 13 if "CI" in c else 6) for c in cols]  # 13: "[100.0, 100.0]" fits with one space
    head = f"{'judge':<{width}}  {'tasks':>5}  " + "  ".join(f"{c:>{w}}" for c, w in zip(cols, widths))
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = f"[{pct(r.ci_low, '-')}, {pct(r.ci_high, '-')}]"
        cells = (pct(r.accuracy_expected, "-"), pct(r.accuracy, "-"), ci, pct(r.random, "-"), pct(r.pass_at_n, "-"),
                 r.judge_failed, "-" if r.generation_failed is None else r.generation_failed)
        lines.append(f"{r.judge:<{width}}  {r.n_tasks:>5}  "
                     + "  ".join(f"{str(v).strip():>{w}}" for v, w in zip(cells, widths)))
    return "\n".join(lines)


def format_compute(c: dict[str, Any]) -> str:
    """One line: what the method cost per task, by stage (cache hits included: the method's cost)."""
    per = c["per_task"]
    stages = ", ".join(f"{name} {part['tokens'] / max(c['tasks'], 1):.0f}" for name, part in c["stages"].items())
    usd = "" if per["usd"] is None else f", ${per['usd']:.4f}"
    line = f"compute ({c['method']}): {per['tokens']:.0f} tokens per task ({stages}){usd}, {per['calls']:.1f} calls"
    return line + (f"; {c['note']}" if c["note"] else "")


def format_collaboration(c: dict[str, Any]) -> str:
    """One line: who helped how often, and what it was worth at the run's lambda."""
    if c["policy"] == "reflect":  # the agent revises itself: no helper step, so C = 0
        head = f"reflection: {c.get('reflections', 0)} reflection prompts over {c['steps']} steps"
        if c.get("judge_failures"):
            head += f", {c['judge_failures']} online judge calls failed"
        return head if c["T"] is None else f"{head}; T={c['T']:.3f}"
    rate = "n/a" if c["intervention_rate"] is None else f"{100 * c['intervention_rate']:.1f}%"
    budget = "" if c.get("budget") is None else f", budget {c['budget']}"
    head = f"collaboration ({c['policy']}{budget}): {c['interventions']} of {c['steps']} steps by the helper ({rate})"
    if c.get("judge_failures"):
        head += f", {c['judge_failures']} online judge calls failed"
    if c["T"] is None:
        return f"{head}; {c['note']}"
    return f"{head}; T={c['T']:.3f} C={c['C']:.2f} R=T-{c['lambda']:g}*C={c['R']:.3f}"


def _prepare_out_dir(out_dir: Path) -> None:
    """A run directory that cannot be written is an error before any work (or any paid call) is done."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BonError(f"cannot create the run directory {out_dir}: {exc.strerror}; "
                       f"set hydra.run.dir to a writable directory") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise BonError(f"the run directory {out_dir} is not writable; set hydra.run.dir to a writable directory")


def _write_outputs(out_dir: Path, table: Any, picks: Any, summary: dict[str, Any]) -> None:
    """Tables first, summary.json last, each through a temporary file and a rename.

    So a run stopped or out of disk space part-way never leaves a complete-looking summary.json
    beside a truncated table: either every file of this run is in place, or there is no summary.
    """
    summary_path = out_dir / "summary.json"
    writes = [(out_dir / "candidates.parquet", lambda p: _write_parquet(table, p)),
              (out_dir / "selections.parquet", lambda p: _write_parquet(picks, p)),
              (summary_path, lambda p: Path(p).write_text(json.dumps(summary, indent=2)))]
    current = summary_path
    try:
        summary_path.unlink(missing_ok=True)  # an older run's summary must not outlive a failed rewrite
        for path, write in writes:
            current = path
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                write(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
    except (OSError, pl.exceptions.PolarsError) as exc:  # polars reports an IO error as a ComputeError
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).split("IO error:")[-1].strip()
        raise BonError(f"cannot write {current}: {reason}; summary.json was not written, "
                       f"so {out_dir} holds no result of this run") from None


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    """The frame as parquet, encoded in memory and written by Python: a full disk is then an OSError saying so
    (polars' own writer reports it, for Categorical columns, as an invalid thrift transport)."""
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    Path(path).write_bytes(buffer.getbuffer())


def _candidate_table(chosen: Sim | Replay | Live, out_dir: Path) -> tuple[pl.DataFrame, dict[str, Any] | None]:
    """The plan's candidates (one row per task x sample x judge), and for a live run what its calls cost."""
    if isinstance(chosen, Live):
        from bon import live  # imports litellm only on this path

        return live.run(chosen, out_dir)
    if isinstance(chosen, Sim):
        from bon import memory
        from bon.datasets import sim

        n_tasks, n = chosen.dataset.n_tasks, chosen.generator.n
        memory.warn_if_too_big(n_tasks * n, f"dataset=sim with {n_tasks:,} tasks x {n} samples")
        return sim.run(chosen.dataset, chosen.generator, chosen.judge, chosen.seed, chosen.selector)
    return datasets.candidate_table(chosen.dataset, chosen.judge, chosen.seed), None


def _by_model(chosen: Sim | Replay | Live, table: pl.DataFrame) -> list[dict[str, Any]] | None:
    """A mixed-model run's accuracy and pass@N by model, beside the mixture at the same number of samples."""
    if "model" not in table.columns or table["model"].n_unique() < 2 or table["success"].null_count() == table.height:
        return None
    if chosen.selector.verdicts:  # its pick was made among all N: it has no meaning on one model's candidates
        return None
    from bon.breakdown import by_model

    return by_model(table, chosen.selector, chosen.confidence, chosen.resamples, chosen.seed)


@exit_on_user_error
def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Run one configuration and write its outputs into `out_dir`; returns the summary written."""
    chosen = plan(cfg)
    _prepare_out_dir(out_dir)
    if isinstance(chosen, RehacOffline):  # offline policy evaluation: its own tables, no selector
        from bon.rehac.report import run_offline

        return run_offline(chosen, out_dir)
    return _select(chosen, out_dir)


def _select(chosen: Sim | Replay | Live, out_dir: Path) -> dict[str, Any]:
    """Candidate table -> selector's picks and one summary row per judge -> outputs and the printed table."""
    table, usage = _candidate_table(chosen, out_dir)
    return finish(chosen, out_dir, table, usage)


def finish(chosen: Sim | Replay | Live, out_dir: Path, table: pl.DataFrame, usage: dict[str, Any] | None,
           merged: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate a candidate table, write the run's outputs and print its table (bon.merge: joined shards)."""
    picks, rows = evaluate(chosen.selector, table, chosen.dataset_name, chosen.subset,
                           chosen.confidence, chosen.resamples, chosen.seed)
    synthetic = isinstance(chosen, Sim)
    if synthetic:
        for row in rows:
            row.synthetic = True
            row.note = "; ".join(filter(None, [SYNTHETIC_NOTE, row.note]))
    collaboration = (usage or {}).pop("collaboration", None)  # T, C and R = T - lambda*C of the trajectories
    stopped = (usage or {}).pop("stopped", None)  # {by: budget | failures, message}: the results are partial
    cost = (usage or {}).pop("compute", None)  # what the method cost per task (bon.compute)
    by_model = _by_model(chosen, table)
    summary = Summary(rows, confidence=chosen.confidence, seed=chosen.seed, collaboration=collaboration,
                      stopped=stopped, usage=usage,  # usage: calls, failures, retries, tokens and USD per stage
                      by_model=by_model, compute=cost, shard=shard.describe(chosen.dataset), merged=merged,
                      table_rows=table.height)
    written = summary.to_json()
    _write_outputs(out_dir, table, picks, written)
    if rows[0].n_tasks == 0:
        print(f"warning: {rows[0].note}", file=sys.stderr)
    else:
        part = f", shard {summary.shard['index']} of {summary.shard['of']}" if summary.shard else ""
        print(f"{chosen.selector.name} on {chosen.dataset_name}/{chosen.subset} "
              f"({rows[0].n_tasks} tasks{part}, accuracy in %)" + (f"  [{SYNTHETIC}]" if synthetic else ""))
        print(format_rows(rows))
        if rows[0].note:
            print(f"note: {rows[0].note}")
    for stage, st in (usage or {}).items():
        if stage == "simulation":  # dataset=sim: what the simulated search and comparing judge did
            from bon.datasets.sim import describe

            print(describe(st))
            continue
        if stage == "submission":
            print(f"wrote {st} (no reference answers: the picked answer per task)")
            continue
        if stage == "budget":
            spent = f"${st['spent_usd']:.4f} and " if st["usd"] is not None or st["spent_usd"] else ""
            print(f"budget: {spent}{st['calls_made']} API calls spent"
                  + (f"; {st['refused']} calls not made" if st["refused"] else ""))
            continue
        from bon.llm.client import format_usage

        print(format_usage(stage, st))
        if stage == "selection":
            print(f"  {st['kind']} verdicts: {st['tasks']} tasks, {st['ties']} ties; "
                  f"{st['fell_back']} tasks decided by "
                  f"{st['fallback']} ({st['failed']} verdicts failed, {st['without_candidates']} tasks without a "
                  f"candidate)")
    if cost is not None:
        print(format_compute(cost))
    if by_model:
        from bon.breakdown import format_by_model

        print(format_by_model(by_model))
    if collaboration is not None:
        print(format_collaboration(collaboration))
    print(f"wrote {out_dir / 'summary.json'}")
    if stopped is not None:  # written and shown, but not a complete result: say so and exit non-zero
        leave(f"{'stopped' if stopped['by'] == 'budget' else 'error'}: {stopped['message']}",
              EXIT_BUDGET if stopped["by"] == "budget" else EXIT_FAILED)
    return written


_started = config.RunStarted()  # set once Hydra has made the run directory and calls the task (picklable)


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    _started.set()
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


def main() -> None:
    """`python -m bon.run`: Hydra's command line; bad input is one line and exit 2, Ctrl-C exit 130."""
    config.hydra_command(_hydra_main, _started)


if __name__ == "__main__":
    main()
    finished()  # done: no interpreter teardown (bon.errors.finished)

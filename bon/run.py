"""`python -m bon.run`: select among recorded candidates and report accuracy with intervals.

Writes summary.json, candidates.parquet and selections.parquet into the Hydra run directory.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from bon import datasets, generators, selectors
from bon.config import conf_dir
from bon.errors import BonError, exit_on_user_error
from bon.evaluate import evaluate
from bon.sim import SYNTHETIC

SYNTHETIC_NOTE = f"{SYNTHETIC}: simulated trajectories and judge, calibrated to AgentProcessBench statistics"


def _pct(x: float | None) -> str:
    return "   -" if x is None or x != x else f"{100 * x:5.1f}"


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The short table a run prints: one line per judge, accuracies in percent."""
    width = max([len("judge")] + [len(r["judge"]) for r in rows])
    head = f"{'judge':<{width}}  {'tasks':>5}  {'acc':>5}  {'exp':>5}  {'95% CI':>13}  {'random':>6}  {'pass@N':>6}  failed"
    lines = [head, "-" * len(head)]
    for r in rows:
        ci = f"[{_pct(r['ci_low']).strip()}, {_pct(r['ci_high']).strip()}]"
        lines.append(f"{r['judge']:<{width}}  {r['n_tasks']:>5}  {_pct(r['accuracy'])}  {_pct(r['accuracy_expected'])}"
                     f"  {ci:>13}  {_pct(r['random']):>6}  {_pct(r['pass_at_n']):>6}  {r['judge_failed']:>6}")
    return "\n".join(lines)


def format_collaboration(c: dict[str, Any]) -> str:
    """One line: who helped how often, and what it was worth at the run's lambda."""
    rate = "n/a" if c["intervention_rate"] is None else f"{100 * c['intervention_rate']:.1f}%"
    budget = "" if c.get("budget") is None else f", budget {c['budget']}"
    head = f"collaboration ({c['policy']}{budget}): {c['interventions']} of {c['steps']} steps by the helper ({rate})"
    if c.get("judge_failures"):
        head += f", {c['judge_failures']} online judge calls failed"
    if c["T"] is None:
        return f"{head}; {c['note']}"
    return f"{head}; T={c['T']:.3f} C={c['C']:.2f} R=T-{c['lambda']:g}*C={c['R']:.3f}"


def _check_run_options(cfg: DictConfig) -> None:
    """Fail early, naming the option, rather than deep inside numpy or scipy."""
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        raise BonError(f"seed must be a non-negative integer, got {cfg.seed!r}")
    if not isinstance(cfg.confidence, float) or not 0 < cfg.confidence < 1:
        raise BonError(f"confidence must be a number strictly between 0 and 1 (e.g. 0.95), got {cfg.confidence!r}")
    if not isinstance(cfg.bootstrap_resamples, int) or cfg.bootstrap_resamples < 100:
        raise BonError(f"bootstrap_resamples must be an integer >= 100, got {cfg.bootstrap_resamples!r}")


@exit_on_user_error
def run(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Run one configuration and write its outputs into `out_dir`."""
    _check_run_options(cfg)
    if cfg.dataset.get("name") == "rehac":  # offline policy evaluation (a judge only as a predictor)
        from bon.rehac.report import run_offline

        return run_offline(cfg, out_dir)
    generators.check(OmegaConf.to_container(cfg.generator, resolve=True))
    selector = selectors.from_config(OmegaConf.to_container(cfg.selector, resolve=True))
    dataset_cfg = OmegaConf.to_container(cfg.dataset, resolve=True)
    judge_cfg = OmegaConf.to_container(cfg.judge, resolve=True)
    generator_cfg = OmegaConf.to_container(cfg.generator, resolve=True)
    usage = None
    if dataset_cfg.get("name") in ("tasks", "gaia"):
        from bon import live  # imports litellm only on this path

        table, usage = live.run(dataset_cfg, generator_cfg, judge_cfg, OmegaConf.to_container(cfg.cache), out_dir,
                                OmegaConf.to_container(cfg.tools, resolve=True),
                                OmegaConf.to_container(cfg.intervention, resolve=True))
    else:
        if cfg.intervention.policy != "none":
            raise BonError(f"intervention={cfg.intervention.policy} needs a live agent (dataset=tasks or dataset=gaia "
                           f"with a live generator); dataset={dataset_cfg.get('name')} replays recorded candidates")
        table = datasets.candidate_table(dataset_cfg, judge_cfg, generator_cfg, cfg.seed)
    subset = str(dataset_cfg.get("subset") or dataset_cfg.get("profile"))
    picks, rows = evaluate(selector, table, dataset_cfg["name"], subset,
                           cfg.confidence, cfg.bootstrap_resamples, cfg.seed)
    synthetic = dataset_cfg["name"] == "sim"
    if synthetic:
        for row in rows:
            row["synthetic"] = True
            row["note"] = "; ".join(filter(None, [SYNTHETIC_NOTE, row["note"]]))
    summary: dict[str, Any] = dict(rows[0]) if len(rows) == 1 else {}
    summary["rows"] = rows
    collaboration = (usage or {}).pop("collaboration", None)
    if collaboration is not None:
        summary["collaboration"] = collaboration  # T, C and R = T - lambda*C of the sampled trajectories
    if usage is not None:
        summary["usage"] = usage  # calls, failures, retries, tokens and USD per stage
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    table.write_parquet(out_dir / "candidates.parquet")
    picks.write_parquet(out_dir / "selections.parquet")
    if rows[0]["n_tasks"] == 0:
        print(f"warning: {rows[0]['note']}", file=sys.stderr)
    else:
        print(f"{selector.name} on {dataset_cfg['name']}/{subset} "
              f"({rows[0]['n_tasks']} tasks, accuracy in %)" + (f"  [{SYNTHETIC}]" if synthetic else ""))
        print(format_rows(rows))
        if rows[0]["note"]:
            print(f"note: {rows[0]['note']}")
    for stage, st in (usage or {}).items():
        if stage == "submission":
            print(f"wrote {st} (no reference answers: the picked answer per task)")
            continue
        from bon.llm.client import format_usage

        print(format_usage(stage, st))
    if collaboration is not None:
        print(format_collaboration(collaboration))
    print(f"wrote {out_dir / 'summary.json'}")
    return summary


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="config")
def main(cfg: DictConfig) -> None:
    run(cfg, Path(HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()

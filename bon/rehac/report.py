"""`python -m bon.run dataset=rehac`: value intervention policies and cost-aware Best-of-N on ReHAC's data.

Writes into the run directory:
- summary.json: options, data facts, every policy / reference / selector row, the best fixed policy per
  lambda, the advantage summary;
- policies.csv: one line per (policy, lambda): coverage, matching episodes, ESS, T, C, rate, R with intervals;
- best_of_n.csv: one line per (selector, lambda), plus the best fixed policy (`best_fixed`) per lambda;
- advantage.csv: one line per state seen with both actors next (bon.rehac.advantage);
- reward_vs_lambda.png: mean R against lambda per selector and for the best fixed policy;
- judge_predictions.jsonl: with the `judge` predictor, every episode's judgement (status, reason, labels).
No model is called, and litellm is never imported, unless `dataset.predictors` lists `judge`: then the run's
`judge` config (e.g. judge=deepseek) predicts T through the live pipeline's client and cache.
"""
from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from omegaconf import DictConfig, OmegaConf

from bon.errors import BonError, unknown_choice
from bon.rehac import advantage, best_of_n, episodes, metrics, policies

ENV_REHAC = "BON_REHAC_DIR"
ENV_DATA = "BON_DATA_DIR"
PLOT = "reward_vs_lambda.png"
JUDGE_FILE = "judge_predictions.jsonl"
PREDICTOR_NAMES = (*best_of_n.PREDICTORS, "judge")
NOTE_REFERENCE = ("trained ReHAC policy (lambda = 0.08), its own on-policy test episodes on other questions: "
                  "not comparable question by question")


@dataclass(frozen=True)
class Options:
    root: Path
    episodes: Path
    references: tuple[Path, ...]
    reward: str
    lambdas: tuple[float, ...]
    headline_lambda: float
    k_max: int
    rates: tuple[float, ...]
    behaviour: str
    predictors: tuple[str, ...]
    noise_accuracy: float
    noise_seed: int


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def locate_root(path: str | None) -> Path:
    """The ReHAC release: `dataset.path`, else $BON_REHAC_DIR, else $BON_DATA_DIR/../rehac.

    A setting that points at no directory is an error naming it, never a silent fall-through.
    """
    if path:
        source, value = "dataset.path", Path(path)
    elif os.environ.get(ENV_REHAC):
        source, value = ENV_REHAC, Path(os.environ[ENV_REHAC])
    elif os.environ.get(ENV_DATA):
        source, value = f"{ENV_DATA}/../rehac", Path(os.environ[ENV_DATA]) / ".." / "rehac"
    else:
        raise BonError(f"ReHAC data not found: set dataset.path=DIR or {ENV_REHAC}=DIR to the ReHAC release "
                       f"(github.com/XueyangFeng/ReHAC), or {ENV_DATA} to a directory beside it")
    root = value.expanduser().resolve()
    if not root.is_dir():
        raise BonError(f"ReHAC data not found: {source} is {root}, which is not a directory")
    return root


def _file(root: Path, value: Any, name: str) -> Path:
    if not isinstance(value, str) or not value:
        raise BonError(f"dataset.{name} must be a file path, got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise BonError(f"dataset.{name}: no such file {path}")
    return path


def options(dataset: Mapping[str, Any], seed: int) -> Options:
    """Checked options from the `dataset` config group; every problem names its option."""
    root = locate_root(dataset.get("path"))
    refs = dataset.get("reference") or []
    if not isinstance(refs, list):
        raise BonError(f"dataset.reference must be a list of file paths, got {refs!r}")
    reward = dataset.get("reward", "em")
    if reward not in episodes.REWARDS:
        raise unknown_choice("reward (dataset.reward)", reward, episodes.REWARDS)
    lambdas = dataset.get("lambdas")
    if not isinstance(lambdas, list) or not lambdas or not all(_is_number(x) and x >= 0 for x in lambdas):
        raise BonError(f"dataset.lambdas must be a non-empty list of non-negative numbers, got {lambdas!r}")
    headline = dataset.get("headline_lambda", 0.08)
    if not _is_number(headline) or headline < 0:
        raise BonError(f"dataset.headline_lambda must be a non-negative number, got {headline!r}")
    grid = sorted({float(x) for x in lambdas} | {float(headline)})
    k_max = dataset.get("k_max", 5)
    if isinstance(k_max, bool) or not isinstance(k_max, int) or k_max < 0:
        raise BonError(f"dataset.k_max must be a non-negative integer, got {k_max!r}")
    rates = dataset.get("rates") or []
    if not isinstance(rates, list) or not all(_is_number(p) and 0 <= p <= 1 for p in rates):
        raise BonError(f"dataset.rates must be a list of probabilities in [0, 1], got {rates!r}")
    behaviour = dataset.get("behaviour", "auto")
    if behaviour not in metrics.BEHAVIOURS:
        raise unknown_choice("behaviour (dataset.behaviour)", behaviour, metrics.BEHAVIOURS)
    predictors = dataset.get("predictors") or []
    if not isinstance(predictors, list):
        raise BonError(f"dataset.predictors must be a list, got {predictors!r}")
    for name in predictors:
        if name not in PREDICTOR_NAMES:
            raise unknown_choice("predictor (dataset.predictors)", name, PREDICTOR_NAMES)
    accuracy = dataset.get("noise_accuracy", 0.8)
    if not _is_number(accuracy) or not 0 <= accuracy <= 1:
        raise BonError(f"dataset.noise_accuracy must be a number in [0, 1], got {accuracy!r}")
    noise_seed = dataset.get("noise_seed")
    noise_seed = seed if noise_seed is None else noise_seed
    if isinstance(noise_seed, bool) or not isinstance(noise_seed, int):
        raise BonError(f"dataset.noise_seed must be an integer, got {noise_seed!r}")
    return Options(root, _file(root, dataset.get("episodes"), "episodes"),
                   tuple(_file(root, r, "reference") for r in refs), reward, tuple(grid), float(headline),
                   k_max, tuple(float(p) for p in dict.fromkeys(rates)), behaviour, tuple(dict.fromkeys(predictors)),
                   float(accuracy), noise_seed)


def _reference_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).parts if path.is_relative_to(root) else (path.stem,)
    return f"rehac:{parts[0] if len(parts) > 1 else path.stem}"


# --------------------------------------------------------------------------- outputs


def best_fixed(rows: Sequence[Mapping[str, Any]], lambdas: Sequence[float]) -> list[dict[str, Any]]:
    """Per lambda, the fixed policy with the highest mean R among those that cover every question."""
    full = [r for r in rows if r["kind"] == "fixed" and r["coverage"] == 1.0]
    out = []
    for lam in lambdas:
        if not full:
            out.append({"lambda": lam, "policy": None, "r": None, "ci_low": None, "ci_high": None})
            continue
        best = max(full, key=lambda r: metrics.r_at(r, lam)["r"])
        entry = metrics.r_at(best, lam)
        out.append({"lambda": lam, "policy": best["policy"], "r": entry["r"], "ci_low": entry["ci_low"],
                    "ci_high": entry["ci_high"]})
    return out


POLICY_COLUMNS = ("policy", "kind", "lambda", "n_questions", "coverage", "n_matching", "ess", "mass", "t",
                  "t_ci_low", "t_ci_high", "c", "c_ci_low", "c_ci_high", "intervention_rate", "r", "ci_low",
                  "ci_high")
BON_COLUMNS = ("selector", "policy", "lambda", "n_questions", "t", "c", "r", "ci_low", "ci_high", "r_first",
               "mean_tied", "mean_candidates", "candidate_human_steps", "no_prediction", "questions_skipped")


def _cell(x: Any) -> Any:
    return "" if x is None else (f"{x:.6g}" if isinstance(x, float) else x)


def write_policies_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(POLICY_COLUMNS)
        for row in rows:
            for entry in row["by_lambda"]:
                merged = {**row, **entry}
                writer.writerow([_cell(merged.get(k)) for k in POLICY_COLUMNS])
    return path


def write_best_of_n_csv(rows: Sequence[Mapping[str, Any]], envelope: Sequence[Mapping[str, Any]],
                        path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(BON_COLUMNS)
        for row in rows:
            writer.writerow([_cell(row.get(k)) for k in BON_COLUMNS])
        for row in envelope:
            writer.writerow([_cell({**row, "selector": "best_fixed"}.get(k)) for k in BON_COLUMNS])
    return path


def plot(bon_rows: Sequence[Mapping[str, Any]], envelope: Sequence[Mapping[str, Any]],
         reference: Mapping[str, Any] | None, path: Path, title: str, level: str,
         labels: Mapping[str, str] | None = None) -> Path:
    """Mean R against lambda: one line (and interval band) per selector, the best fixed policy in black."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.5, 5.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    names = list(dict.fromkeys(r["selector"] for r in bon_rows))
    colours = {n: c for n, c in zip(names, ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown",
                                             "tab:pink", "tab:olive", "tab:cyan"))}
    for name in names:
        mine = [r for r in bon_rows if r["selector"] == name]
        xs = [r["lambda"] for r in mine]
        style = ":" if name == "random_pick" else ("--" if name == "oracle" else "-")
        label = {"oracle": "Best-of-N, oracle T (upper bound)", "random_pick": "one episode at random",
                 **(labels or {})}.get(name, f"Best-of-N, {name}")
        ax.plot(xs, [r["r"] for r in mine], style, marker="o", markersize=4, color=colours.get(name, "0.5"),
                label=label, zorder=3)
        if all(r["ci_low"] is not None for r in mine):
            ax.fill_between(xs, [r["ci_low"] for r in mine], [r["ci_high"] for r in mine],
                            color=colours.get(name, "0.5"), alpha=0.1, linewidth=0)
    pts = [e for e in envelope if e["r"] is not None]
    if pts:
        ax.plot([e["lambda"] for e in pts], [e["r"] for e in pts], "-", color="black", linewidth=2.2,
                marker="s", markersize=5, label="best fixed policy at each λ", zorder=4)
        for e in pts:
            ax.annotate(e["policy"], (e["lambda"], e["r"]), textcoords="offset points", xytext=(4, -11),
                        fontsize=7, color="0.2")
    if reference is not None:
        xs = [e["lambda"] for e in reference["by_lambda"]]
        ax.plot(xs, [e["r"] for e in reference["by_lambda"]], "-.", color="0.55", marker="x", markersize=5,
                label=f"{reference['policy']}: trained ReHAC policy (other questions)", zorder=2)
    ax.set_xlabel("λ (cost of one human step)")
    ax.set_ylabel(f"mean R = T − λ·C per question ({level} CI bands)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=130)
    return path


def _f(x: float | None, digits: int = 3, signed: bool = False) -> str:
    if x is None or x != x:
        return "-"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def format_policies(rows: Sequence[Mapping[str, Any]], lam: float) -> str:
    """The printed table: one line per policy at `lam`; T and R in task-reward units, C in human steps."""
    width = max(len("policy"), *(len(r["policy"]) for r in rows))
    head = (f"{'policy':<{width}}  {'cover%':>6}  {'match':>5}  {'ESS':>6}  {'T':>5}  {'C':>5}  {'human%':>6}"
            f"  {'R':>6}  {'95% CI':>15}")
    lines = [head, "-" * len(head)]
    for r in rows:
        e = metrics.r_at(r, lam)
        ci = f"[{_f(e['ci_low'])}, {_f(e['ci_high'])}]"
        rate = "-" if r["intervention_rate"] is None else f"{100 * r['intervention_rate']:.1f}"
        lines.append(f"{r['policy']:<{width}}  {100 * r['coverage']:>6.1f}  {r['n_matching']:>5}  {r['ess']:>6.1f}"
                     f"  {_f(r['t']):>5}  {_f(r['c'], 2):>5}  {rate:>6}  {_f(e['r']):>6}  {ci:>15}")
    return "\n".join(lines)


def format_selectors(rows: Sequence[Mapping[str, Any]], lam: float) -> str:
    mine = [r for r in rows if abs(r["lambda"] - lam) < 1e-12]
    width = max(len("selector"), *(len(r["selector"]) for r in mine))
    head = f"{'selector':<{width}}  {'T':>5}  {'C':>5}  {'R':>6}  {'95% CI':>15}  {'R first':>7}  {'ties':>5}"
    lines = [head, "-" * len(head)]
    for r in mine:
        ci = f"[{_f(r['ci_low'])}, {_f(r['ci_high'])}]"
        lines.append(f"{r['selector']:<{width}}  {_f(r['t']):>5}  {_f(r['c'], 2):>5}  {_f(r['r']):>6}  {ci:>15}"
                     f"  {_f(r['r_first']):>7}  {r['mean_tied']:>5.2f}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- the run


def run_offline(cfg: DictConfig, out_dir: Path) -> dict[str, Any]:
    """Everything above, for one Hydra config; returns the summary it writes."""
    seed, confidence, resamples = int(cfg.seed), float(cfg.confidence), int(cfg.bootstrap_resamples)
    opts = options(OmegaConf.to_container(cfg.dataset, resolve=True), seed)
    judge_cfg = OmegaConf.to_container(cfg.judge, resolve=True)
    if "judge" in opts.predictors:  # before any work: a live judge with its key
        from bon.rehac.judge_predictor import check_config

        check_config(judge_cfg)
    lam = opts.headline_lambda
    boot = dict(confidence=confidence, n_resamples=resamples, seed=seed)

    logged = episodes.load_episodes(opts.episodes)
    questions = episodes.group_questions(logged)
    complete = sum(episodes.is_complete_tree(q.episodes) for q in questions)
    behaviour = metrics.resolve_behaviour(opts.behaviour, questions)
    share = policies.human_step_share(logged)
    rate = share if behaviour == "rate" else None
    if behaviour == "rate" and not 0 < share < 1:
        raise BonError(f"{opts.episodes}: the human took {100 * share:.0f}% of the steps, so no behaviour rate "
                       f"strictly between 0 and 1 exists for importance weighting")

    policy_rows = [metrics.evaluate_policy(questions, p, opts.reward, opts.lambdas, behaviour, rate, **boot)
                   for p in policies.fixed_policies(opts.k_max, opts.rates)]
    reference_rows = []
    for path in opts.references:
        ref = episodes.load_episodes(path)
        row = metrics.evaluate_logged(_reference_name(path, opts.root), episodes.group_questions(ref),
                                      opts.reward, opts.lambdas, **boot)
        row.update(source=str(path), note=NOTE_REFERENCE)
        reference_rows.append(row)
    envelope = best_fixed(policy_rows, opts.lambdas)

    out_dir.mkdir(parents=True, exist_ok=True)
    judge_usage = None
    predicted = {}
    for name in opts.predictors:
        if name == "judge":
            from bon.rehac import judge_predictor

            by_key, judge_usage = judge_predictor.judge_episodes(questions, judge_cfg,
                                                                 OmegaConf.to_container(cfg.cache, resolve=True),
                                                                 out_dir / JUDGE_FILE)
            predictor = lambda ep, by_key=by_key: by_key[ep.key]  # noqa: E731
        else:
            predictor = best_of_n.make_predictor(name, questions, opts.reward,
                                                 {"accuracy": opts.noise_accuracy, "seed": opts.noise_seed})
        predicted[name] = best_of_n.predictions(name, predictor, questions)
    bon_rows = [row for name, values in predicted.items()
                for row in best_of_n.evaluate_selector(name, questions, values, opts.reward, opts.lambdas, **boot)]
    bon_rows += best_of_n.evaluate_random_pick(questions, opts.reward, opts.lambdas, **boot)

    states, n_states = advantage.advantage_table(questions, opts.reward)

    files = {"policies": write_policies_csv(policy_rows + reference_rows, out_dir / "policies.csv"),
             "best_of_n": write_best_of_n_csv(bon_rows, envelope, out_dir / "best_of_n.csv"),
             "advantage": advantage.write_csv(states, lam, out_dir / "advantage.csv")}
    if judge_usage is not None:
        files["judge_predictions"] = out_dir / JUDGE_FILE
    same_task = next((r for r in reference_rows if r["policy"] == "rehac:" + opts.episodes.stem), None)
    level = f"{100 * confidence:g}%"
    title = (f"ReHAC {opts.episodes.stem}: {len(questions)} questions, T = {opts.reward}, "
             f"Best-of-N over ~{len(logged) / len(questions):.1f} episodes per question")
    files["plot"] = plot(bon_rows, envelope, same_task, out_dir / PLOT, title, level,
                         {"noisy_oracle": f"Best-of-N, noisy_oracle ({100 * opts.noise_accuracy:g}% correct)",
                          "judge": f"Best-of-N, LLM judge {judge_cfg.get('name')} (FINAL_RESULT)"})

    anomalies = sum(bool(ep.anomalies) for ep in logged)
    summary: dict[str, Any] = {
        "kind": "rehac_offline", "dataset": "rehac", "reward": opts.reward, "lambdas": list(opts.lambdas),
        "headline_lambda": lam, "confidence": confidence, "episodes_file": str(opts.episodes),
        "n_questions": len(questions), "n_episodes": len(logged), "n_steps": sum(ep.n_steps for ep in logged),
        "complete_trees": complete, "behaviour": behaviour, "human_step_share": share,
        "episodes_with_anomalies": anomalies,
        "question_text_variants": sum(q.question_variants > 1 for q in questions),
        "policies": policy_rows, "reference": reference_rows, "best_fixed": envelope, "best_of_n": bon_rows,
        "noise_accuracy": opts.noise_accuracy, "noise_seed": opts.noise_seed,
        "advantage": {"lambda": lam, "n_states": n_states, "n_states_both_actors": len(states),
                      "by_step": advantage.summary_by_step(states, lam)},
        "files": {k: p.name for k, p in files.items()},
    }
    if judge_usage is not None:
        summary["usage"] = {"judging": judge_usage}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))

    print(f"rehac: {opts.episodes.relative_to(opts.root) if opts.episodes.is_relative_to(opts.root) else opts.episodes}"
          f" ({len(questions)} questions, {len(logged)} episodes); T = {opts.reward}, C = human steps, "
          f"R = T - {lam:g}*C")
    estimator = ("exact expectation over complete agent/human trees" if behaviour == "tree"
                 else f"self-normalised importance weights, behaviour rate {share:.3f}")
    print(f"estimator: {behaviour} ({estimator}; {complete}/{len(questions)} questions are complete trees); "
          f"human took {100 * share:.1f}% of logged steps")
    print(format_policies(policy_rows + reference_rows, lam))
    if reference_rows:
        print(f"note: rehac:* rows are the {NOTE_REFERENCE}")
    best = next(e for e in envelope if abs(e["lambda"] - lam) < 1e-12)
    if best["policy"] is not None:
        print(f"best fixed policy at λ={lam:g}: {best['policy']} (R {_f(best['r'])})")
    print(f"\nBest-of-N at λ={lam:g}: pick the episode with the highest predicted T - λ·C "
          f"({len(logged) / len(questions):.1f} episodes per question)")
    print(format_selectors(bon_rows, lam))
    for r in bon_rows:
        if abs(r["lambda"] - lam) < 1e-12 and r["no_prediction"]:
            print(f"note: {r['selector']} has no prediction for {r['no_prediction']} episodes (failed judgements, "
                  f"reasons in {JUDGE_FILE}); {r['questions_skipped']} question(s) with none are left out of its row")
    if bon_rows:
        print(f"note: C is the picked episode's cost; running every candidate took "
              f"{bon_rows[0]['candidate_human_steps']:.1f} human steps per question")
    by_step = ", ".join(f"step {s['step']}: {_f(s['mean_advantage'], signed=True)} ({s['n_states']})"
                        for s in summary["advantage"]["by_step"])
    print(f"\nadvantage of human over agent at λ={lam:g}, mean by step (states): {by_step}; "
          f"{len(states)} of {n_states} states saw both actors next")
    if judge_usage is not None:
        from bon.llm.client import format_usage

        print(format_usage("judging", judge_usage))
    if anomalies:
        print(f"note: {anomalies} episodes had repaired oddities (listed per episode by bon.rehac.episodes)")
    print(f"wrote {out_dir / 'summary.json'}, {', '.join(p.name for k, p in files.items())}")
    return summary

"""Best-of-k curves (k = 1..N) per selector with 95% bootstrap bands, on the simulator and on AgentProcessBench.

    python experiments/study_best_of_k.py [--profile gaia_dev] [--tasks 2000] [--n 16] [--calibrate-from GPT-5.2]
                                          [--judge GPT-5.2] [--subset all] [--only sim|replay] [--out DIR]

(a) SYNTHETIC: the simulator (dataset=sim, profile --profile) with N=--n candidates per task and the
    default simulated judge (conf/judge/sim.yaml), or one calibrated from a recorded judge.
(b) AgentProcessBench replay: N=5 recorded trajectories per task, judged by a recorded judge.
A point at k is the exact mean accuracy over all k-subsets of each task's N candidates (tie-aware;
Monte Carlo for vote-based selectors when enumeration is too large), averaged over tasks; the
band is a 95% percentile bootstrap over tasks. Writes best_of_k.png and best_of_k.csv.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import polars as pl

STUDY = "best_of_k"
SELECTORS = "final,pos_count,pos_ratio,two_stage,clean_prefix,majority,random,pass_at_n"


def curves(table: pl.DataFrame, selectors: Sequence[str], source: str, resamples: int, seed: int,
           meta: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """CSV rows (one per selector and k) and notes about selectors that were left out."""
    from bon.candidates import tasks_with_answers
    from bon.metrics import bootstrap_bands
    from bon.selectors import SELECTORS as BUILTIN
    from bon.selectors import to_batch
    from bon.selectors.best_of_k import curve

    batch = to_batch(table)
    answered = None
    rows, notes = [], []
    for name in selectors:
        selector = BUILTIN[name]
        b = batch
        if not selector.score_based:
            answered = tasks_with_answers(table) if answered is None else answered
            if answered.height < table.height:  # mixing task sets in one plot would mislead: leave it out
                have = f"only {answered['task_id'].n_unique()}" if answered.height else "none"
                notes.append(f"{source}: {name} left out: {have} of the {batch.n_tasks} tasks have final answers "
                             f"(AgentProcessBench has them for hotpotqa only; try --subset hotpotqa)")
                continue
        cv = curve(selector, b, seed=seed)
        low, high = bootstrap_bands(cv.per_task, resamples=resamples, seed=seed)
        for i, k in enumerate(cv.ks):
            rows.append({"source": source, **meta, "selector": name, "k": int(k),
                         "n_tasks": int(np.sum(~np.isnan(cv.per_task[:, i]))),
                         "accuracy": 100 * float(cv.mean[i]), "ci_low": 100 * float(low[i]),
                         "ci_high": 100 * float(high[i]), "mc_std_error": 100 * float(cv.std_error[i]),
                         "method": cv.method})
    return rows, notes


def sim_rows(args, root: Path | None) -> tuple[list[dict[str, Any]], list[str]]:
    from bon.datasets.sim import candidate_table, judge_model

    calibrated = {"calibrate_from": args.calibrate_from, "root": str(root)} if args.calibrate_from else {}
    dataset, generator, judge = c.sim_configs(args.profile, args.n, args.tasks, **calibrated)
    table = candidate_table(dataset, generator, judge, seed=args.seed)
    name = judge_model(judge, args.profile).name
    judge_label = f"{name} (calibrated from {args.calibrate_from})" if args.calibrate_from else \
        f"{name} (conf/judge/sim.yaml defaults)"
    meta = {"dataset": "sim", "subset": args.profile, "judge": judge_label, "n_candidates": args.n}
    return curves(table, c.name_list(args.selectors), "sim", args.resamples, args.seed, meta)


def replay_rows(args, root: Path | None) -> tuple[list[dict[str, Any]], list[str]]:
    from bon.datasets import agentprocessbench as apb

    assert root is not None
    judge = apb.resolve_judges(root, args.judge)[0] if args.judge != c.HUMAN else c.HUMAN
    table = c.replay_table(args.subset, root, [], human=True) if judge == c.HUMAN else \
        c.replay_table(args.subset, root, [judge])
    n = int(table.group_by("task_id").len()["len"].max())
    meta = {"dataset": "agentprocessbench", "subset": args.subset, "judge": judge, "n_candidates": n}
    return curves(table, c.name_list(args.selectors), "replay", args.resamples, args.seed, meta)


def _panel(ax, rows: list[dict[str, Any]], title: str) -> None:
    if not rows:
        ax.axis("off")
        return
    ks = sorted({r["k"] for r in rows})
    for name in dict.fromkeys(r["selector"] for r in rows):
        mine = [r for r in rows if r["selector"] == name]
        style = c.selector_style(name)
        ax.plot([r["k"] for r in mine], [r["accuracy"] for r in mine], marker="o", markersize=3.5, linewidth=1.8,
                label=c.selector_label(name), **style)
        if name != "random":  # a reference line: its band would only cover the others
            ax.fill_between([r["k"] for r in mine], [r["ci_low"] for r in mine], [r["ci_high"] for r in mine],
                            color=style["color"], alpha=0.06 if name == "pass_at_n" else 0.12, linewidth=0)
    ax.set_xticks(ks if len(ks) <= 16 else ks[::2])
    ax.set_xlim(ks[0] - 0.3, ks[-1] + 0.3)
    ax.set_xlabel(f"k: candidates the selector chooses from (random k-subsets of N={ks[-1]})")
    ax.set_ylabel("selection accuracy (% of tasks solved)")
    ax.set_title(title, fontsize=10.5)
    ax.grid(alpha=0.3)


def plot(rows: list[dict[str, Any]], path) -> None:
    sources = [s for s in ("sim", "replay") if any(r["source"] == s for r in rows)]
    fig = c.figure(max(9.0, 6.6 * len(sources)), 6.4)
    axes = fig.subplots(1, len(sources), squeeze=False)[0]
    for ax, source in zip(axes, sources):
        mine = [r for r in rows if r["source"] == source]
        m = mine[0]
        n_tasks = max(r["n_tasks"] for r in mine)
        if source == "sim":
            title = (f"{c.SYNTHETIC} (simulator): profile {m['subset']}, {n_tasks} tasks, N={m['n_candidates']}\n"
                     f"judge {m['judge']}")
        else:
            title = (f"AgentProcessBench replay: subset {m['subset']}, {n_tasks} tasks, N={m['n_candidates']}\n"
                     f"recorded judge {m['judge']}")
        _panel(ax, mine, title)
    handles: dict = {}
    for ax in axes:  # one legend for both panels: a selector has the same colour everywhere
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(4, len(handles)),
               fontsize=9, title="selector (shaded: 95% interval; random pick has none drawn)", title_fontsize=9,
               frameon=False)
    synthetic = f"{c.SYNTHETIC} simulator (left) vs real replay (right)" if len(sources) == 2 else \
        (f"{c.SYNTHETIC} simulator" if sources == ["sim"] else "AgentProcessBench replay")
    fig.suptitle(f"Best-of-k: selection accuracy as the number of candidates grows — {synthetic}\n"
                 "lines: mean accuracy over all k-subsets of each task's N candidates (tie-aware); "
                 "bands: 95% bootstrap interval over tasks\n"
                 "(all selectors see the same tasks, so overlapping bands are not a test: "
                 "compare with bon.metrics.paired)",
                 fontsize=11.5)
    c.save(fig, path)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = c.parser(__doc__)
    c.add_common(p, STUDY)
    p.add_argument("--profile", default="gaia_dev", help="simulator profile: hotpotqa | gaia_dev | bfcl | tau2")
    p.add_argument("--tasks", type=int, default=2000, help="simulated tasks")
    p.add_argument("--n", type=int, default=16, help="simulated candidates per task (N)")
    p.add_argument("--calibrate-from", default=None,
                   help="recorded judge to calibrate the simulated judge from (default: conf/judge/sim.yaml)")
    p.add_argument("--judge", default="GPT-5.2", help="recorded judge for the replay (or 'human')")
    p.add_argument("--subset", default="all", help="replay subset: hotpotqa | gaia_dev | bfcl | tau2 | all")
    p.add_argument("--selectors", default=SELECTORS, help="comma-separated built-in selectors")
    p.add_argument("--only", choices=("sim", "replay"), default=None, help="run one half only")
    args = p.parse_args(argv)
    from bon.datasets import locate_root

    needs_data = args.root or args.calibrate_from or args.only != "sim"
    root = locate_root(args.root, option="--root") if needs_data else None
    out = c.out_dir(args.out)
    rows, notes = [], []
    for source, fn in (("sim", sim_rows), ("replay", replay_rows)):
        if args.only in (None, source):
            r, n = fn(args, root)
            rows += r
            notes += n
    c.write_csv(rows, out / f"{STUDY}.csv")
    plot(rows, out / f"{STUDY}.png")
    for source in dict.fromkeys(r["source"] for r in rows):
        mine = [r for r in rows if r["source"] == source]
        n = mine[0]["n_candidates"]
        mid = max(1, n // 2) if n > 2 else 1
        tag = f"{c.SYNTHETIC} sim/{mine[0]['subset']}" if source == "sim" else f"replay/{mine[0]['subset']}"
        title = f"Best-of-k accuracy (%), {tag}, judge {mine[0]['judge']}, N={n}, {mine[0]['n_tasks']} tasks"
        table = []
        for name in dict.fromkeys(r["selector"] for r in mine):
            by_k = {r["k"]: r for r in mine if r["selector"] == name}
            last = by_k[n]
            table.append([name, by_k[1]["accuracy"], by_k[mid]["accuracy"], last["accuracy"],
                          f"[{last['ci_low']:.1f}, {last['ci_high']:.1f}]", last["accuracy"] - by_k[1]["accuracy"]])
        c.print_table(title, ["selector", "k=1", f"k={mid}", f"k={n}", "95% CI at N", "gain 1→N"], table)
    for note in notes:
        print(f"note: {note}")
    print(f"wrote {out / (STUDY + '.png')} and {out / (STUDY + '.csv')}")
    return rows


if __name__ == "__main__":
    from bon.errors import exit_on_user_error

    exit_on_user_error(main)()

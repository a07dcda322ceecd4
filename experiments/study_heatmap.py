"""Selector x judge heatmap of accuracy gain over a random pick, on AgentProcessBench replay (every recorded
judge + human labels).

    python experiments/study_heatmap.py [--subset all] [--selectors final,pos_count,...] [--out DIR]

A cell is (selector accuracy - random-pick accuracy) in percentage points on the same tasks, with
both accuracies tie-aware (mean success over the tied top set; random = mean success of all N=5
candidates). Vote-based selectors (majority, weighted_majority) need final answers, which the
release has for hotpotqa only: with --subset all they are scored on the hotpotqa tasks (row marked †),
and on a subset without answers their cells stay blank. Bold cells: the 95% paired bootstrap
interval of the gain (over tasks) excludes 0. Columns: the human labels as a judge, then the
recorded judges by StepAcc, best first. Writes heatmap.png and heatmap.csv.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as c
import numpy as np
import polars as pl

STUDY = "heatmap"
SELECTORS = "final,pos_count,pos_ratio,two_stage,clean_prefix,majority,weighted_majority,pass_at_n"


def cells(subset: str, selectors: Sequence[str], resamples: int, seed: int, root: Path) -> list[dict[str, Any]]:
    from bon.candidates import tasks_with_answers
    from bon.metrics import bootstrap_bands
    from bon.selectors import SELECTORS as BUILTIN
    from bon.selectors import select, to_batch

    table = c.replay_table(subset, root, human=True)
    step_acc = c.step_accuracy(subset, root) | {c.HUMAN: 100.0}
    judges = [c.HUMAN] + sorted((j for j in table["judge"].unique().to_list() if j != c.HUMAN),
                                key=lambda j: -step_acc[j])
    batch = to_batch(table)
    answered = tasks_with_answers(table)
    answered_batch = to_batch(answered) if answered.height else None
    rows = []
    for name in selectors:
        selector = BUILTIN[name]
        if selector.score_based:
            picks, note = select(selector, batch), ""
        elif answered_batch is None:
            picks, note = None, "blank: no task in this subset has final answers"
        else:
            picks = select(selector, answered_batch)
            kept = sorted(answered["subset"].unique().to_list())
            note = "" if answered.height == table.height else f"only tasks with final answers ({', '.join(kept)})"
        for judge in judges:
            base = {"selector": name, "judge": judge, "judge_step_acc": step_acc[judge], "subset": subset,
                    "note": note}
            if picks is None:
                rows.append({**base, "n_tasks": 0, "accuracy": None, "random": None, "gain_pp": None,
                             "ci_low": None, "ci_high": None})
                continue
            mine = picks.filter(pl.col("judge") == judge)
            gain = 100 * (mine["expected"] - mine["random"]).to_numpy()
            low, high = bootstrap_bands(gain, resamples=resamples, seed=seed)
            rows.append({**base, "n_tasks": mine.height, "accuracy": 100 * float(mine["expected"].mean()),
                         "random": 100 * float(mine["random"].mean()), "gain_pp": float(gain.mean()),
                         "ci_low": float(low), "ci_high": float(high)})
    return rows


def colour_scale(m: np.ndarray, selectors: list[str], judges: list[str]):
    """(norm, colormap, fitted): the scale spans the recorded judges' non-oracle cells, so their differences use
    the whole scale. Zero (no gain) is white and one point of gain is the same step of colour on either side:
    the red-white-blue map is cut to the range the cells use (all positive: white to blue). `fitted` is True
    when cells outside (the human labels, pass@N) exceed the scale and saturate."""
    from matplotlib import colormaps
    from matplotlib.colors import ListedColormap, Normalize

    rows = [i for i, s in enumerate(selectors) if s != "pass_at_n"] or list(range(len(selectors)))
    cols = [k for k, j in enumerate(judges) if j != c.HUMAN] or list(range(len(judges)))
    core = m[np.ix_(rows, cols)]
    core = core[np.isfinite(core)]
    low = min(float(core.min()) if core.size else 0.0, 0.0)
    high = max(float(core.max()) if core.size else 1.0, 1.0)
    fitted = bool(np.nanmax(m) > high + 1e-9) if np.isfinite(m).any() else False
    span = max(-low, high)
    full = colormaps["RdBu"]
    cmap = ListedColormap(full(np.linspace(0.5 + 0.5 * low / span, 0.5 + 0.5 * high / span, 256)))
    return Normalize(low, high), cmap.with_extremes(bad="0.88"), fitted


def plot(rows: list[dict[str, Any]], path) -> None:

    selectors = list(dict.fromkeys(r["selector"] for r in rows))
    judges = list(dict.fromkeys(r["judge"] for r in rows))
    by = {(r["selector"], r["judge"]): r for r in rows}
    m = np.array([[by[(s, j)]["gain_pp"] if by[(s, j)]["gain_pp"] is not None else np.nan for j in judges]
                  for s in selectors])
    norm, cmap, fitted = colour_scale(m, selectors, judges)
    fig = c.figure(1.0 + 0.95 * len(judges) + 2.6, 1.9 + 0.62 * len(selectors) + 1.6)
    ax = fig.subplots()
    image = ax.imshow(np.ma.masked_invalid(m), cmap=cmap, norm=norm, aspect="auto")
    for (i, k), v in np.ndenumerate(m):
        r = by[(selectors[i], judges[k])]
        if not np.isfinite(v):
            ax.text(k, i, "n/a", ha="center", va="center", fontsize=8, color="0.4")
            continue
        significant = r["ci_low"] > 0 or r["ci_high"] < 0
        red, green, blue, _ = cmap(norm(v))
        dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
        ax.text(k, i, f"{v:+.1f}", ha="center", va="center", fontsize=8.5,
                color="white" if dark else "black", fontweight="bold" if significant else None)
    if c.HUMAN in judges:  # the human labels are an upper bound, not a competitor
        ax.axvline(judges.index(c.HUMAN) + 0.5, color="black", linewidth=1.5)
    if "pass_at_n" in selectors:  # the oracle row uses ground truth
        ax.axhline(selectors.index("pass_at_n") - 0.5, color="black", linewidth=1.5)
    notes = {r["selector"]: r["note"] for r in rows if r["note"]}
    dagger = [s for s, n in notes.items() if n.startswith("only")]
    ax.set_yticks(range(len(selectors)), [c.selector_label(s) + (" †" if s in dagger else "") for s in selectors],
                  fontsize=9)
    ax.set_xticks(range(len(judges)), [f"{j}\n({by[(selectors[0], j)]['judge_step_acc']:.0f}%)" for j in judges],
                  rotation=45, ha="right", fontsize=8.5, rotation_mode="anchor")
    ax.set_xlabel("judge (StepAcc in parentheses; human = the human labels used as judge)")
    ax.set_ylabel("selector")
    bar = fig.colorbar(image, ax=ax, shrink=0.85, pad=0.01, extend="max" if fitted else "neither")
    bar.set_label("accuracy gain over a random pick (percentage points)" +
                  ("\nscale fitted to the recorded judges' cells; larger values (human, pass@N) saturate" if fitted
                   else ""))
    subset = rows[0]["subset"]
    n_tasks = max(r["n_tasks"] for r in rows)
    random = np.mean([r["random"] for r in rows if r["random"] is not None and not r["note"]] or [np.nan])
    foot = []
    if dagger:
        foot.append(f"† {notes[dagger[0]]}, so its random baseline differs")
    if any(n.startswith("blank") for n in notes.values()):
        foot.append("n/a: vote-based selector, no final answers in this subset")
    foot.append("bold: 95% paired bootstrap interval of the gain excludes 0")
    ax.set_title(f"Selection accuracy gain over a random pick on AgentProcessBench replay (subset {subset}, "
                 f"{n_tasks} tasks, N=5; random pick {random:.1f}%)\n" + "; ".join(foot), fontsize=10.5)
    c.save(fig, path)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = c.parser(__doc__)
    c.add_common(p, STUDY)
    p.add_argument("--subset", default="all", help="hotpotqa | gaia_dev | bfcl | tau2 | all")
    p.add_argument("--selectors", default=SELECTORS, help="comma-separated built-in selectors")
    args = p.parse_args(argv)
    from bon.datasets import locate_root

    root = locate_root(args.root, option="--root")
    out = c.out_dir(args.out)
    rows = cells(args.subset, c.name_list(args.selectors), args.resamples, args.seed, root)
    c.write_csv(rows, out / f"{STUDY}.csv")
    plot(rows, out / f"{STUDY}.png")
    selectors = list(dict.fromkeys(r["selector"] for r in rows))
    judges = list(dict.fromkeys(r["judge"] for r in rows))
    by = {(r["selector"], r["judge"]): r for r in rows}
    c.print_table(f"Gain over random (percentage points), AgentProcessBench/{args.subset}, tie-aware; "
                  "judges by StepAcc",
                  ["judge", "StepAcc", *selectors],
                  [[j, by[(selectors[0], j)]["judge_step_acc"],
                    *[by[(s, j)]["gain_pp"] if by[(s, j)]["gain_pp"] is not None else float("nan") for s in selectors]]
                   for j in judges])
    for s in selectors:
        notes = {r["note"] for r in rows if r["selector"] == s and r["note"]}
        for n in notes:
            print(f"note: {s}: {n}")
    print(f"wrote {out / (STUDY + '.png')} and {out / (STUDY + '.csv')}")
    return rows


if __name__ == "__main__":
    from bon.errors import exit_on_user_error

    exit_on_user_error(main)()

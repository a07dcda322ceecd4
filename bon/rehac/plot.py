"""reward_vs_lambda.png: mean R against lambda, one panel per question set, like compared with like.

Each panel holds only numbers measured on its own questions: the best fixed policy at each lambda, the
Best-of-N selectors, and (on the test questions only) ReHAC's trained policy, as one point at the lambda
it was trained for, with its interval. Best-of-N's C is the picked episode's human steps only; the
footnote gives what running every candidate costs, since that R would be off the scale.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def _selector_label(name: str, labels: Mapping[str, str]) -> str:
    default = {"oracle": "Best-of-N, oracle T (upper bound)", "random_pick": "one logged episode at random"}
    return labels.get(name) or default.get(name) or f"Best-of-N, {name}"


def _panel(ax, panel: Mapping[str, Any], colours: Mapping[str, str], trained: Mapping[str, Any] | None,
           notes: Sequence[str], labels: Mapping[str, str], level: str) -> None:
    rows = panel["best_of_n"]
    for name in dict.fromkeys(r["selector"] for r in rows):
        mine = [r for r in rows if r["selector"] == name and r["r"] is not None]
        xs = [r["lambda"] for r in mine]
        style = ":" if name == "random_pick" else ("--" if name == "oracle" else "-")
        ax.plot(xs, [r["r"] for r in mine], style, marker="o", markersize=4, color=colours[name],
                label=_selector_label(name, labels), zorder=3)
        if mine and all(r["ci_low"] is not None for r in mine):
            ax.fill_between(xs, [r["ci_low"] for r in mine], [r["ci_high"] for r in mine], color=colours[name],
                            alpha=0.07, linewidth=0)
    pts = [e for e in panel["best_fixed"] if e["r"] is not None]
    if pts:
        xs = [e["lambda"] for e in pts]
        ax.errorbar(xs, [e["r"] for e in pts], yerr=[[e["r"] - e["ci_low"] for e in pts],
                                                     [e["ci_high"] - e["r"] for e in pts]],
                    fmt="-s", color="black", linewidth=2.2, markersize=5, capsize=3, elinewidth=0.8,
                    label="best fixed policy at each λ (named)", zorder=4)
        for e in pts:
            ax.annotate(e["policy"], (e["lambda"], e["r"]), textcoords="offset points", xytext=(5, 4),
                        fontsize=7, color="0.15", zorder=6,
                        bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
        ax.set_xlim(min(xs) - 0.01, max(xs) + 0.03)
    if trained is not None:
        entry = trained["by_lambda"][0]
        ax.errorbar([entry["lambda"]], [entry["r"]], yerr=[[entry["r"] - entry["ci_low"]],
                                                            [entry["ci_high"] - entry["r"]]],
                    fmt="*", color="crimson", markersize=13, capsize=5, elinewidth=1.6, zorder=5,
                    label=f"ReHAC's trained policy (trained and run at λ = {entry['lambda']:g})")
        if notes:
            ax.text(0.98, 0.98, "\n".join(notes), transform=ax.transAxes, ha="right", va="top", fontsize=7.5,
                    bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "crimson", "alpha": 0.9},
                    zorder=7)
    ax.set_title(f"{panel['name']} questions ({panel['n_questions']}): ~{panel['mean_candidates']:.1f} episodes "
                 f"per question", fontsize=10)
    ax.set_xlabel("λ (cost of one human step)")
    ax.set_ylabel(f"mean R = T − λ·C per question ({level} CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="lower left")


def plot(panels: Sequence[Mapping[str, Any]], trained: Mapping[str, Any] | None, path: Path, title: str,
         level: str, labels: Mapping[str, str] | None = None, notes: Sequence[str] = ()) -> Path:
    """One panel per question set (`name`, `n_questions`, `mean_candidates`, `candidate_human_steps`,
    `best_of_n` rows, `best_fixed` envelope); `trained` and `notes` (its paired comparisons) go on the `test`
    panel only."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.2 * len(panels), 5.6), layout="constrained")
    FigureCanvasAgg(fig)
    names = list(dict.fromkeys(r["selector"] for p in panels for r in p["best_of_n"]))
    colours = {n: COLOURS[i % len(COLOURS)] for i, n in enumerate(names)}
    first = None
    for i, panel in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1, sharey=first)
        first = first or ax
        test = panel["name"] == "test"
        _panel(ax, panel, colours, trained if test else None, notes if test else (), labels or {}, level)
    cost = "; ".join(f"{p['name']} {p['candidate_human_steps']:.1f}" for p in panels)
    fig.suptitle(title, fontsize=11)
    fig.supxlabel(f"Best-of-N's C counts only the picked episode's human steps; running every candidate costs "
                  f"{cost} human steps per question, i.e. R lower by λ times that.", fontsize=8)
    fig.savefig(path, dpi=130)
    return path

"""Figures for `python -m bon.report`. matplotlib is imported lazily, with the Agg canvas (no pyplot, no display)."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

# Curves get their own palette so a judge's colour on the left is not mistaken for a selector on the right.
JUDGE_MARKERS = "osD^vP*Xh<>p"
MAX_CURVE_PANELS = 6   # best-of-k subplots (judge x subset); beyond that only each subset's first judge
MAX_CURVE_JUDGES = 3


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _colours(cmap_name: str, n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps[cmap_name if n <= colormaps[cmap_name].N else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _baselines(rows: list[dict[str, Any]], field: str) -> list[tuple[float, str | None]]:
    """A subset's baseline per judge, collapsed to one value when (as usual) every judge shares it."""
    pool = [r for r in rows if not r["note"]] or rows
    per_judge = {r["judge"]: r[field] for r in pool if _finite(r[field])}
    values = {round(v, 9) for v in per_judge.values()}
    if len(values) <= 1:
        return [(v, None) for v in list(per_judge.values())[:1]]
    return [(v, j) for j, v in per_judge.items()]


def _accuracy_panel(ax, rows, selectors, judges, judge_colour, subset, level) -> None:
    present = [s for s in selectors if any(r["selector"] == s for r in rows)]
    x_of = {s: i for i, s in enumerate(present)}
    width = 0.8 / max(1, len(judges))
    noted = {r["selector"] for r in rows if r["note"]}
    for i, s in enumerate(present):
        if any(r["oracle"] for r in rows if r["selector"] == s):
            ax.axvspan(i - 0.5, i + 0.5, color="0.92", zorder=0)
    lows, highs = [], []
    for j, judge in enumerate(judges):
        mine = [r for r in rows if r["judge"] == judge and r["selector"] in x_of]
        if not mine:
            continue
        xs = [x_of[r["selector"]] + (j - (len(judges) - 1) / 2) * width for r in mine]
        ys = [100 * r["accuracy"] for r in mine]
        err = [[max(0.0, 100 * (r["accuracy"] - r["ci_low"])) if _finite(r["ci_low"]) else 0.0 for r in mine],
               [max(0.0, 100 * (r["ci_high"] - r["accuracy"])) if _finite(r["ci_high"]) else 0.0 for r in mine]]
        lows += [y - e for y, e in zip(ys, err[0])]
        highs += [y + e for y, e in zip(ys, err[1])]
        ax.errorbar(xs, ys, yerr=err, fmt=JUDGE_MARKERS[j % len(JUDGE_MARKERS)], color=judge_colour[judge],
                    markersize=6, capsize=3, elinewidth=1.2, label=judge, zorder=3)
    for field, style, label in (("random", "--", "random pick (expected)"),
                                ("pass_at_n", ":", "pass@N (some candidate correct)")):
        for value, judge in _baselines(rows, field):
            colour = "0.35" if judge is None else judge_colour[judge]
            ax.axhline(100 * value, color=colour, linestyle=style, linewidth=1.3, zorder=1,
                       label=label if judge is None else f"{label}, {judge}")
            lows.append(100 * value)
            highs.append(100 * value)
    ax.set_xticks(range(len(present)))
    ax.set_xticklabels([s + (" †" if s in noted else "") + ("\n(oracle)" if any(
        r["oracle"] for r in rows if r["selector"] == s) else "") for s in present],
        rotation=30 if len(present) > 5 else 0, ha="right" if len(present) > 5 else "center")
    ax.set_xlim(-0.5, len(present) - 0.5)
    if lows:
        ax.set_ylim(max(0.0, min(lows) - 5), min(100.0, max(highs) + 5))
    n_tasks = sorted({r["n_tasks"] for r in rows})
    ax.set_title(f"{subset}: selection accuracy ({'/'.join(map(str, n_tasks))} tasks)")
    ax.set_xlabel("selector" + (" († evaluated on a subset of tasks, see report.md)" if noted else ""))
    ax.set_ylabel(f"accuracy (%), {level} CI")
    ax.grid(axis="y", alpha=0.3)


def _curve_panel(ax, rows, selectors, selector_colour, judge, subset, level) -> None:
    mine = {r["selector"]: r for r in rows if r["judge"] == judge and r.get("best_of_k")}
    ks_all: set[int] = set()
    for s in selectors:
        r = mine.get(s)
        if r is None:
            continue
        bok = r["best_of_k"]
        ks = bok["k"]
        ks_all.update(ks)
        ys = [100 * v if _finite(v) else math.nan for v in bok["accuracy"]]
        style = "--" if r["oracle"] else "-"
        ax.plot(ks, ys, style, marker="o", markersize=4, color=selector_colour[s], linewidth=1.8,
                label=s + (" (oracle)" if r["oracle"] else ""), zorder=3)
        if bok.get("ci_low") and bok.get("ci_high"):
            lo = [100 * v if _finite(v) else math.nan for v in bok["ci_low"]]
            hi = [100 * v if _finite(v) else math.nan for v in bok["ci_high"]]
            ax.fill_between(ks, lo, hi, color=selector_colour[s], alpha=0.09, linewidth=0, zorder=2)
    if not ks_all:
        ax.text(0.5, 0.5, "no best-of-k data", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.set_xticks(sorted(ks_all))
        ax.set_xlim(min(ks_all) - 0.2, max(ks_all) + 0.2)
    ax.set_title(f"best-of-k: {judge} on {subset}")
    ax.set_xlabel(f"k (candidates the selector sees, of N={max(ks_all) if ks_all else '?'})")
    ax.set_ylabel(f"expected accuracy (%), {level} band")
    ax.grid(alpha=0.3)


def _legend_columns(labels: list[str], width_in: float) -> int:
    """How many legend columns of 9 pt text fit in `width_in` inches (about 14 characters per inch)."""
    entry = (max(len(label) for label in labels) + 6) / 14
    return max(1, min(len(labels), int(width_in / entry)))


def _legend_specs(rows, selectors, judges, judge_colour, selector_colour, left_width, right_width):
    """(handles, labels, title, ncol) for the judge legend and the selector legend (None if no curves)."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=judge_colour[j], marker=JUDGE_MARKERS[i % len(JUDGE_MARKERS)],
                      linestyle="none", markersize=6) for i, j in enumerate(judges)]
    handles += [Line2D([], [], color="0.35", linestyle="--"), Line2D([], [], color="0.35", linestyle=":")]
    labels = list(judges) + ["random pick (expected)", "pass@N (some candidate correct)"]
    left = (handles, labels, "accuracy panels: judge (colour, marker) and baselines",
            _legend_columns(labels, left_width))
    oracle = {r["selector"] for r in rows if r["oracle"]}
    with_curve = [s for s in selectors if any(r["selector"] == s and r.get("best_of_k") for r in rows)]
    if not with_curve:
        return left, None
    handles = [Line2D([], [], color=selector_colour[s], marker="o", markersize=4,
                      linestyle="--" if s in oracle else "-") for s in with_curve]
    labels = [s + (" (oracle)" if s in oracle else "") for s in with_curve]
    return left, (handles, labels, "best-of-k panels: selector", _legend_columns(labels, right_width))


def report_figure(rows: list[dict[str, Any]], path: Path, *, selectors: list[str], judges: list[str],
                  subsets: list[str], level: str = "95%") -> Path:
    """One row per subset: accuracy per selector and judge (left), best-of-k curves per judge (right).

    The legends get their own row under the panels, sized from their number of lines.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curve_judges = judges if len(judges) <= MAX_CURVE_JUDGES and len(judges) * len(subsets) <= MAX_CURVE_PANELS \
        else judges[:1]
    judge_colour = dict(zip(judges, _colours("tab10", len(judges))))
    selector_colour = dict(zip(selectors, _colours("Dark2", len(selectors))))
    left_width = min(16.0, max(6.0, 1.0 + len(selectors) * (0.55 + 0.25 * len(judges))))
    right_width = 4.6 * len(curve_judges)
    legends = _legend_specs(rows, selectors, judges, judge_colour, selector_colour, left_width, right_width)
    legend_height = 0.45 + 0.24 * max(math.ceil(len(spec[1]) / spec[3]) for spec in legends if spec)
    fig = Figure(figsize=(left_width + right_width, 4.4 * len(subsets) + legend_height + 0.9), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(len(subsets) + 1, 1 + len(curve_judges), width_ratios=[left_width] + [4.6] * len(curve_judges),
                            height_ratios=[4.4] * len(subsets) + [legend_height])
    for i, subset in enumerate(subsets):
        mine = [r for r in rows if r["subset"] == subset]
        _accuracy_panel(fig.add_subplot(grid[i, 0]), mine, selectors,
                        [j for j in judges if any(r["judge"] == j for r in mine)], judge_colour, subset, level)
        row_judges = curve_judges if curve_judges == judges else [
            j for j in judges if any(r["judge"] == j and r.get("best_of_k") for r in mine)][:1] or curve_judges
        first = None  # the row's best-of-k panels share y, so judges compare at a glance
        for j, judge in enumerate(row_judges):
            ax = fig.add_subplot(grid[i, 1 + j], sharey=first)
            first = first or ax
            _curve_panel(ax, mine, selectors, selector_colour, judge, subset, level)
    for spec, cell in zip(legends, (grid[-1, 0], grid[-1, 1:])):
        if spec:
            ax = fig.add_subplot(cell)
            ax.axis("off")
            handles, labels, title, ncol = spec
            ax.legend(handles, labels, loc="upper center", ncol=ncol, fontsize=9, title=title, title_fontsize=9,
                      frameon=False)
    datasets = ", ".join(dict.fromkeys(r["dataset"] for r in rows))
    n = ", ".join(f"{len(v)} {w}{'s' * (len(v) != 1)}" for v, w in
                  ((selectors, "selector"), (judges, "judge"), (subsets, "subset")))
    oracle = "; grey columns: oracle selectors (they use ground truth)" if any(r["oracle"] for r in rows) else ""
    fig.suptitle(f"Best-of-N selection on {datasets} ({n})\n"
                 f"error bars and shaded bands: {level} bootstrap intervals over tasks{oracle}", fontsize=12)
    fig.savefig(path, dpi=110)
    return path

"""Figures for `python -m bon.report`. matplotlib is imported lazily, with the Agg canvas (no pyplot, no display).

Every figure shows the tie-aware expectation (a tie counts as the mean success of the tied candidates), so
its numbers do not depend on sample order and agree with each other: the accuracy in report.png is the k = N
point of the best-of-k curves. Every judge is shown. Points of different selectors are dodged (moved apart
a little along the other axis) and drawn with their own marker, so identical values stay visible, and
intervals are error bars rather than bands, so they stay apart.
"""
from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path
from typing import Any

from bon.fmt import is_number

SELECTOR_MARKERS = "osD^vPX*hp<>"
BASELINE = "final"


def _colours(names: list[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {n: cmap(i % cmap.N) for i, n in enumerate(names)}


def _markers(names: list[str]) -> dict[str, str]:
    return {n: SELECTOR_MARKERS[i % len(SELECTOR_MARKERS)] for i, n in enumerate(names)}


def tie_aware(row: dict[str, Any]) -> tuple[float, float | None, float | None]:
    """(expected accuracy, interval low, high): the interval is the best-of-k curve's at k = N, whose value is the
    tie-aware expectation. A run without that curve (a comparing judge's pick: list-wise, pairwise) has the
    pick's own interval (None when the row has none)."""
    value = row["accuracy_expected"]
    bok = row.get("best_of_k") or {}
    ks, acc = bok.get("k") or [], bok.get("accuracy") or []
    if ks and bok.get("ci_low") and bok.get("ci_high"):
        last = ks.index(max(ks))
        if is_number(acc[last]) and abs(acc[last] - value) < 1e-6:
            return value, bok["ci_low"][last], bok["ci_high"][last]
    if not ks:
        return value, row.get("ci_low"), row.get("ci_high")
    return value, None, None


def _dodge(i: int, n: int, width: float) -> float:
    return (i - (n - 1) / 2) * width / max(1, n)


def _judge_axis(ax, judges: list[str], show_labels: bool) -> None:
    ax.set_yticks(range(len(judges)))
    ax.set_yticklabels(judges if show_labels else [], fontsize=8)
    ax.set_ylim(len(judges) - 0.5, -0.5)  # first judge on top
    for y in range(len(judges)):
        if y % 2:
            ax.axhspan(y - 0.5, y + 0.5, color="0.95", zorder=0)
    ax.grid(axis="x", alpha=0.3)


def _accuracy_panel(ax, rows, selectors, judges, colour, marker, subset, level, show_labels) -> None:
    for i, s in enumerate(selectors):
        mine = [r for r in rows if r["selector"] == s and r["judge"] in judges]
        if not mine:
            continue
        ys = [judges.index(r["judge"]) + _dodge(i, len(selectors), 0.8) for r in mine]
        xs, lo, hi = zip(*(tie_aware(r) for r in mine))
        err = [[100 * (x - lw) if is_number(lw) else 0.0 for x, lw in zip(xs, lo)],
               [100 * (h - x) if is_number(h) else 0.0 for x, h in zip(xs, hi)]]
        oracle = any(r["oracle"] for r in mine)
        ax.errorbar([100 * x for x in xs], ys, xerr=err, fmt=marker[s], color=colour[s], markersize=4,
                    elinewidth=0.9, capsize=1.5, mfc="white" if oracle else colour[s], zorder=3)
    for field, style in (("random", "--"), ("pass_at_n", ":")):
        values = {round(r[field], 9) for r in rows if is_number(r[field]) and not r["note"]}
        for value in values:
            ax.axvline(100 * value, color="0.3", linestyle=style, linewidth=1.2, zorder=1)
    _judge_axis(ax, judges, show_labels)
    n_tasks = "/".join(map(str, sorted({r["n_tasks"] for r in rows})))
    ax.set_title(f"{subset} ({n_tasks} tasks): tie-aware accuracy", fontsize=10)
    ax.set_xlabel(f"expected accuracy (%), {level} CI", fontsize=9)


def _difference_panel(ax, rows, selectors, judges, colour, marker, subset, level, show_labels) -> None:
    others = [s for s in selectors if s != BASELINE]
    drawn = False
    for i, s in enumerate(others):
        mine = [r for r in rows if r["selector"] == s and r["judge"] in judges and r.get("vs_final")]
        if not mine:
            continue
        drawn = True
        ys = [judges.index(r["judge"]) + _dodge(i, len(others), 0.8) for r in mine]
        d = [r["vs_final"] for r in mine]
        xs = [100 * v["diff"] for v in d]
        err = [[max(0.0, x - 100 * v["ci_low"]) for x, v in zip(xs, d)],
               [max(0.0, 100 * v["ci_high"] - x) for x, v in zip(xs, d)]]
        ax.errorbar(xs, ys, xerr=err, fmt=marker[s], color=colour[s], markersize=4, elinewidth=0.9, capsize=1.5,
                    mfc="white" if any(r["oracle"] for r in mine) else colour[s], zorder=3)
    ax.axvline(0, color="black", linewidth=1.0, zorder=1)
    _judge_axis(ax, judges, show_labels)
    if not drawn:
        ax.text(0.5, 0.5, f"no {BASELINE!r} run to compare with", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"{subset}: difference from {BASELINE!r}, paired", fontsize=10)
    ax.set_xlabel(f"points (same tasks, same judge), {level} CI", fontsize=9)


def _fewer_tasks(rows: list[dict[str, Any]], selectors: list[str]) -> dict[str, str]:
    """The legend note ' (50 of 200 tasks)' for a selector scored on fewer of a subset's tasks than the
    others (majority over subset=all, where only some tasks have final answers): its points are not over the
    same tasks, which the figure must say. Subsets where a selector has no row (not applicable) are left out
    of its count."""
    most: dict[str, int] = {}
    for r in rows:
        most[r["subset"]] = max(most.get(r["subset"], 0), r["n_tasks"])
    notes = {}
    for sel in selectors:
        mine: dict[str, int] = {}
        for r in rows:
            if r["selector"] == sel:
                mine[r["subset"]] = max(mine.get(r["subset"], 0), r["n_tasks"])
        tasks, total = sum(mine.values()), sum(most[s] for s in mine)
        if tasks < total:
            notes[sel] = f" ({tasks} of {total} tasks)"
    return notes


def _legend(fig, cell, selectors, colour, marker, oracle, with_baselines: bool, width: float,
            rows: list[dict[str, Any]]) -> None:
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour[s], marker=marker[s], linestyle="none", markersize=6,
                      mfc="white" if s in oracle else colour[s]) for s in selectors]
    fewer = _fewer_tasks(rows, selectors)
    labels = [s + (" (oracle)" if s in oracle else "") + fewer.get(s, "") for s in selectors]
    if with_baselines:
        handles += [Line2D([], [], color="0.3", linestyle="--"), Line2D([], [], color="0.3", linestyle=":")]
        labels += ["random pick (expected)", "pass@N (some candidate correct)"]
    ax = fig.add_subplot(cell)
    ax.axis("off")
    entry = max(len(label) for label in labels) / 11 + 0.6  # inches a legend entry takes at 9 pt
    ax.legend(handles, labels, loc="center", ncol=max(1, min(len(labels), int(width / entry))), fontsize=9,
              frameon=False,
              title="selector (hollow: oracle, uses ground truth)", title_fontsize=9)


def report_figure(rows: list[dict[str, Any]], path: Path, *, selectors: list[str], judges: list[str],
                  subsets: list[str], level: str = "95%") -> Path:
    """report.png: see `accuracy_figure`."""
    accuracy_figure(rows, selectors=selectors, judges=judges, subsets=subsets, level=level).savefig(path, dpi=100)
    return path


def accuracy_figure(rows: list[dict[str, Any]], *, selectors: list[str], judges: list[str], subsets: list[str],
                    level: str = "95%"):
    """Per subset (columns): every judge's tie-aware accuracy per selector (top) and each selector's paired
    difference from `final` (bottom, from rows' `vs_final`). Judges are rows of each panel."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colour, marker = _colours(selectors), _markers(selectors)
    oracle = {r["selector"] for r in rows if r["oracle"]}
    label_width = 0.3 + 0.075 * max(len(j) for j in judges)
    height = 1.4 + 0.1 * len(selectors) * len(judges) ** 0.5 + 0.24 * len(judges)
    width = max(10.0, label_width + 4.3 * len(subsets))
    fig = Figure(figsize=(width, 2 * height + 1.6), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(3, len(subsets), height_ratios=[height, height, 0.7])
    for c, subset in enumerate(subsets):
        mine = [r for r in rows if r["subset"] == subset]
        _accuracy_panel(fig.add_subplot(grid[0, c]), mine, selectors, judges, colour, marker, subset, level, c == 0)
        _difference_panel(fig.add_subplot(grid[1, c]), mine, selectors, judges, colour, marker, subset, level,
                          c == 0)
    _legend(fig, grid[2, :], selectors, colour, marker, oracle, True, width, rows)
    datasets = ", ".join(dict.fromkeys(r["dataset"] for r in rows))
    title = (f"Best-of-N selection on {datasets}: {len(selectors)} selectors, {len(judges)} judges, "
             f"{len(subsets)} subset(s). Tie-aware: a tie counts as the mean success of the tied candidates. "
             f"Error bars: {level} bootstrap intervals over tasks (for the difference: of the paired per-task "
             f"difference). Best-of-k curves: report_best_of_k_<subset>.png.")
    fig.suptitle(textwrap.fill(title, width=int(width * 13)), fontsize=10)  # ~13 characters per inch at 10 pt
    return fig


def _curve_panel(ax, rows, selectors, colour, marker, judge, level) -> set[int]:
    mine = {r["selector"]: r for r in rows if r["judge"] == judge and r.get("best_of_k")}
    ks_all: set[int] = set()
    present = [s for s in selectors if s in mine]
    for i, s in enumerate(present):
        bok = mine[s]["best_of_k"]
        ks_all.update(bok["k"])
        xs = [k + _dodge(i, len(present), 0.5) for k in bok["k"]]
        ys = [100 * v if is_number(v) else math.nan for v in bok["accuracy"]]
        err = None
        if bok.get("ci_low") and bok.get("ci_high"):
            err = [[y - 100 * v if is_number(v) else 0.0 for y, v in zip(ys, bok["ci_low"])],
                   [100 * v - y if is_number(v) else 0.0 for y, v in zip(ys, bok["ci_high"])]]
        ax.errorbar(xs, ys, yerr=err, fmt=marker[s], color=colour[s], markersize=3.5, linewidth=1.3,
                    elinewidth=0.7, capsize=1.2, linestyle="--" if mine[s]["oracle"] else "-",
                    mfc="white" if mine[s]["oracle"] else colour[s], zorder=3)
    if not ks_all:
        ax.text(0.5, 0.5, "no best-of-k data", ha="center", va="center", transform=ax.transAxes, fontsize=8)
    else:
        ax.set_xticks(sorted(ks_all))
    ax.set_title(judge, fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)
    return ks_all


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "subset"


def best_of_k_figures(rows: list[dict[str, Any]], out_dir: Path, *, selectors: list[str], judges: list[str],
                      subsets: list[str], level: str = "95%") -> list[Path]:
    """report_best_of_k_<subset>.png: one small panel per judge, the selectors' expected accuracy at each k."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    colour, marker = _colours(selectors), _markers(selectors)
    oracle = {r["selector"] for r in rows if r["oracle"]}
    with_curve = [s for s in selectors if any(r["selector"] == s and r.get("best_of_k") for r in rows)]
    paths = []
    for subset in subsets:
        mine = [r for r in rows if r["subset"] == subset]
        shown = [j for j in judges if any(r["judge"] == j and r.get("best_of_k") for r in mine)]
        if not shown:
            continue
        ncol = min(5, len(shown))
        nrow = math.ceil(len(shown) / ncol)
        width, height = max(9.0, 0.6 + 3.0 * ncol), 2.5 * nrow + 1.8
        fig = Figure(figsize=(width, height))  # fixed margins: constrained layout costs seconds on 20 panels
        FigureCanvasAgg(fig)
        grid = fig.add_gridspec(nrow + 1, ncol, height_ratios=[2.5] * nrow + [0.7], left=0.7 / width,
                                right=1 - 0.15 / width, top=1 - 0.95 / height, bottom=0.05, hspace=0.45, wspace=0.22)
        first = None
        n: int | str = "?"
        for i, judge in enumerate(shown):
            ax = fig.add_subplot(grid[i // ncol, i % ncol], sharey=first)
            first = first or ax
            ks = _curve_panel(ax, mine, with_curve, colour, marker, judge, level)
            n = max(ks) if ks else n
            if i % ncol == 0:
                ax.set_ylabel("expected accuracy (%)", fontsize=8)
            if i // ncol == nrow - 1 or i + ncol >= len(shown):
                ax.set_xlabel("k (candidates seen)", fontsize=8)
        present = [s for s in with_curve if any(r["selector"] == s and r.get("best_of_k") for r in mine)]
        _legend(fig, grid[nrow, :], present, colour, marker, oracle, False, width, mine)
        fig.suptitle(f"Best-of-k on {subset}: expected accuracy when the selector sees k of the N={n} candidates\n"
                     f"per judge, {level} CI; points dodged sideways so equal curves stay visible\n"
                     f"k = 1 is a random pick; k = N is the tie-aware accuracy in report.png", fontsize=10)
        path = out_dir / f"report_best_of_k_{_safe(subset)}.png"
        fig.savefig(path, dpi=100)
        paths.append(path)
    return paths


def _cost_points(row: dict[str, Any]) -> tuple[list[float], list[float], list[float], list[float]] | None:
    """(tokens per task, accuracy, CI low, CI high) in percent: a Best-of-N run's curve over k (k samples cost k
    times one), else the method's one point; None without a cost."""
    compute = row.get("compute") or {}
    tokens = _number((compute.get("per_task") or {}).get("tokens"))
    if tokens != tokens:
        return None
    bok = row.get("best_of_k") or {}
    per_sample = _number((compute.get("per_sample") or {}).get("tokens"))
    if per_sample == per_sample and bok.get("k"):
        xs = [k * per_sample for k in bok["k"]]
        def percent(values: Any) -> list[float]:
            return [100 * _number(v) for v in (values or [None] * len(xs))]
        return xs, percent(bok["accuracy"]), percent(bok.get("ci_low")), percent(bok.get("ci_high"))
    value, low, high = tie_aware(row)
    return [tokens], [100 * value], [100 * _number(low)], [100 * _number(high)]


def _number(x: Any) -> float:
    """x as a float; NaN when it is no number (a missing figure)."""
    return float(x) if is_number(x) else math.nan


def compute_figure(rows: list[dict[str, Any]], path: Path, *, selectors: list[str], level: str = "95%") -> Path:
    """report_compute.png: tie-aware accuracy against tokens per task, one panel per judge (and subset).

    A Best-of-N run is a curve (k = 1..N samples; k samples cost k times one sample's generation and
    judging); a search, a comparing judge or a collaboration run is one point at its measured cost. Each
    selector has the colour and marker it has in report.png (`selectors`: the report's order)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter, LogLocator, NullFormatter

    mine = [r for r in rows if _cost_points(r) is not None]
    panels = list(dict.fromkeys((r["judge"], r["subset"]) for r in mine))
    methods = [s for s in selectors if any(r["selector"] == s for r in mine)]
    colour, marker = _colours(selectors), _markers(selectors)
    ncol = min(3, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    width = max(7.0, 4.6 * ncol)
    fig = Figure(figsize=(width, 3.6 * nrow + 1.6))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(nrow + 1, ncol, height_ratios=[3.6] * nrow + [1.0], hspace=0.5, wspace=0.25,
                            top=1 - 0.9 / (3.6 * nrow + 1.6), bottom=0.04)
    for i, (judge, subset) in enumerate(panels):
        ax = fig.add_subplot(grid[i // ncol, i % ncol])
        for r in (r for r in mine if (r["judge"], r["subset"]) == (judge, subset)):
            points = _cost_points(r)
            assert points is not None
            xs, ys, lows, highs = points
            if len(xs) == 1:  # a method's single point, nudged sideways (in log x) so equal points stay visible
                xs = [xs[0] * 10 ** _dodge(methods.index(r["selector"]), len(methods), 0.04)]
            err = [[y - lo if lo == lo else 0.0 for y, lo in zip(ys, lows)],
                   [hi - y if hi == hi else 0.0 for y, hi in zip(ys, highs)]]
            m = r["selector"]
            ax.errorbar(xs, ys, yerr=err, fmt=marker[m], color=colour[m], markersize=5 if len(xs) == 1 else 3.5,
                        linewidth=1.3, elinewidth=0.7, capsize=2, linestyle="-" if len(xs) > 1 else "none",
                        label=m, zorder=3)
        ax.set_xscale("log")
        # 20k, 50k, 100k, ...: log-scale defaults crowd minor labels such as "3x10^5 4x10^5" into each other
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_title(f"{judge} / {subset}", fontsize=9)
        ax.set_xlabel("tokens per task (log scale)", fontsize=8)
        ax.set_ylabel("tie-aware accuracy (%)", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3, which="both")
    handles = [fig.axes[0].errorbar([], [], fmt=marker[m], color=colour[m], linestyle="-") for m in methods]
    legend_ax = fig.add_subplot(grid[nrow, :])
    legend_ax.axis("off")
    legend_ax.legend(handles, [textwrap.shorten(m, 60) for m in methods], loc="center", ncol=min(3, len(methods)),
                     fontsize=8, frameon=False)
    title = (f"Accuracy against compute ({level} CI over tasks): lines are Best-of-N with k = 1..N samples (k samples "
             f"cost k times one), points are methods measured only at their own cost (beam search, list-wise or "
             f"pairwise selection; nudged sideways so equal points stay visible)")
    fig.suptitle(textwrap.fill(title, width=int(width * 14)), fontsize=9)
    fig.savefig(path, dpi=100)
    return path

"""Recorded judges on AgentProcessBench: row-normalised step confusion matrices (paper Figure 6) and StepAcc
vs ORM accuracy (Figure 7).

    python experiments/study_confusion.py [--subset all] [--out DIR]

Confusion: rows = human step label (-1, 0, +1), columns = the judge's label (-1, 0, +1, or
missing: no label, or the whole judge call failed), each row sums to 100%; counts pooled over the
subset(s), as `python -m bon.prm_eval` prints them. StepAcc: share of human-labelled steps the judge
labels the same way. ORM accuracy: share of trajectories whose recorded final label equals the
human outcome (+1 for success, -1 otherwise); a missing final label or failed call counts as wrong.
Writes confusion.png, stepacc_vs_orm.png, confusion.csv (long: judge x human x judge label) and
judges.csv (one row per judge).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _common as c
import numpy as np

STUDY = "confusion"
COLUMNS = ("-1", "0", "+1", "missing")
ROWS = ("-1", "0", "+1")


def measure(subset: str, root: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(per-judge summary rows, long confusion rows), judges sorted by StepAcc, best first."""
    from bon import datasets
    from bon.datasets import agentprocessbench as apb
    from bon.prm_eval import AVG, score

    dataset, judge_cfg = c.replay_configs(subset, root)
    root, judges = datasets.judge_names(dataset, judge_cfg)
    records = datasets.records(dataset)
    scores = score(dataset, judge_cfg)
    summary, long = [], []
    for judge in judges:
        s = scores[judge][AVG]
        orm_right = missing_final = 0
        for r in records:
            j = apb.judgement_for(root, judge, r)
            final = None if j.failed else j.final_label
            missing_final += final is None
            orm_right += final == (1 if r.success else -1)
        n_missing_steps = int(s.confusion[:, 3].sum())
        summary.append({"judge": judge, "subset": subset, "step_acc": 100 * s.step_acc,
                        "first_err_acc": 100 * s.first_err_acc, "orm_acc": 100 * orm_right / len(records),
                        "n_steps": s.n_steps, "n_trajectories": s.n_trajectories, "n_failed": s.n_failed,
                        "n_missing_final": missing_final, "missing_step_share": 100 * n_missing_steps / s.n_steps})
        norm = s.row_normalized()
        for h, human in enumerate(ROWS):
            for p, pred in enumerate(COLUMNS):
                long.append({"judge": judge, "human": human, "judge_label": pred, "count": int(s.confusion[h, p]),
                             "row_share": 100 * float(norm[h, p])})
    summary.sort(key=lambda r: -r["step_acc"])
    return summary, long


def plot_confusion(summary: list[dict[str, Any]], long: list[dict[str, Any]], path) -> None:
    judges = [r["judge"] for r in summary]
    cols = 5
    n_rows = -(-len(judges) // cols)
    fig = c.figure(3.3 * cols + 1.0, 2.75 * n_rows + 1.2)
    axes = fig.subplots(n_rows, cols, squeeze=False)
    image = None
    for ax, row in zip(axes.ravel(), summary):
        judge = row["judge"]
        cells = {(r["human"], r["judge_label"]): r["row_share"] for r in long if r["judge"] == judge}
        counts = {h: sum(r["count"] for r in long if r["judge"] == judge and r["human"] == h) for h in ROWS}
        m = np.array([[cells[(h, p)] for p in COLUMNS] for h in ROWS])
        image = ax.imshow(m, cmap="Blues", vmin=0, vmax=100, aspect="auto")
        for (i, k), v in np.ndenumerate(m):
            ax.text(k, i, f"{v:.0f}", ha="center", va="center", fontsize=9,
                    color="white" if v > 55 else "black", fontweight="bold" if i == k else None)
        ax.set_xticks(range(len(COLUMNS)), COLUMNS, fontsize=8.5)
        ax.set_yticks(range(len(ROWS)), [f"{h}\nn={counts[h]:,}" for h in ROWS], fontsize=8)
        ax.set_xlabel("judge label", fontsize=8.5, labelpad=1)
        ax.set_ylabel("human label", fontsize=8.5, labelpad=1)
        ax.set_title(f"{judge}\nStepAcc {row['step_acc']:.1f}%", fontsize=9)
    for ax in axes.ravel()[len(summary):]:
        ax.axis("off")
    if image is not None:
        bar = fig.colorbar(image, ax=axes, shrink=0.6, pad=0.01)
        bar.set_label("share of the human-label row (%)")
    n_steps = summary[0]["n_steps"] if summary else 0
    fig.suptitle(f"Step-label confusion of the {len(summary)} recorded judges on AgentProcessBench "
                 f"(subset {summary[0]['subset'] if summary else '?'}, {n_steps:,} human-labelled steps)\n"
                 "row-normalised %: each row is one human label (n = its steps); 'missing' = no label or failed call; "
                 "bold diagonal = agreement; judges ordered by StepAcc", fontsize=11.5)
    c.save(fig, path)


# label offsets around a point, in points: right, left, above, below, then the diagonals; further out if needed
_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1))
_RADII = (1.0, 2.2, 3.6, 5.2, 7.0)
_LEADER = {"arrowstyle": "-", "color": "0.4", "linewidth": 0.7, "shrinkA": 1, "shrinkB": 3}


def place_labels(ax, xs: np.ndarray, ys: np.ndarray, names: Sequence[str], fontsize: float = 8.5) -> list:
    """Name every point without two labels overlapping: each label goes to the first offset around its point
    (nearest first) where it overlaps no placed label and no other point and stays inside the axes; a label
    that had to move away gets a leader line. Returns the annotations."""
    from matplotlib.text import Text

    fig = ax.figure
    fig.canvas.draw()  # settle the layout, so display coordinates are final
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    centres = ax.transData.transform(np.column_stack([xs, ys]))
    r = 4.5 * fig.dpi / 72
    points = [(cx - r, cy - r, cx + r, cy + r) for cx, cy in centres]
    placed: list = []
    annotations = []

    def free(box, own: int) -> bool:
        if box.x0 < frame.x0 or box.x1 > frame.x1 or box.y0 < frame.y0 or box.y1 > frame.y1:
            return False
        if any(box.overlaps(other) for other in placed):
            return False
        return not any(k != own and box.x0 < p[2] and box.x1 > p[0] and box.y0 < p[3] and box.y1 > p[1]
                       for k, p in enumerate(points))

    for i in sorted(range(len(xs)), key=lambda k: -ys[k]):
        chosen = None
        for radius in _RADII:
            for dx, dy in _DIRECTIONS:
                ann = ax.annotate(names[i], (xs[i], ys[i]), xytext=(dx * 7 * radius, dy * 6 * radius),
                                  textcoords="offset points", fontsize=fontsize,
                                  arrowprops=_LEADER if radius > 1 else None,
                                  ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                  va="bottom" if dy > 0 else "top" if dy < 0 else "center")
                ann.update_positions(renderer)
                box = Text.get_window_extent(ann, renderer).padded(1)  # the text alone, not its leader line
                if free(box, i):
                    chosen = (ann, box)
                    break
                ann.remove()
            if chosen:
                break
        if chosen is None:  # nowhere free: beside the point, overlapping (rare; the figure is then too crowded)
            ann = ax.annotate(names[i], (xs[i], ys[i]), xytext=(7, 0), textcoords="offset points",
                              fontsize=fontsize, va="center")
            chosen = (ann, Text.get_window_extent(ann, renderer))
        ann, box = chosen
        placed.append(box)
        annotations.append(ann)
    return annotations


def scatter_figure(summary: list[dict[str, Any]]):
    x = np.array([r["step_acc"] for r in summary])
    y = np.array([r["orm_acc"] for r in summary])
    fig = c.figure(10.5, 7.5)
    ax = fig.subplots()
    ax.scatter(x, y, s=45, color="tab:blue", edgecolor="black", linewidth=0.6, zorder=3)
    if len(x) > 2:
        slope, intercept = np.polyfit(x, y, 1)
        xs = np.linspace(x.min(), x.max(), 2)
        r = np.corrcoef(x, y)[0, 1]
        ax.plot(xs, slope * xs + intercept, color="0.5", linestyle="--", linewidth=1,
                label=f"least-squares line (Pearson r = {r:.2f})")
        ax.legend(loc="lower right", fontsize=9)
    ax.set_xlabel("StepAcc: human-labelled steps the judge labels correctly (%)")
    ax.set_ylabel("ORM accuracy: trajectories whose final label matches\nthe human success label (%; missing = wrong)")
    ax.set_xlim(x.min() - 14, x.max() + 14)
    ax.set_ylim(y.min() - 4, y.max() + 4)
    ax.grid(alpha=0.3)
    subset = summary[0]["subset"]
    n = summary[0]["n_trajectories"]
    ax.set_title(f"Process (StepAcc) vs outcome (ORM) accuracy of {len(summary)} recorded judges\n"
                 f"AgentProcessBench, subset {subset} ({n} trajectories)", fontsize=11.5)
    place_labels(ax, x, y, [r["judge"] for r in summary])
    return fig


def plot_scatter(summary: list[dict[str, Any]], path) -> None:
    c.save(scatter_figure(summary), path)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = c.parser(__doc__)
    c.add_common(p, STUDY)
    p.add_argument("--subset", default="all", help="hotpotqa | gaia_dev | bfcl | tau2 | all (pooled)")
    args = p.parse_args(argv)
    from bon.datasets import locate_root

    root = locate_root(args.root, option="--root")
    out = c.out_dir(args.out)
    summary, long = measure(args.subset, root)
    c.write_csv(summary, out / "judges.csv")
    c.write_csv(long, out / "confusion.csv")
    plot_confusion(summary, long, out / "confusion.png")
    plot_scatter(summary, out / "stepacc_vs_orm.png")
    cells = {(r["judge"], r["human"], r["judge_label"]): r["row_share"] for r in long}
    c.print_table(f"Recorded judges on AgentProcessBench/{args.subset} (%), best StepAcc first; "
                  "P(j|h) = share of human-label-h steps the judge labels j",
                  ["judge", "StepAcc", "ORM acc", "P(-1|-1)", "P(+1|-1)", "P(+1|+1)", "missing steps", "failed"],
                  [[r["judge"], r["step_acc"], r["orm_acc"], cells[(r["judge"], "-1", "-1")],
                    cells[(r["judge"], "-1", "+1")], cells[(r["judge"], "+1", "+1")], r["missing_step_share"],
                    r["n_failed"]] for r in summary])
    if len(summary) > 2:
        x = [r["step_acc"] for r in summary]
        y = [r["orm_acc"] for r in summary]
        print(f"Pearson r(StepAcc, ORM accuracy) = {np.corrcoef(x, y)[0, 1]:.2f} over {len(summary)} judges")
    print(f"wrote {out / 'confusion.png'}, {out / 'stepacc_vs_orm.png'}, {out / 'confusion.csv'} "
          f"and {out / 'judges.csv'}")
    return summary


if __name__ == "__main__":
    from bon.errors import exit_on_user_error

    exit_on_user_error(main)()

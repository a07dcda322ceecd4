"""How good must my PRM be before %Pos beats Final? A judge-quality sweep on the simulator, with the real
judges placed on it.

    python experiments/study_judge_quality.py [--profile gaia_dev] [--tasks 4000] [--n 5] [--steps 21]
                                              [--biases 0,0.15,0.3] [--orm-tpr P] [--orm-fpr P] [--no-real] [--out DIR]

SYNTHETIC sweep: one fixed set of simulated tasks and candidates (profile --profile, N=--n, seed
--seed) is judged by simulated PRMs whose step confusion matrix is (1-q)*uniform + q*identity
(q = 0: labels are uniform noise over -1/0/+1; q = 1: every step correct), with an extra pull
towards +1 (positive bias: that share of steps is labelled +1 whatever its truth). The ORM is held
fixed (conf/judge/sim.yaml: GPT-5.2's measured rates, or --orm-tpr/--orm-fpr), so Final is a flat
line and the question is purely about the PRM. All sweep points use the same random numbers
(common random numbers), so differences between points come from the judge, not from noise.
x = the judge's StepAcc measured on the simulated steps (a failed call counts as wrong, as in
AgentProcessBench); y = tie-aware selection accuracy with N candidates.

Every recorded AgentProcessBench judge is placed on the same axes twice: a simulated judge
calibrated from each (its measured confusion and ORM rates on the profile's subset) judging the same
synthetic candidates, at its simulated StepAcc; and the judge's real replay accuracy on that subset
(50 real tasks, N=5), at its real StepAcc. Writes judge_quality.png and judge_quality.csv.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import _common as c
import numpy as np
import polars as pl

STUDY = "judge_quality"
SELECTORS = ("final", "pos_count", "pos_ratio", "two_stage", "random", "pass_at_n")
PANELS = ("final", "pos_ratio", "pos_count", "two_stage")
UNIFORM = np.full((3, 3), 1 / 3)


class Sweep:
    """One fixed synthetic benchmark, judged again and again by different simulated judges."""

    def __init__(self, dataset: dict[str, Any], n: int, n_tasks: int, seed: int, wrong_answers: int) -> None:
        from bon.datasets.sim import profile as load_profile
        from bon.sim import model

        self.profile = load_profile(dataset)
        rng = np.random.default_rng(seed)
        self.trajs = model.generate(self.profile, model.sample_tasks(self.profile, n_tasks, rng), n, rng, wrong_answers)
        self.seed = seed
        valid = self.trajs.labels != model.PAD
        self.valid = valid
        self.true_share = np.bincount(self.trajs.labels[valid], minlength=3) / valid.sum()

    def run(self, judge, selectors: Sequence[str]) -> dict[str, Any]:
        """StepAcc (%) and each selector's tie-aware accuracy (%) under `judge` (a bon.sim.model.JudgeModel)."""
        from bon.selectors import SELECTORS as BUILTIN
        from bon.selectors import select, to_batch
        from bon.sim import model

        rng = np.random.default_rng([self.seed, 1])  # the same draws for every judge: common random numbers
        predicted, final, failed = model.judge(judge, self.trajs, rng)
        correct = (predicted == self.trajs.labels) & self.valid & ~failed[:, None]
        batch = to_batch(model.candidate_table(self.trajs, predicted, final, failed, judge.name, self.profile.name))
        picks = {s: select(BUILTIN[s], batch) for s in selectors}
        return {"step_acc": 100 * correct.sum() / self.valid.sum(),
                "expected_step_acc": 100 * judge.step_accuracy(self.true_share),
                "n_tasks": batch.n_tasks, "n_candidates": self.trajs.n_candidates,
                **{s: 100 * float(p["expected"].mean()) for s, p in picks.items()},
                "_diff": (picks["pos_ratio"]["expected"] - picks["final"]["expected"]).to_numpy()
                if {"pos_ratio", "final"} <= set(picks) else None}


def crossover(xs: np.ndarray, qs: np.ndarray, diff: np.ndarray) -> tuple[float, float]:
    """StepAcc and q where %Pos - Final first turns positive (linear interpolation); NaN if it never does."""
    for i in range(len(diff)):
        if diff[i] > 0:
            if i == 0:
                return float(xs[0]), float(qs[0])
            w = -diff[i - 1] / (diff[i] - diff[i - 1])
            return float(xs[i - 1] + w * (xs[i] - xs[i - 1])), float(qs[i - 1] + w * (qs[i] - qs[i - 1]))
    return float("nan"), float("nan")


def sweep_rows(args, sweep: Sweep, orm: dict[str, float]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    from bon.metrics import bootstrap_bands
    from bon.sim.model import JudgeModel

    rows, crossings = [], []
    qs = np.linspace(0.0, 1.0, args.steps)
    for bias in c.ratio_list(args.biases):
        points = []
        for q in qs:
            judge = JudgeModel(f"sim q={q:.2f} bias={bias:g}", (1 - q) * UNIFORM + q * np.eye(3), bias, **orm)
            r = sweep.run(judge, SELECTORS)
            diff = r.pop("_diff")
            low, high = bootstrap_bands(100 * diff, resamples=args.resamples, seed=args.seed)
            points.append((r["step_acc"], q, float(100 * diff.mean())))
            for s in SELECTORS:
                rows.append({"kind": "sweep", "bias": bias, "q": round(float(q), 4), "judge": judge.name,
                             "step_acc": r["step_acc"], "expected_step_acc": r["expected_step_acc"], "selector": s,
                             "accuracy": r[s], "ci_low": None, "ci_high": None,
                             "n_tasks": r["n_tasks"], "n_candidates": r["n_candidates"]})
            rows.append({"kind": "sweep_diff", "bias": bias, "q": round(float(q), 4), "judge": judge.name,
                         "step_acc": r["step_acc"], "expected_step_acc": r["expected_step_acc"],
                         "selector": "pos_ratio-final", "accuracy": float(100 * diff.mean()),
                         "ci_low": float(low), "ci_high": float(high),
                         "n_tasks": r["n_tasks"], "n_candidates": r["n_candidates"]})
        xs, qq, d = map(np.array, zip(*points))
        x_cross, q_cross = crossover(xs, qq, d)
        crossings.append({"kind": "crossover", "bias": bias, "q": q_cross, "judge": "", "step_acc": x_cross,
                          "expected_step_acc": None, "selector": "pos_ratio-final", "accuracy": 0.0,
                          "ci_low": None, "ci_high": None, "n_tasks": sweep.trajs.n_tasks,
                          "n_candidates": sweep.trajs.n_candidates})
    return rows, crossings


def real_rows(args, sweep: Sweep) -> list[dict[str, Any]]:
    """Per recorded judge: a calibrated simulated judge on the synthetic tasks, and the real replay."""
    from bon.datasets import agentprocessbench as apb
    from bon.datasets import locate_root
    from bon.metrics import bootstrap_bands
    from bon.selectors import SELECTORS as BUILTIN
    from bon.selectors import select, to_batch
    from bon.sim.calibrate import judge_model

    root = locate_root(args.root, option="--root")
    subset = args.profile if args.profile in apb.SUBSETS else "all"
    subsets = list(apb.subsets(subset))
    real_acc = c.step_accuracy(subset, root)
    table = c.replay_table(subset, root)
    batch = to_batch(table)
    real = {s: select(BUILTIN[s], batch) for s in SELECTORS}
    rows = []
    for judge in apb.resolve_judges(root, "all"):
        sim = sweep.run(judge_model(root, judge, subsets), SELECTORS)
        sim.pop("_diff")
        for s in SELECTORS:
            per_task = 100 * real[s].filter(pl.col("judge") == judge)["expected"].to_numpy()
            low, high = bootstrap_bands(per_task, resamples=args.resamples, seed=args.seed)
            base = {"judge": judge, "bias": None, "q": None, "selector": s}
            rows.append({"kind": "sim_calibrated", **base, "ci_low": None, "ci_high": None, "step_acc": sim["step_acc"],
                         "expected_step_acc": sim["expected_step_acc"], "accuracy": sim[s],
                         "n_tasks": sim["n_tasks"], "n_candidates": sim["n_candidates"]})
            rows.append({"kind": "real_replay", **base, "ci_low": float(low), "ci_high": float(high),
                         "step_acc": real_acc[judge], "expected_step_acc": None,
                         "accuracy": float(per_task.mean()), "n_tasks": per_task.size, "n_candidates": 5})
    return rows


def plot(rows: list[dict[str, Any]], crossings: list[dict[str, Any]], args, path, orm: dict[str, float]) -> None:
    from matplotlib import colormaps
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    biases = c.ratio_list(args.biases)
    bias_colour = {b: colormaps["viridis"](0.15 + 0.7 * i / max(1, len(biases) - 1)) for i, b in enumerate(biases)}
    sweep = [r for r in rows if r["kind"] == "sweep"]
    diffs = [r for r in rows if r["kind"] == "sweep_diff"]
    sim_real = [r for r in rows if r["kind"] == "sim_calibrated"]
    real = [r for r in rows if r["kind"] == "real_replay"]
    n_tasks, n = sweep[0]["n_tasks"], sweep[0]["n_candidates"]
    fig = c.figure(16.5, 10.0)
    axes = fig.subplots(2, 3)
    flat = list(axes.ravel())

    ax = flat[0]  # the question: %Pos minus Final
    for b in biases:
        mine = [r for r in diffs if r["bias"] == b]
        xs = [r["step_acc"] for r in mine]
        ax.plot(xs, [r["accuracy"] for r in mine], marker="o", markersize=3, color=bias_colour[b])
        ax.fill_between(xs, [r["ci_low"] for r in mine], [r["ci_high"] for r in mine], color=bias_colour[b],
                        alpha=0.15, linewidth=0)
    for i, cr in enumerate(crossings):
        if np.isfinite(cr["step_acc"]):
            ax.axvline(cr["step_acc"], color=bias_colour[cr["bias"]], linestyle="--", linewidth=1)
            ax.annotate(f"crossover, bias {cr['bias']:g}: StepAcc {cr['step_acc']:.1f}%",
                        (cr["step_acc"], 0.3 - 0.07 * i),
                        xycoords=("data", "axes fraction"), xytext=(5, 0), textcoords="offset points",
                        color=bias_colour[cr["bias"]], fontsize=8.5, ha="left")
    ax.axhline(0, color="black", linewidth=0.9)
    ax.set_title(f"{c.SYNTHETIC}: %Pos minus Final (ORM)\n"
                 "dashed: crossover StepAcc where %Pos first beats Final", fontsize=10)
    ax.set_ylabel("accuracy difference %Pos − Final (percentage points)")

    for ax, s in zip(flat[1:5], PANELS):
        for b in biases:
            mine = [r for r in sweep if r["bias"] == b and r["selector"] == s]
            ax.plot([r["step_acc"] for r in mine], [r["accuracy"] for r in mine], marker="o", markersize=3,
                    color=bias_colour[b])
        for ref in ("random", "pass_at_n"):
            y = next(r["accuracy"] for r in sweep if r["selector"] == ref)
            ax.axhline(y, linewidth=1.2, **c.selector_style(ref))
            ax.annotate(f"{'random pick' if ref == 'random' else 'pass@N oracle'} {y:.1f}%", (0.99, y),
                        xycoords=("axes fraction", "data"), xytext=(0, 3), textcoords="offset points", fontsize=8,
                        color="0.3", ha="right")
        sim_s = {r["judge"]: r for r in sim_real if r["selector"] == s}
        real_s = {r["judge"]: r for r in real if r["selector"] == s}
        for j in sim_s:
            a, b2 = sim_s[j], real_s.get(j)
            if b2:
                ax.plot([a["step_acc"], b2["step_acc"]], [a["accuracy"], b2["accuracy"]], color="crimson",
                        alpha=0.45, linestyle=":", linewidth=0.9, zorder=2)
        ax.scatter([r["step_acc"] for r in sim_s.values()], [r["accuracy"] for r in sim_s.values()], s=28,
                   color="crimson", edgecolor="white", linewidth=0.5, zorder=4)
        reals = list(real_s.values())
        ax.errorbar([r["step_acc"] for r in reals], [r["accuracy"] for r in reals],
                    yerr=[[r["accuracy"] - r["ci_low"] for r in reals], [r["ci_high"] - r["accuracy"] for r in reals]],
                    fmt="none", ecolor="0.35", elinewidth=0.8, capsize=2, alpha=0.7, zorder=3)
        ax.scatter([r["step_acc"] for r in reals], [r["accuracy"] for r in reals], s=34,
                   facecolor="white", edgecolor="black", marker="s", linewidth=1.1, zorder=4)
        orm_note = "\nsweep: ORM fixed; each real judge: its own ORM" if s in ("final", "two_stage") else ""
        ax.set_title(f"{c.SYNTHETIC} sweep + real judges: {c.selector_label(s)}{orm_note}", fontsize=10)
        ax.set_ylabel(f"selection accuracy, best of N={n} (% of tasks)")
    for ax in flat[:5]:
        ax.set_xlabel("judge StepAcc (% of human-labelled steps labelled correctly)")
        ax.grid(alpha=0.3)

    leg = flat[5]
    leg.axis("off")
    handles = [Line2D([], [], color=bias_colour[b], marker="o", markersize=4) for b in biases]
    labels = [f"simulated PRM sweep, positive bias {b:g}" for b in biases]
    handles += [Patch(color="0.5", alpha=0.3)]
    labels += ["95% bootstrap interval (paired, over tasks)"]
    if sim_real:
        n_real = int(np.median([r["n_tasks"] for r in real]))
        handles += [Line2D([], [], color="crimson", marker="o", linestyle="none", markersize=6),
                    Line2D([], [], markerfacecolor="white", markeredgecolor="black", marker="s", linestyle="-",
                           color="0.35", markersize=6),
                    Line2D([], [], color="crimson", alpha=0.45, linestyle=":", linewidth=0.9)]
        labels += [f"{c.SYNTHETIC}: simulated judge calibrated from\n  a recorded judge (its confusion + ORM rates)",
                   f"REAL: that judge's AgentProcessBench replay\n  ({n_real} tasks, N=5; bar: 95% bootstrap interval)",
                   "dotted line joins the two points of one judge"]
    handles += [Line2D([], [], **c.selector_style("random")), Line2D([], [], **c.selector_style("pass_at_n"))]
    labels += ["random pick (synthetic, expected)", "pass@N oracle (synthetic)"]
    leg.legend(handles, labels, loc="upper left", fontsize=9, frameon=False, title="legend", title_fontsize=10)
    cross = "; ".join(f"bias {cr['bias']:g}: " + (f"{cr['step_acc']:.1f}% (q={cr['q']:.2f})"
                                                     if np.isfinite(cr["step_acc"]) else "never")
                      for cr in crossings)
    leg.text(0.0, 0.02, "x of the sweep: StepAcc measured on the simulated steps;\n"
             "x of the real judges: their real StepAcc on the same subset.\n"
             f"ORM held fixed in the sweep: TPR {orm['orm_tpr']:.3f}, FPR {orm['orm_fpr']:.3f}\n"
             f"crossover StepAcc (%Pos > Final):\n  {cross}",
             transform=leg.transAxes, fontsize=9, va="bottom")
    fig.suptitle(f"{c.SYNTHETIC} judge-quality sweep: how good must the PRM be before %Pos beats Final? "
                 f"(profile {args.profile}, {n_tasks} simulated tasks, N={n} candidates)\n"
                 "PRM confusion = (1−q)·uniform + q·identity, q from 0 to 1, plus a positive bias; "
                 "accuracies are tie-aware expected accuracies", fontsize=11.5)
    c.save(fig, path)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    p = c.parser(__doc__)
    c.add_common(p, STUDY, resamples=1000)
    p.add_argument("--profile", default="gaia_dev",
                   help="simulator profile (and real subset): hotpotqa | gaia_dev | bfcl | tau2")
    p.add_argument("--tasks", type=int, default=4000, help="simulated tasks")
    p.add_argument("--n", type=int, default=5, help="candidates per task (5 matches the real replay)")
    p.add_argument("--steps", type=int, default=21, help="points of the quality knob q in [0, 1]")
    p.add_argument("--biases", default="0,0.15,0.3", help="comma-separated positive-bias levels")
    p.add_argument("--orm-tpr", type=float, default=None,
                   help="ORM P(final +1 | success) (default conf/judge/sim.yaml)")
    p.add_argument("--orm-fpr", type=float, default=None,
                   help="ORM P(final +1 | failure) (default conf/judge/sim.yaml)")
    p.add_argument("--no-real", action="store_true", help="skip the recorded judges (no AgentProcessBench data needed)")
    args = p.parse_args(argv)
    out = c.out_dir(args.out)
    dataset_cfg, generator_cfg, judge_cfg = c.sim_configs(args.profile, args.n, args.tasks, orm_tpr=args.orm_tpr,
                                                          orm_fpr=args.orm_fpr)
    orm = {k: float(judge_cfg[k]) for k in ("orm_tpr", "orm_fpr", "orm_missing", "fail_rate")}
    sweep = Sweep(dataset_cfg, args.n, args.tasks, args.seed, int(generator_cfg["wrong_answers"]))
    rows, crossings = sweep_rows(args, sweep, orm)
    if not args.no_real:
        rows += real_rows(args, sweep)
    rows += crossings
    c.write_csv(rows, out / f"{STUDY}.csv")
    plot(rows, crossings, args, out / f"{STUDY}.png", orm)

    sweep_r = [r for r in rows if r["kind"] == "sweep"]
    biases = c.ratio_list(args.biases)
    show = sorted({round(float(q), 4) for q in np.linspace(0, 1, args.steps)[:: max(1, (args.steps - 1) // 4)]} | {1.0})
    table = []
    for b in biases:
        for q in show:
            mine = {r["selector"]: r for r in sweep_r if r["bias"] == b and abs(r["q"] - q) < 1e-9}
            if mine:
                table.append([f"{b:g}", f"{q:.2f}", mine["final"]["step_acc"],
                              *[mine[s]["accuracy"] for s in SELECTORS]])
    c.print_table(f"{c.SYNTHETIC} sweep, profile {args.profile}, {args.tasks} tasks, N={args.n} "
                  f"(accuracy %, tie-aware; ORM fixed: TPR {orm['orm_tpr']:.3f}, FPR {orm['orm_fpr']:.3f})",
                  ["bias", "q", "StepAcc", *SELECTORS], table)
    c.print_table("Crossover: StepAcc (%) at which %Pos first beats Final (linear interpolation between sweep points)",
                  ["positive bias", "q", "StepAcc"],
                  [[f"{cr['bias']:g}", "never" if not np.isfinite(cr["q"]) else f"{cr['q']:.2f}", cr["step_acc"]]
                   for cr in crossings])
    real = [r for r in rows if r["kind"] in ("sim_calibrated", "real_replay")]
    if real:
        by = {(r["kind"], r["judge"], r["selector"]): r for r in real}
        judges = sorted({r["judge"] for r in real}, key=lambda j: -by[("real_replay", j, "final")]["step_acc"])
        table = [[j, by[("real_replay", j, "final")]["step_acc"], by[("sim_calibrated", j, "final")]["step_acc"],
                  *[by[(k, j, s)]["accuracy"] for s in ("final", "pos_ratio", "two_stage")
                    for k in ("sim_calibrated", "real_replay")]] for j in judges]
        c.print_table(f"Recorded judges on {args.profile}: real StepAcc vs simulated, and accuracy (%) "
                      f"{c.SYNTHETIC} (calibrated sim, N={args.n}) / REAL (replay, N=5)",
                      ["judge", "StepAcc real", "StepAcc sim", "final sim", "final real", "%Pos sim", "%Pos real",
                       "2stage sim", "2stage real"], table)
    print(f"wrote {out / (STUDY + '.png')} and {out / (STUDY + '.csv')}")
    return rows


if __name__ == "__main__":
    from bon.errors import exit_on_user_error

    exit_on_user_error(main)()

"""How far can the simulator be trusted? Simulated vs real Best-of-5 accuracy, per selector.

For every recorded judge and subset: calibrate a simulated judge from that judge on that
subset, simulate many tasks with the subset's profile and N=5, and compare each selector's
expected accuracy with the real replay on the 50 AgentProcessBench tasks.

    python experiments/validate_sim.py [--tasks 4000] [--out experiments/out/validation]

Writes validation.csv (one row per judge x subset x selector) and validation.md (the error
summary; a copy is kept in experiments/validation.md).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import polars as pl

from bon import datasets
from bon.datasets import agentprocessbench as apb
from bon.datasets import locate_root
from bon.datasets.sim import candidate_table as sim_table
from bon.metrics import bootstrap_ci
from bon.selectors import SELECTORS, select, to_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402 - the experiments' shared helpers, beside this script

SELECTOR_NAMES = ("final", "pos_count", "pos_ratio", "two_stage", "clean_prefix")


def compare(root: Path, n_tasks: int, seed: int) -> pl.DataFrame:
    # one composed config per subset (composing takes a noticeable fraction of a second); the judge varies below
    sim = {s: c.sim_configs(s, 5, n_tasks, root=str(root)) for s in apb.SUBSETS}
    replay = {s: c.replay_configs(s, root)[0] for s in apb.SUBSETS}
    rows = []
    for judge in apb.resolve_judges(root, "all"):
        for subset in apb.SUBSETS:
            dataset, generator, judge_cfg = sim[subset]
            simulated = sim_table(dataset, generator | {"wrong_answers": 0}, judge_cfg | {"calibrate_from": judge},
                                  seed)
            real = datasets.candidate_table(replay[subset], {"kind": "replay", "name": judge})
            sim_batch, real_batch = to_batch(simulated), to_batch(real)
            for name in SELECTOR_NAMES:
                sim_picks, real_picks = select(SELECTORS[name], sim_batch), select(SELECTORS[name], real_batch)
                low, high = bootstrap_ci(real_picks["expected"], n_resamples=2000, seed=seed)
                rows.append({"judge": judge, "subset": subset, "selector": name,
                             "sim": 100 * float(sim_picks["expected"].mean()),
                             "real": 100 * float(real_picks["expected"].mean()),
                             "real_ci_low": 100 * low, "real_ci_high": 100 * high,
                             "sim_gain": 100 * float((sim_picks["expected"] - sim_picks["random"]).mean()),
                             "real_gain": 100 * float((real_picks["expected"] - real_picks["random"]).mean())})
    frame = pl.DataFrame(rows).with_columns((pl.col("sim") - pl.col("real")).alias("error"),
                                            pl.col("sim").is_between(pl.col("real_ci_low"), pl.col("real_ci_high"))
                                            .alias("sim_inside_real_ci"))
    return frame


def summary(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.group_by("selector", maintain_order=True).agg(
        pl.col("error").mean().round(1).alias("mean_error"),
        pl.col("error").abs().mean().round(1).alias("mean_abs_error"),
        (pl.col("error") ** 2).mean().sqrt().round(1).alias("rmse"),
        pl.corr("sim", "real").round(2).alias("corr_sim_real"),
        (pl.col("sim_gain") - pl.col("real_gain")).abs().mean().round(1).alias("gain_abs_error"),
        (100 * pl.col("sim_inside_real_ci").mean()).round(0).alias("pct_inside_real_ci"),
    )


def ranking_agreement(frame: pl.DataFrame) -> float:
    """Share of judge x subset cells where sim and real agree on which selector is best."""
    best = frame.group_by("judge", "subset").agg(
        pl.col("selector").sort_by("sim").last().alias("sim_best"),
        pl.col("selector").sort_by("real").last().alias("real_best"))
    return float((best["sim_best"] == best["real_best"]).mean())


def to_markdown(table: pl.DataFrame) -> str:
    cols = table.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.iter_rows()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=None, help="AgentProcessBench release (default $BON_DATA_DIR)")
    parser.add_argument("--tasks", type=int, default=4000, help="simulated tasks per judge and subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("experiments/out/validation"))
    args = parser.parse_args(argv)
    frame = compare(locate_root(args.root, option="--root"), args.tasks, args.seed)
    table = summary(frame)
    agreement = ranking_agreement(frame)
    args.out.mkdir(parents=True, exist_ok=True)
    frame.write_csv(args.out / "validation.csv")
    text = (f"Simulated vs real Best-of-5 expected accuracy (points), {frame['judge'].n_unique()} recorded judges "
            f"x {frame['subset'].n_unique()} subsets, "
            f"{args.tasks} simulated tasks per cell; real = 50 AgentProcessBench tasks per cell.\n\n"
            f"{to_markdown(table)}\n\nBest selector agrees in {100 * agreement:.0f}% of judge x subset cells.\n")
    (args.out / "validation.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'validation.csv'} and {args.out / 'validation.md'}")


if __name__ == "__main__":
    from bon.errors import exit_on_user_error

    exit_on_user_error(main)()

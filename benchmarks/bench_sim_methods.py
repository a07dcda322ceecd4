"""Every test-time method on the simulator: accuracy against compute, at a few judge qualities (SYNTHETIC).

    python benchmarks/bench_sim_methods.py [--tasks 10000] [--profile gaia_dev] [--n 8] [--k 4]

For each judge quality (the calibrated GPT-5.2-like judge, one pulled halfway to a random judge and
one pulled halfway to a perfect one: confusion rows, ORM rates and so the comparing judge's derived
accuracy) it runs, through the same code as `python -m bon.run`: Best-of-N at k = 1..N (two_stage and
majority, priced as k samples), step-wise Best-of-N, DVTS, beam search, list-wise and pairwise
selection. It prints the tie-aware expected accuracy with its bootstrap interval, tokens and calls per
task (bon.compute's units; tokens from the simulator's token model), and each run's wall time. Then
the step-level results at track_memory 0 and 1, the two ends of the search model's untested
assumption (bon.sim.search). Exit 0 when every run finished.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bon.datasets import sim
from bon.evaluate import evaluate
from bon.metrics import bootstrap_ci
from bon.selectors import SELECTORS, Selector, from_config

CONF = Path(__file__).resolve().parents[1] / "conf"


def _load(path: Path) -> dict[str, Any]:
    return {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "defaults"}


def judge_quality(base: dict[str, Any], towards: str, weight: float) -> dict[str, Any]:
    """The calibrated judge pulled `weight` of the way to a perfect or a random judge."""
    confusion = np.asarray(base["confusion"], dtype=float)
    target = np.eye(3) if towards == "perfect" else np.full((3, 3), 1 / 3)
    tpr, fpr = (1.0, 0.0) if towards == "perfect" else (0.5, 0.5)
    mix = (1 - weight) * confusion + weight * target
    return base | {"confusion": mix.tolist(), "orm_tpr": (1 - weight) * base["orm_tpr"] + weight * tpr,
                   "orm_fpr": (1 - weight) * base["orm_fpr"] + weight * fpr}


def one_run(dataset: dict[str, Any], generator: dict[str, Any], judge: dict[str, Any], selector: Selector,
            seed: int, resamples: int) -> tuple[Any, Any, dict[str, Any], float]:
    started = time.perf_counter()
    table, usage = sim.run(dataset, generator, judge, seed, selector)
    picks, rows = evaluate(selector, table, "sim", dataset["profile"], resamples=resamples, seed=seed)
    return picks, rows[0], usage["compute"], time.perf_counter() - started


def line(quality: str, method: str, accuracy: float, low: float, high: float, tokens: float, calls: float,
         wall: float | None) -> str:
    wall_s = "" if wall is None else f"{wall:7.2f}"
    return (f"{quality:<10} {method:<40} {100 * accuracy:6.1f}  [{100 * low:5.1f}, {100 * high:5.1f}]  "
            f"{tokens / 1000:9.0f}k  {calls:7.1f}  {wall_s}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--profile", default="gaia_dev")
    parser.add_argument("--n", type=int, default=8, help="N of Best-of-N and of the comparing judges")
    parser.add_argument("--k", type=int, default=4, help="candidate steps per branch and step (search_k)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    dataset = _load(CONF / "dataset" / "sim.yaml") | {"profile": args.profile, "n_tasks": args.tasks}
    generator = _load(CONF / "generator" / "sim.yaml") | {"n": args.n}
    base_judge = _load(CONF / "judge" / "sim.yaml")
    qualities = {"worse": judge_quality(base_judge, "random", 0.5), "calibrated": base_judge,
                 "better": judge_quality(base_judge, "perfect", 0.5)}
    listwise = from_config({"name": "listwise", "verdicts": "listwise", "fallback": "two_stage"})
    pairwise = from_config({"name": "pairwise", "verdicts": "pairwise", "fallback": "two_stage"})
    k, n = args.k, args.n
    others: list[tuple[str, dict[str, Any], dict[str, Any], Selector]] = [
        (f"stepwise n=1 k={k}", {"search": "stepwise", "n": 1, "search_k": k}, {}, SELECTORS["two_stage"]),
        (f"dvts n={n // 2} k={k}", {"search": "dvts", "n": n // 2, "search_k": k}, {}, SELECTORS["two_stage"]),
        (f"beam n={n // 2} k={k}", {"search": "beam", "n": n // 2, "search_k": k}, {}, SELECTORS["two_stage"]),
        (f"listwise N={n} perm=1", {}, {"permutations": 1}, listwise),
        (f"listwise N={n} perm=3", {}, {"permutations": 3}, listwise),
        (f"listwise N={n} perm=1 position_bias=0.3", {}, {"permutations": 1, "position_bias": 0.3}, listwise),
        (f"listwise N={n} perm=3 position_bias=0.3", {}, {"permutations": 3, "position_bias": 0.3}, listwise),
        (f"pairwise N={n} perm=1", {}, {"permutations": 1}, pairwise),
    ]
    print(f"SYNTHETIC: {args.tasks:,} tasks, profile {args.profile}, seed {args.seed}; accuracy = tie-aware "
          f"expectation (%), 95% bootstrap interval over tasks; tokens and calls per task")
    print(f"{'judge':<10} {'method':<40} {'acc':>6}  {'interval':<14}  {'tokens':>10}  {'calls':>7}  {'wall s':>7}")
    started = time.perf_counter()
    for quality, judge in qualities.items():
        # majority votes on answers, which the judge does not see: one run stands for every judge
        for name in ("two_stage", "majority") if quality == "worse" else ("two_stage",):
            _, row, compute, wall = one_run(dataset, generator, judge, SELECTORS[name], args.seed, args.resamples)
            quality_shown = "any" if name == "majority" else quality
            bok = row.best_of_k
            for i, kk in enumerate(bok["k"]):
                print(line(quality_shown, f"best-of-{kk} {name}", bok["accuracy"][i], bok["ci_low"][i],
                           bok["ci_high"][i], kk * compute["per_sample"]["tokens"],
                           kk * compute["per_sample"]["calls"], wall if kk == bok["k"][-1] else None))
        for label, gen, jud, selector in others:
            picks, row, compute, wall = one_run(dataset, generator | gen, judge | jud, selector, args.seed,
                                                args.resamples)
            low, high = bootstrap_ci(picks["expected"].to_numpy(), 0.95, args.resamples, args.seed)
            print(line(quality, f"{label} ({selector.name})" if selector.verdicts is None else label,
                       row.accuracy_expected, low, high, compute["per_task"]["tokens"], compute["per_task"]["calls"],
                       wall))
    print("search model sensitivity (calibrated judge): track_memory 0 = optimistic, 1 = pessimistic for search")
    for label, gen, _, selector in others[:3]:
        for memory in (0.0, 1.0):
            picks, row, compute, wall = one_run(dataset, generator | gen | {"track_memory": memory}, base_judge,
                                                selector, args.seed, args.resamples)
            low, high = bootstrap_ci(picks["expected"].to_numpy(), 0.95, args.resamples, args.seed)
            print(line("calibrated", f"{label} memory={memory:g}", row.accuracy_expected, low, high,
                       compute["per_task"]["tokens"], compute["per_task"]["calls"], wall))
    print(f"total wall time {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

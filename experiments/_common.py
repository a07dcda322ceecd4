"""Helpers shared by the experiments/study_*.py scripts (not part of the bon package).

Config defaults come from conf/ (the same YAML files `python -m bon.run` reads), figures are
drawn on matplotlib's Agg canvas without pyplot (as bon.plots does), and intervals are
percentile bootstraps over tasks that share one set of resamples across columns.
"""
from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import polars as pl

from bon.errors import BonError

HERE = Path(__file__).resolve().parent
OUT_ROOT = HERE / "out"
SYNTHETIC = "SYNTHETIC"
HUMAN = "human"

# One colour per selector in every study, so a selector looks the same in every figure.
SELECTOR_ORDER = ("final", "pos_count", "pos_ratio", "two_stage", "clean_prefix", "majority",
                  "weighted_majority", "random", "pass_at_n")
LABELS = {"final": "Final (ORM)", "pos_count": "#Pos", "pos_ratio": "%Pos", "two_stage": "Final → %Pos",
          "clean_prefix": "clean prefix", "majority": "majority vote", "weighted_majority": "%Pos-weighted vote",
          "random": "random pick", "pass_at_n": "pass@N (oracle)"}


def selector_label(name: str) -> str:
    return f"{LABELS[name]} [{name}]" if name in LABELS and LABELS[name] != name else name


def selector_style(name: str) -> dict[str, Any]:
    """Line colour and style: tab10 for judge-based selectors, grey dashed random, black dotted oracle."""
    if name == "random":
        return {"color": "0.45", "linestyle": "--"}
    if name == "pass_at_n":
        return {"color": "black", "linestyle": ":"}
    from matplotlib import colormaps

    i = SELECTOR_ORDER.index(name) if name in SELECTOR_ORDER else len(SELECTOR_ORDER) + len(name) % 3
    return {"color": colormaps["tab10"](i % 10), "linestyle": "-"}


# ---------------------------------------------------------------- command line and output

def parser(doc: str | None) -> argparse.ArgumentParser:
    lines = (doc or "").strip().splitlines()
    return argparse.ArgumentParser(description=lines[0] if lines else None,
                                   epilog="\n".join(lines[1:]) or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_common(p: argparse.ArgumentParser, study: str, resamples: int = 2000) -> None:
    p.add_argument("--out", type=Path, default=OUT_ROOT / study,
                   help=f"output directory (default experiments/out/{study}/)")
    p.add_argument("--root", default=None, help="AgentProcessBench release (default $BON_DATA_DIR)")
    p.add_argument("--resamples", type=int, default=resamples, help="bootstrap resamples for the 95%% intervals")
    p.add_argument("--seed", type=int, default=0, help="seed for the simulator and the bootstrap")


def out_dir(path: Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_root(root: str | None) -> Path:
    """The AgentProcessBench release: --root, else $BON_DATA_DIR, else bon's download cache."""
    from bon.datasets import locate_root

    if root:
        os.environ["BON_DATA_DIR"] = str(Path(root).expanduser().resolve())  # calibrate_from reads the env
    return locate_root(None)


def ratio_list(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def name_list(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def print_table(title: str, headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A plain fixed-width table: first column left-aligned, the rest right-aligned."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))
    print(title)
    print(line)
    print("-" * len(line))
    for r in cells:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    print()


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not np.isfinite(v) else f"{v:.1f}"
    return str(v)


def write_csv(rows: list[dict[str, Any]] | pl.DataFrame, path: Path) -> Path:
    frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows, infer_schema_length=None)
    frame.write_csv(path)
    return path


# ---------------------------------------------------------------- configs and tables

def conf(group: str, name: str) -> dict[str, Any]:
    """conf/<group>/<name>.yaml as a plain dict, interpolations resolved."""
    from omegaconf import OmegaConf

    from bon.config import conf_dir

    path = Path(conf_dir()) / group / f"{name}.yaml"
    cfg = OmegaConf.load(path)
    cfg.pop("defaults", None)
    return OmegaConf.to_container(cfg, resolve=True)


def sim_configs(profile: str, n: int, n_tasks: int, **judge: Any) -> tuple[dict, dict, dict]:
    """(dataset, generator, judge) configs for dataset=sim with these sizes; `judge` overrides conf/judge/sim.yaml."""
    dataset = conf("dataset", "sim") | {"profile": profile, "n_tasks": n_tasks}
    if profile not in dataset["profiles"]:
        raise BonError(f"unknown profile {profile!r}; valid: {', '.join(dataset['profiles'])}")
    generator = conf("generator", "sim") | {"n": n}
    return dataset, generator, conf("judge", "sim") | {k: v for k, v in judge.items() if v is not None}


def replay_table(subset: str, judges: Sequence[str] = ("all",), human: bool = False) -> pl.DataFrame:
    """The AgentProcessBench candidate table for recorded judges (names or 'all'), optionally plus the human labels."""
    from bon import datasets

    dataset = {"name": "agentprocessbench", "subset": subset}
    parts = [datasets.candidate_table(dataset, {"kind": "replay", "name": j}) for j in judges]
    if human:
        parts.append(datasets.candidate_table(dataset, {"kind": "human"}))
    return pl.concat(parts)


def step_accuracy(subset: str, judges: str = "all") -> dict[str, float]:
    """Each recorded judge's StepAcc (%) on `subset` ('all' pools every subset), as `python -m bon.prm_eval` reports it."""
    from bon.prm_eval import AVG, score

    scores = score({"name": "agentprocessbench", "subset": subset}, {"kind": "replay", "name": judges})
    return {j: 100 * s[AVG if subset == "all" else subset].step_acc for j, s in scores.items()}


def has_answers(table: pl.DataFrame) -> pl.DataFrame:
    """Only the tasks where some candidate has a final answer (what vote-based selectors need)."""
    keys = ["judge", "subset", "task_id"]
    keep = table.group_by(keys).agg(pl.col("answer").is_not_null().any().alias("_has")).filter(pl.col("_has"))
    return table.join(keep.drop("_has"), on=keys)


# ---------------------------------------------------------------- statistics

def bootstrap_bands(values: np.ndarray, confidence: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean over tasks (rows), for every column at once.

    Same estimator as bon.metrics.bootstrap_ci, but one set of task resamples serves all
    columns (e.g. every k of a best-of-k curve), which makes a whole curve cost one matrix
    product instead of one scipy call per point. NaN entries (a task without that column)
    are left out of that column's mean.
    """
    x = np.asarray(values, dtype=float)
    one = x.ndim == 1
    x = x[:, None] if one else x
    t, k = x.shape
    ok = ~np.isnan(x)
    x0 = np.where(ok, x, 0.0)
    rng = np.random.default_rng(seed)
    means = np.empty((resamples, k))
    chunk = max(1, 4_000_000 // max(t, 1))
    for start in range(0, resamples, chunk):
        b = min(chunk, resamples - start)
        idx = rng.integers(0, t, size=(b, t)) + (np.arange(b) * t)[:, None]
        counts = np.bincount(idx.ravel(), minlength=b * t).reshape(b, t).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            means[start:start + b] = (counts @ x0) / (counts @ ok)
    alpha = 100 * (1 - confidence) / 2
    with warnings.catch_warnings():  # a column with no values at all gives an all-NaN slice: NaN is the answer
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(means, [alpha, 100 - alpha], axis=0)
    return (low[0], high[0]) if one else (low, high)


# ---------------------------------------------------------------- figures

def figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: Path, dpi: int = 110) -> Path:
    fig.savefig(path, dpi=dpi)
    return path

"""Helpers shared by the experiments/study_*.py scripts (not part of the bon package).

Configs are composed by Hydra from conf/ with overrides, as `python -m bon.run <overrides>` would
compose them; figures are drawn on matplotlib's Agg canvas without pyplot (as bon.plots does);
intervals are bon.metrics.bootstrap_bands (one set of task resamples serves every column).
"""
from __future__ import annotations

import argparse
import copy
import functools
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from bon.datasets.sim import profiles as sim_profiles
from bon.errors import BonError
from bon.fmt import pct

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
    """A float is a percent (or percentage points) already: one decimal, 'n/a' when missing."""
    return pct(v, "n/a", points=True) if isinstance(v, float) else str(v)


def write_csv(rows: list[dict[str, Any]] | pl.DataFrame, path: Path) -> Path:
    frame = rows if isinstance(rows, pl.DataFrame) else pl.DataFrame(rows, infer_schema_length=None)
    frame.write_csv(path)
    return path


# ---------------------------------------------------------------- configs (composed by Hydra) and tables

def override(key: str, value: Any) -> str:
    """One Hydra command-line override. A string is quoted and escaped as Hydra's grammar asks (backslashes
    before a quote or at the end doubled, quotes and interpolations escaped), so any judge name survives."""
    if value is None:
        return f"{key}=null"
    if isinstance(value, str):
        text = re.sub(r"\\+(?='|$)", lambda m: 2 * m.group(0), value)
        return f"{key}='" + text.replace("'", "\\'").replace("${", "\\${") + "'"
    return f"{key}={value!r}"


def compose(*overrides: str) -> dict[str, Any]:
    """The config `python -m bon.run <overrides>` would run with, composed by Hydra from conf/, as a plain dict."""
    return copy.deepcopy(_composed(overrides))


@functools.lru_cache(maxsize=64)
def _composed(overrides: tuple[str, ...]) -> dict[str, Any]:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    import bon.datasets  # noqa: F401 - registers the resolver that conf/config.yaml's defaults list uses
    from bon.config import conf_dir

    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = hydra_compose("config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def sim_configs(profile: str, n: int, n_tasks: int, **judge: Any) -> tuple[dict, dict, dict]:
    """(dataset, generator, judge) configs of dataset=sim with these sizes; `judge` sets judge=sim's options
    (None keeps an option's default)."""
    cfg = compose("generator=sim", "judge=sim", "dataset=sim", override("dataset.profile", profile),
                  override("dataset.n_tasks", n_tasks), override("generator.n", n),
                  *(override(f"judge.{k}", v) for k, v in judge.items() if v is not None))
    known = sim_profiles(cfg["dataset"])
    if profile not in known:
        raise BonError(f"unknown profile {profile!r}; valid: {', '.join(known)}")
    return cfg["dataset"], cfg["generator"], cfg["judge"]


def replay_configs(subset: str, root: Path, judge: str = "all") -> tuple[dict, dict]:
    """(dataset, judge) configs of dataset=agentprocessbench with recorded judge(s) `judge`, or 'human' (the labels)."""
    judge_choice = ["judge=human"] if judge == HUMAN else ["judge=replay", override("judge.name", judge)]
    cfg = compose("dataset=agentprocessbench", override("dataset.subset", subset),
                  override("dataset.root", str(root)), *judge_choice)
    return cfg["dataset"], cfg["judge"]


def replay_table(subset: str, root: Path, judges: Sequence[str] = ("all",), human: bool = False) -> pl.DataFrame:
    """The AgentProcessBench candidate table for recorded judges (names or 'all'), optionally plus the human labels."""
    from bon import datasets

    parts = [datasets.candidate_table(*replay_configs(subset, root, j)) for j in judges]
    if human:
        parts.append(datasets.candidate_table(*replay_configs(subset, root, HUMAN)))
    return pl.concat(parts)


def step_accuracy(subset: str, root: Path, judges: str = "all") -> dict[str, float]:
    """Each recorded judge's StepAcc (%) on `subset` ('all' pools every subset), as `python -m bon.prm_eval`
    reports it."""
    from bon.prm_eval import AVG, score

    scores = score(*replay_configs(subset, root, judges))
    return {j: 100 * s[AVG if subset == "all" else subset].step_acc for j, s in scores.items()}


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

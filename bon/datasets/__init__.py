"""Datasets turn a config into a candidate table (and, for PRM evaluation, labelled records)."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import OmegaConf

from bon import config, shard
from bon.datasets import agentprocessbench as apb
from bon.errors import BonError, unknown_choice

if TYPE_CHECKING:  # polars is imported by candidate_table only: `python -m bon.prm_eval` never needs it
    import polars as pl

DATASETS = ("agentprocessbench", "sim", "tasks", "gaia", "builtin", "rehac")
LIVE = ("tasks", "gaia", "builtin")  # datasets of tasks, for a live (or replayed) agent and a live judge


def default_dataset(generator: str) -> str:
    """The dataset of a run that names none (conf/config.yaml's defaults list): the synthetic benchmark
    for the simulated agent, bon's built-in tasks for a live or replayed one."""
    return "sim" if generator == "sim" else "builtin"


# Registered on import: bon.run imports this package before Hydra composes the config.
OmegaConf.register_new_resolver("bon_default_dataset", default_dataset, replace=True)
ENV_ROOT = "BON_DATA_DIR"


def locate_release(name: str, settings: Sequence[tuple[str, str | Path | None]], *, holds: Callable[[Path], bool],
                   lacking: str, download: Callable[[], Path]) -> Path:
    """Where a data release is: the first of `settings` ((option or variable, value) pairs) that is set, else
    `download()` (the verified copy in the user cache).

    A setting that is set but points at no copy of the release is an error naming it, never a silent
    fall-through to the next one: `lacking` completes "<setting> is <path>, which ...".
    """
    for source, value in settings:
        if value:
            path = Path(value).expanduser().resolve()
            if holds(path):
                return path
            raise BonError(f"{name} data not found: {source} is {path}, which {lacking}")
    return download()


def locate_root(root: str | Path | None, option: str = "dataset.root") -> Path:
    """Where the AgentProcessBench files are: `root` (the setting `option`, named in errors), else
    $BON_DATA_DIR, else the download cache. The environment is read, never written."""
    def download() -> Path:  # imported only when no setting names a copy (urllib, tqdm: ~50 ms)
        from bon.datasets import fetch

        return fetch.ensure_cached()

    return locate_release("AgentProcessBench", [(option, root), (ENV_ROOT, os.environ.get(ENV_ROOT))],
                          holds=lambda path: (path / "data" / "AnswerOnly").is_dir(),
                          lacking="has no data/AnswerOnly/ directory (expected the upstream layout: data/AnswerOnly/, "
                                  "data/AgentProcessBench/, eval/results/)",
                          download=download)


def judge_names(dataset: config.AgentProcessBenchDataset | Mapping[str, Any],
                judge: config.NamedJudge | Mapping[str, Any]) -> tuple[Path, list[str]]:
    """The data root and the canonical judge names a config asks for (AgentProcessBench)."""
    dataset, judge = records_options(dataset), config.typed(config.NamedJudge, judge, "judge.")
    root = locate_root(dataset.root)
    if judge.kind == "human":
        return root, [apb.HUMAN]
    if judge.kind not in (None, "replay"):
        raise unknown_choice("judge kind for dataset agentprocessbench", judge.kind, ("replay", "human"))
    return root, apb.resolve_judges(root, str(judge.name or ""))


def records_options(dataset: config.AgentProcessBenchDataset | Mapping[str, Any]) -> config.AgentProcessBenchDataset:
    """AgentProcessBench's options (a mapping from a library caller is checked and typed)."""
    if isinstance(dataset, Mapping):
        if dataset.get("name") not in DATASETS:
            raise unknown_choice("dataset", dataset.get("name"), DATASETS)
        if dataset["name"] != "agentprocessbench":
            raise BonError(f"judge quality needs human step labels: use dataset=agentprocessbench "
                           f"(got dataset={dataset['name']})")
    return config.typed(config.AgentProcessBenchDataset, dataset, "dataset.")


def records(dataset: config.AgentProcessBenchDataset | Mapping[str, Any], root: Path | None = None) -> list[apb.Record]:
    """AgentProcessBench's labelled records of the configured subset(s); `root` if already located."""
    dataset = records_options(dataset)
    root = root or locate_root(dataset.root)
    return [r for s in apb.subsets(str(dataset.subset)) for r in apb.load_records(root, s)]


def candidate_table(dataset: config.AgentProcessBenchDataset | Mapping[str, Any],
                    judge: config.NamedJudge | Mapping[str, Any], seed: int = 0) -> pl.DataFrame:
    """One row per (task, sample, judge) of AgentProcessBench's recorded trajectories and judge(s)
    (the synthetic benchmark's table is bon.datasets.sim's)."""
    from bon import candidates

    dataset = records_options(dataset)
    root, judges = judge_names(dataset, judge)
    rows = []
    for record in records(dataset, root):
        if not shard.keeps(dataset, record.task_id):  # dataset.shard of dataset.num_shards (bon.shard)
            continue
        for name in judges:
            rows.append(candidates.row(record.task_id, record.subset, record.sample,
                                       apb.judgement_for(root, name, record), record.steps,
                                       record.answer, record.success))
    if not rows and dataset.num_shards > 1:
        raise shard.empty(dataset, len({r.task_id for r in records(dataset, root)}))
    if not rows:
        raise BonError("the configured dataset and judge produced no candidates")
    return candidates.table(rows)

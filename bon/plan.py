"""Which pipeline a `bon.run` config runs, decided in one place.

`plan(cfg)` checks the config (types and ranges: bon.config) and returns what the chosen pipeline needs:

* `Sim` -- the synthetic benchmark (dataset=sim): simulated trajectories and judge.
* `Replay` -- AgentProcessBench: recorded trajectories with recorded (or human) step labels.
* `Live` -- tasks for an agent (dataset=builtin, tasks, gaia): a live or replayed agent and a live judge.
* `RehacOffline` -- ReHAC's logged collaboration episodes: intervention policies valued offline.

The first three end in a candidate table that a selector picks from; ReHAC values policies instead.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from bon import config, datasets, generators, selectors, shard
from bon.errors import BonError, unknown_choice
from bon.selectors import Selector


@dataclass(frozen=True)
class Selection:
    """What every selection pipeline shares: its configs, the selector and the bootstrap's options."""

    dataset: Mapping[str, Any]
    generator: Mapping[str, Any]
    judge: Mapping[str, Any]
    selector: Selector
    confidence: float
    resamples: int
    seed: int

    @property
    def dataset_name(self) -> str:
        return str(self.dataset["name"])

    @property
    def subset(self) -> str:
        """The subset (AgentProcessBench, tasks) or profile (sim) the run's rows are reported under."""
        return str(self.dataset.get("subset") or self.dataset.get("profile"))


@dataclass(frozen=True)
class Sim(Selection):
    """dataset=sim: the whole candidate table is simulated (bon.sim), so results are marked synthetic."""


@dataclass(frozen=True)
class Replay(Selection):
    """dataset=agentprocessbench: recorded trajectories, judged by recorded judges or the human labels."""


@dataclass(frozen=True)
class Live(Selection):
    """Tasks for an agent: generate (or replay `generator.path`), judge live, score against the references."""

    cache: Mapping[str, Any]
    tools: Mapping[str, Any] | None
    intervention: Mapping[str, Any]
    budget: Mapping[str, Any] | None

    @property
    def replaying(self) -> bool:
        """Trajectories come from generator.path instead of a live agent."""
        return self.generator.get("kind") == "replay"


@dataclass(frozen=True)
class RehacOffline:
    """dataset=rehac: intervention policies valued on logged episodes (bon.rehac.report); no selector."""

    cfg: DictConfig


Plan = Union[Sim, Replay, Live, RehacOffline]


def plan(cfg: DictConfig) -> Plan:
    """The pipeline `cfg` asks for, with its options checked; a bad option is one line (BonError)."""
    values = _resolved(cfg)
    config.check(values)
    name = values["dataset"].get("name")
    _, num_shards = shard.of(values["dataset"])  # 0 <= dataset.shard < dataset.num_shards
    if name == "rehac":  # a judge serves only as a predictor here; rehac checks its own options
        if num_shards != 1:
            raise BonError("dataset=rehac cannot be sharded (dataset.num_shards must be 1): its policies are valued "
                           "over all logged episodes together; run it in one job")
        return RehacOffline(cfg)
    if name not in datasets.DATASETS:
        raise unknown_choice("dataset", name, datasets.DATASETS)
    generators.check(values["generator"])
    parts = dict(dataset=values["dataset"], generator=values["generator"], judge=values["judge"],
                 selector=selectors.from_config(values["selector"]), confidence=float(values["confidence"]),
                 resamples=int(values["bootstrap_resamples"]), seed=int(values["seed"]))
    intervention = values["intervention"]
    if name in datasets.LIVE:
        return Live(**parts, cache=values["cache"], tools=values.get("tools"), intervention=intervention,
                    budget=values.get("budget"))
    if parts["selector"].verdicts is not None and name != "sim":  # the simulator has a comparing judge (bon.sim)
        raise BonError(f"selector={parts['selector'].name} asks the judge model to compare each task's trajectories, "
                       f"which dataset={name} does not have: use a dataset of tasks (dataset=builtin, tasks or gaia) "
                       f"with a live judge, or generator=replay generator.path=<trajectories.jsonl>")
    if intervention["policy"] != "none":
        raise BonError(f"intervention={intervention['policy']} needs a live agent (dataset=tasks or dataset=gaia "
                       f"with a live generator); dataset={name} replays recorded candidates")
    return Sim(**parts) if name == "sim" else Replay(**parts)


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain values, interpolations resolved (an unresolvable one is one line)."""
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise BonError(f"cannot resolve the config: {str(exc).splitlines()[0]}") from None
    assert isinstance(values, dict)
    return {str(k): v for k, v in values.items()}

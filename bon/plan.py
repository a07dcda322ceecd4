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
    """What every selection pipeline shares: its options (bon.config's schema objects), the selector and the
    bootstrap's options."""

    dataset: config.Dataset
    generator: config.Generator
    judge: config.Judge
    selector: Selector
    confidence: float
    resamples: int
    seed: int

    @property
    def dataset_name(self) -> str:
        return self.dataset.name

    @property
    def subset(self) -> str:
        """The subset (AgentProcessBench, tasks) or profile (sim) the run's rows are reported under."""
        if isinstance(self.dataset, config.SimDataset):
            return str(self.dataset.subset or self.dataset.profile)
        return str(self.dataset.subset)


@dataclass(frozen=True)
class Sim(Selection):
    """dataset=sim: the whole candidate table is simulated (bon.sim), so results are marked synthetic."""

    dataset: config.SimDataset
    generator: config.SimGenerator
    judge: config.SimJudge


@dataclass(frozen=True)
class Replay(Selection):
    """dataset=agentprocessbench: recorded trajectories, judged by recorded judges or the human labels."""

    dataset: config.AgentProcessBenchDataset
    generator: config.ReplayGenerator
    judge: config.NamedJudge


@dataclass(frozen=True)
class Live(Selection):
    """Tasks for an agent: generate (or replay `generator.path`), judge live, score against the references.

    `tools` stays a mapping: each tool's options are its constructor's keyword arguments (bon.tools)."""

    dataset: config.TasksDataset | config.GaiaDataset | config.BuiltinDataset
    generator: config.LLMGenerator | config.ReplayGenerator
    judge: config.LLMJudge
    cache: config.CacheOptions
    tools: Mapping[str, Any] | None
    intervention: config.Intervention
    budget: config.BudgetOptions | None

    @property
    def replaying(self) -> bool:
        """Trajectories come from generator.path instead of a live agent."""
        return isinstance(self.generator, config.ReplayGenerator)


@dataclass(frozen=True)
class RehacOffline:
    """dataset=rehac: intervention policies valued on logged episodes (bon.rehac.report); no selector.

    `dataset` holds ReHAC's own options, which bon.rehac.report.options checks and types (lists of lambdas,
    rates and predictors, files found under the release); `judge` serves only as the `judge` predictor."""

    dataset: Mapping[str, Any]
    judge: Mapping[str, Any]
    cache: config.CacheOptions
    confidence: float
    resamples: int
    seed: int


Plan = Union[Sim, Replay, Live, RehacOffline]


def plan(cfg: DictConfig) -> Plan:
    """The pipeline `cfg` asks for, with its options checked; a bad option is one line (BonError)."""
    values = _resolved(cfg)
    config.check(values)
    name = values["dataset"].get("name")
    if name == "rehac":  # a judge serves only as a predictor here; rehac checks its own options
        if shard.check(values["dataset"].get("shard", 0), values["dataset"].get("num_shards", 1))[1] != 1:
            raise BonError("dataset=rehac cannot be sharded (dataset.num_shards must be 1): its policies are valued "
                           "over all logged episodes together; run it in one job")
        return RehacOffline(values["dataset"], values["judge"],
                            config.typed(config.CacheOptions, values["cache"], "cache."), float(values["confidence"]),
                            int(values["bootstrap_resamples"]), int(values["seed"]))
    if name not in datasets.DATASETS:
        raise unknown_choice("dataset", name, datasets.DATASETS)
    generators.check(values["generator"])
    judge_kind = values["judge"].get("kind")
    if judge_kind not in config.GROUPS["judge"][1]:
        raise unknown_choice("judge kind", judge_kind, [str(k) for k in config.GROUPS["judge"][1]])
    check_kinds(name, values["generator"]["kind"], judge_kind)
    dataset = config.load("dataset", values["dataset"])
    shard.of(dataset)  # 0 <= dataset.shard < dataset.num_shards
    parts = dict(dataset=dataset, generator=config.load("generator", values["generator"]),
                 judge=config.load("judge", values["judge"]), selector=selectors.from_config(values["selector"]),
                 confidence=float(values["confidence"]), resamples=int(values["bootstrap_resamples"]),
                 seed=int(values["seed"]))
    intervention = config.typed(config.Intervention, values["intervention"], "intervention.")
    if name in datasets.LIVE:
        budget = values.get("budget")
        return Live(**parts, cache=config.typed(config.CacheOptions, values["cache"], "cache."),
                    tools=values.get("tools"), intervention=intervention,
                    budget=None if budget is None else config.typed(config.BudgetOptions, budget, "budget."))
    if parts["selector"].verdicts is not None and name != "sim":  # the simulator has a comparing judge (bon.sim)
        raise BonError(f"selector={parts['selector'].name} asks the judge model to compare each task's trajectories, "
                       f"which dataset={name} does not have: use a dataset of tasks (dataset=builtin, tasks or gaia) "
                       f"with a live judge, or generator=replay generator.path=<trajectories.jsonl>")
    if intervention.policy != "none":
        raise BonError(f"intervention={intervention.policy} needs a live agent (dataset=tasks or dataset=gaia "
                       f"with a live generator); dataset={name} replays recorded candidates")
    return Sim(**parts) if name == "sim" else Replay(**parts)


LIVE_PRESETS = "deepseek, openai, anthropic, gemini, local"


def check_kinds(dataset: str, generator: str, judge: str) -> None:
    """Each dataset takes its own kinds of generator and judge; say which, and why, when they do not fit."""
    if dataset == "sim":
        if generator != "sim":
            raise BonError(f"dataset=sim needs generator=sim (got generator kind {generator!r})")
        if judge != "sim":
            raise BonError(f"dataset=sim needs judge=sim (got judge kind {judge!r}); to imitate a "
                           f"recorded judge use judge=sim judge.calibrate_from=<judge name>")
    elif dataset == "agentprocessbench":
        if generator != "replay":
            raise BonError(f"dataset={dataset} replays recorded trajectories: use generator=replay (got {generator!r})")
        if judge not in ("replay", "human"):
            raise unknown_choice("judge kind for dataset agentprocessbench", judge, ("replay", "human"))
    else:  # a dataset of tasks needs an agent that acts and a judge that reads what it did
        if generator not in ("llm", "replay"):
            raise BonError(f"dataset={dataset} needs a live agent to solve its tasks: add generator=<preset> "
                           f"({LIVE_PRESETS}), or generator=replay generator.path=<trajectories.jsonl>; "
                           f"got generator kind {generator!r}")
        if judge == "sim":
            raise BonError(f"judge=sim cannot grade these trajectories: it is bon's simulated judge, which draws "
                           f"labels from true step labels that only the simulator knows. Leave judge out to let the "
                           f"generator's provider judge, or choose a live judge: judge=<preset> ({LIVE_PRESETS})")
        if judge != "llm":
            raise BonError(f"dataset={dataset} needs a live judge to label the trajectories' steps: judge=<preset> "
                           f"({LIVE_PRESETS}); judge kind {judge!r} replays AgentProcessBench's recorded labels "
                           f"(dataset=agentprocessbench only)")


def _resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain values, interpolations resolved (an unresolvable one is one line)."""
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise BonError(f"cannot resolve the config: {str(exc).splitlines()[0]}") from None
    assert isinstance(values, dict)
    return {str(k): v for k, v in values.items()}

"""The config tree's location, its typed schema, and one-line messages for config errors.

Each config group option has a dataclass below whose fields give each option's type and range.
Two mechanisms use them, each for what it does faithfully:

- Hydra: the schemas of the generator, judge and dataset groups are registered with Hydra's
  ConfigStore as `schema/<group>/<kind or name>`, and each shipped preset extends its schema
  (`defaults: [/schema/generator/llm@_here_, _self_]`), so Hydra refuses a wrong int or list while
  composing (`generator.n=abc`, `generator.n=2.5`); explain_composition_error says it in check()'s
  words. Hydra is given only the int and container types: OmegaConf converts other scalars instead
  of refusing them (120 -> 120.0, 123 -> '123', 'yes' -> True), which would change saved configs and
  cache keys. A schema holds exactly the keys its presets set (a field of the schema a preset left
  out would compose as "???"); an option the presets leave out is `opt(in_presets=False)`.
- check(cfg), called by bon.plan before any work: every type (floats, strings, booleans too), every
  range (ge/gt/le/lt) and choice, and the groups Hydra is not given: intervention (its `lambda` key is
  a Python keyword, so the field is `lambda_`), tools (nested option groups), cache, budget and the
  top-level options (conf/config.yaml, the primary config, and conf/common.yaml), and dataset=rehac (it checks
  its own options, bon/rehac/report.py).
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import os
import re
import sys
import threading
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, TypeVar, Union, cast

from bon import compose_speed
from bon.errors import BonError

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> str:
    """Absolute path of the config tree, so `python -m bon.run` works from any directory. Every command that
    composes conf/ asks for it first, so this is where the typed schemas are registered with Hydra."""
    if not _HYDRA_SCHEMAS:
        register_schemas()
    compose_speed.install()  # idempotent
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"bon's config tree is missing: looked for {_PACKAGE.parent / 'conf'} and "
                            f"{_PACKAGE / 'conf'}")


# --------------------------------------------------------------------------- schema


def opt(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
        choices: tuple[str, ...] | None = None, in_presets: bool = True, unset: Any = None) -> Any:
    """A schema field with a range (ge/gt/le/lt) or a set of valid choices.

    in_presets=False: an option the shipped presets leave out (a user adds it with `+group.key=...`);
    check() types it, Hydra's schema leaves it out (else it would show as "???" in every composed config).
    unset: the value typed() gives the field when a mapping leaves the option out (a library caller's
    partial config; a composed config has every key its preset sets). The defaults a run uses are the
    presets' (conf/*.yaml).
    """
    bounds = {k: v for k, v in (("ge", ge), ("gt", gt), ("le", le), ("lt", lt)) if v is not None}
    # "???" is OmegaConf's MISSING: a preset sets every field it extends
    return field(default="???", metadata={"bounds": bounds, "choices": choices, "in_presets": in_presets,
                                          "unset": unset})


@dataclass
class RunOptions:
    seed: int = opt(ge=0)
    confidence: float = opt(gt=0, lt=1)
    bootstrap_resamples: int = opt(ge=100)


@dataclass
class CacheOptions:
    dir: Optional[str] = opt()
    url: Optional[str] = opt()
    mode: str = opt(choices=("off", "read", "write", "readwrite"), unset="readwrite")


@dataclass
class BudgetOptions:
    usd: Optional[float] = opt(gt=0)
    calls: Optional[int] = opt(ge=1)


# The field order of each class that conf/ presets extend is their YAML order: Hydra's composed config
# (and the saved .hydra/config.yaml) lists keys in the schema's order.


@dataclass
class LLMGenerator:
    """A live tool-calling agent (conf/generator/{deepseek,openai,...}.yaml)."""

    kind: str = opt()
    model: Optional[str] = opt()
    api_base: Optional[str] = opt()
    api_key_env: Optional[str] = opt()
    transport: str = opt(choices=("litellm", "native"), unset="litellm")  # native: bon.llm.native, no litellm
    n: int = opt(ge=1, unset=1)
    models: Optional[list] = opt()  # mixed-model rollouts (bon.generators.mixed.model_configs checks entries)
    mix: Optional[list] = opt()
    search: str = opt(choices=("none", "stepwise", "beam", "dvts"), unset="none")
    search_k: int = opt(ge=1, unset=4)
    max_steps: int = opt(ge=1, unset=15)
    temperature: Optional[float] = opt(ge=0)
    seed: Optional[int] = opt()
    tools: Optional[list] = opt()
    system_prompt: Optional[str] = opt()
    store: Optional[str] = opt()
    retry_failed: bool = opt(unset=True)
    trajectory_timeout: float = opt(gt=0, unset=600.0)
    concurrency: int = opt(ge=1)
    rpm: Optional[int] = opt(ge=1)
    timeout: float = opt(gt=0)
    max_attempts: int = opt(ge=1)
    workers: int = opt(ge=0)
    breaker_after: int = opt(ge=1)
    prices: Optional[dict] = opt()


@dataclass
class SimGenerator:
    kind: str = opt()
    n: int = opt(ge=1)
    wrong_answers: int = opt(ge=0, unset=3)
    search: str = opt(choices=("none", "stepwise", "beam", "dvts"), unset="none")  # simulated (bon.sim.search)
    search_k: int = opt(ge=1, unset=4)
    track_memory: float = opt(ge=0, le=1, unset=0.5)
    prompt_tokens: int = opt(ge=0, unset=600)  # the simulator's token model
    step_tokens: int = opt(ge=0, unset=700)


@dataclass
class ReplayGenerator:
    kind: str = opt()
    path: Optional[str] = opt()


@dataclass
class LLMJudge:
    """A live LLM judge (conf/judge/{deepseek,openai,...}.yaml)."""

    kind: str = opt()
    name: str = opt()
    model: Optional[str] = opt()
    api_base: Optional[str] = opt()
    api_key_env: Optional[str] = opt()
    transport: str = opt(choices=("litellm", "native"), unset="litellm")  # native: bon.llm.native, no litellm
    mode: str = opt(choices=("prm", "orm"), unset="prm")
    samples: int = opt(ge=1, unset=1)
    quorum: Optional[int] = opt(ge=1)
    reask: bool = opt(unset=False)
    prompt: Optional[str] = opt()
    max_chars: Optional[int] = opt(ge=1)
    permutations: int = opt(ge=1, unset=1)  # selector=listwise/pairwise: orders the candidates are shown in
    store: Optional[str] = opt()
    temperature: Optional[float] = opt(ge=0)
    concurrency: int = opt(ge=1)
    rpm: Optional[int] = opt(ge=1)
    timeout: float = opt(gt=0)
    max_attempts: int = opt(ge=1)
    workers: int = opt(ge=0)
    breaker_after: int = opt(ge=1)
    prices: Optional[dict] = opt()


@dataclass
class SimJudge:
    kind: str = opt()
    name: str = opt()
    calibrate_from: Optional[str] = opt()
    root: Optional[str] = opt()
    confusion: list = opt()
    positive_bias: float = opt(ge=0, le=1, unset=0.0)
    orm_tpr: float = opt(ge=0, le=1)
    orm_fpr: float = opt(ge=0, le=1)
    orm_missing: float = opt(ge=0, le=1)
    fail_rate: float = opt(ge=0, le=1)
    overhead_tokens: int = opt(ge=0, unset=800)  # the simulator's token model
    permutations: int = opt(ge=1, unset=1)  # selector=listwise/pairwise: the simulated comparing judge
    listwise_accuracy: Optional[float] = opt(ge=0, le=1)
    position_bias: float = opt(ge=0, le=1, unset=0.0)


@dataclass
class NamedJudge:  # replay (a recorded judge) and human (the consensus labels)
    kind: str = opt()
    name: str = opt()


@dataclass
class SimDataset:
    name: str = opt()
    profile: str = opt()
    n_tasks: int = opt(ge=1)
    subset: Optional[str] = opt()
    num_shards: int = opt(ge=1, unset=1)  # split one configuration over K jobs (bon.shard); shard < num_shards
    shard: int = opt(ge=0, unset=0)
    profiles: dict = opt()


@dataclass
class AgentProcessBenchDataset:
    name: str = opt()
    subset: str = opt(unset="all")
    root: Optional[str] = opt()
    num_shards: int = opt(ge=1, unset=1)  # bon.shard
    shard: int = opt(ge=0, unset=0)


@dataclass
class TasksDataset:
    name: str = opt()
    path: str = opt()
    subset: str = opt()
    num_shards: int = opt(ge=1, unset=1)  # bon.shard
    shard: int = opt(ge=0, unset=0)
    tools: Optional[list] = opt()
    system_prompt: Optional[str] = opt(in_presets=False)  # `+dataset.system_prompt=...`


@dataclass
class GaiaDataset:
    name: str = opt()
    path: str = opt()
    split: Optional[str] = opt()
    level: Optional[int] = opt(ge=1, le=3)
    subset: str = opt()
    num_shards: int = opt(ge=1, unset=1)  # bon.shard
    shard: int = opt(ge=0, unset=0)
    tools: Optional[list] = opt()
    system_prompt: Optional[str] = opt()


@dataclass
class BuiltinDataset:
    name: str = opt()
    subset: str = opt()
    n_tasks: Optional[int] = opt(ge=1)
    task_ids: Optional[list] = opt()
    num_shards: int = opt(ge=1, unset=1)  # bon.shard
    shard: int = opt(ge=0, unset=0)
    tools: Optional[list] = opt()
    system_prompt: Optional[str] = opt()


@dataclass
class Helper:
    kind: str = opt(choices=("model", "terminal"), unset="model")
    model: Optional[str] = opt()
    api_base: Optional[str] = opt()
    api_key_env: Optional[str] = opt()
    transport: str = opt(choices=("litellm", "native"), unset="litellm")  # as generator.transport
    temperature: Optional[float] = opt(ge=0)
    concurrency: int = opt(ge=1)
    timeout: float = opt(gt=0)
    max_attempts: int = opt(ge=1)
    prices: Optional[dict] = opt()


@dataclass
class Intervention:
    policy: str = opt(choices=("none", "rate", "prm", "reflect"), unset="none")  # budgeted: prm with a budget
    near_limit: int = opt(ge=0, unset=2)
    rate: Optional[float] = opt(ge=0, le=1)
    seed: int = opt(unset=0)
    budget: Optional[int] = opt(ge=0)
    helper: Optional[Helper] = opt()
    # `lambda` is a Python keyword: see _FIELD_ALIASES
    lambda_: float = opt(ge=0, unset=0.0)


@dataclass
class WebSearchOptions:
    provider: str = opt()
    base_url: Optional[str] = opt()
    api_key_env: Optional[str] = opt()
    max_results: int = opt(ge=1)
    timeout: float = opt(gt=0)
    proxy: Optional[str] = opt()


@dataclass
class VisitPageOptions:
    allow_networks: list = opt()
    page_chars: int = opt(ge=1)
    max_bytes: int = opt(ge=1)
    max_redirects: int = opt(ge=0)
    timeout: float = opt(gt=0)
    connect_timeout: float = opt(gt=0)
    memory_mb: int = opt(ge=256)
    cache_size: int = opt(ge=0)
    proxy: Optional[str] = opt()
    ca_file: Optional[str] = opt()
    user_agent: str = opt()


@dataclass
class InspectFileOptions:
    page_chars: int = opt(ge=1)
    max_rows: int = opt(ge=1)
    max_columns: int = opt(ge=1)
    max_cells: int = opt(ge=1)
    max_paragraphs: int = opt(ge=1)
    timeout: float = opt(gt=0)
    memory_mb: int = opt(ge=256)
    zip_max_members: int = opt(ge=1)
    zip_max_mb: int = opt(ge=1)
    vision_model: Optional[str] = opt()
    vision_api_base: Optional[str] = opt()
    vision_api_key_env: Optional[str] = opt()
    transcription_model: Optional[str] = opt()
    transcription_api_base: Optional[str] = opt()
    transcription_api_key_env: Optional[str] = opt()
    model_timeout: float = opt(gt=0)
    media_cache: bool = opt()


@dataclass
class PythonOptions:
    timeout: float = opt(gt=0)
    cpu_seconds: float = opt(gt=0)
    memory_mb: int = opt(ge=1)
    max_file_mb: int = opt(ge=1)
    max_output_chars: int = opt(ge=1)
    max_parallel: int = opt(ge=1)
    max_processes: int = opt(ge=1)
    isolation: str = opt(choices=("auto", "namespace", "audit_hook"))
    interpreter: Optional[str] = opt()


@dataclass
class ToolOptions:
    allow_private: bool = opt()
    web_search: Optional[WebSearchOptions] = opt()
    visit_page: Optional[VisitPageOptions] = opt()
    inspect_file: Optional[InspectFileOptions] = opt()
    python: Optional[PythonOptions] = opt()


# group -> (the field that picks the schema, {value: schema}); rehac checks its own options (bon/rehac/report.py)
GROUPS: dict[str, tuple[str | None, dict[str | None, type]]] = {
    "generator": ("kind", {"llm": LLMGenerator, "sim": SimGenerator, "replay": ReplayGenerator}),
    "judge": ("kind", {"llm": LLMJudge, "sim": SimJudge, "replay": NamedJudge, "human": NamedJudge}),
    "dataset": ("name", {"sim": SimDataset, "agentprocessbench": AgentProcessBenchDataset,
                         "tasks": TasksDataset, "gaia": GaiaDataset, "builtin": BuiltinDataset}),
    "intervention": (None, {None: Intervention}),
    "tools": (None, {None: ToolOptions}),
    "cache": (None, {None: CacheOptions}),
    "budget": (None, {None: BudgetOptions}),
}
_FIELD_ALIASES = {"lambda_": "lambda"}

# What a plan carries for each group (bon.plan): the schema object of the chosen kind or name
Generator = Union[LLMGenerator, SimGenerator, ReplayGenerator]
Judge = Union[LLMJudge, SimJudge, NamedJudge]
Dataset = Union[SimDataset, AgentProcessBenchDataset, TasksDataset, GaiaDataset, BuiltinDataset]
Schema = TypeVar("Schema")


def typed(schema: type[Schema], values: Mapping[str, Any] | Schema, where: str = "") -> Schema:
    """`values` as a `schema` object, checked first (types, ranges, choices: one line naming the option,
    `where` its group's prefix, e.g. "generator."). The code past bon.plan reads options as attributes.
    An option the mapping leaves out takes the field's `unset` value (None unless opt() names one);
    an object of `schema` is returned as it is."""
    if isinstance(values, schema):
        return values
    assert isinstance(values, Mapping), values
    check_options(schema, values, where)
    hints = _hints(cast(type, schema))
    kwargs = {}
    for f in dataclasses.fields(cast(Any, schema)):
        key = _FIELD_ALIASES.get(f.name, f.name)
        value = _plain(values[key]) if key in values else f.metadata["unset"]
        nested = _options_class(hints[f.name])
        if nested is not None and isinstance(value, Mapping):
            value = typed(nested, value, f"{where}{key}.")
        kwargs[f.name] = value
    return schema(**kwargs)


def check_options(schema: type, values: Mapping[str, Any], where: str = "") -> None:
    """Refuse an option `schema` does not have, and a value of the wrong type or out of range."""
    known = {_FIELD_ALIASES.get(f.name, f.name) for f in dataclasses.fields(cast(Any, schema))}
    unknown = sorted(str(k) for k in values if k not in known and k != "defaults")  # defaults: a preset's, read as is
    if unknown:
        group = where.rstrip(".") or schema.__name__
        raise BonError(f"{group} has no option {', '.join(unknown)}; valid options: {', '.join(sorted(known))}")
    _check_fields(schema, values, where)


def load(group: str, values: Mapping[str, Any]) -> Any:
    """The options of config group `group` as the schema object of its kind or name (generator=deepseek:
    LLMGenerator). The caller has refused an unknown kind or name, naming the valid ones."""
    selector, schemas = GROUPS[group]
    return typed(schemas[values.get(selector) if selector else None], values, f"{group}.")


def as_dict(options: Any) -> dict[str, Any]:
    """A schema object as its config mapping (option names as in conf/, e.g. `lambda`), for what is written
    out or crosses a process boundary."""
    return {_FIELD_ALIASES.get(k, k): v for k, v in dataclasses.asdict(options).items()}


def _options_class(hint: Any) -> type | None:
    """The dataclass of a nested options group (Optional[Helper] -> Helper), else None."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    return args[0] if isinstance(args[0], type) and dataclasses.is_dataclass(args[0]) else None


def _plain(value: Any) -> Any:
    """OmegaConf's containers as plain lists and dicts (a library caller may pass a DictConfig's part)."""
    from omegaconf import Container, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, Container) else value


# --------------------------------------------------------------------------- Hydra structured configs

# conf/<group>/<preset>.yaml extends schema/<group>/<kind or name> (`defaults: [/schema/...@_here_, _self_]`);
# a group of its own, so `generator=...` still lists only the presets
HYDRA_GROUPS = ("generator", "judge", "dataset")


def _hydra_type(hint: Any) -> Any:
    """The type Hydra checks a field against: int and list; every other field is Any to Hydra.

    OmegaConf refuses a wrong int or list, but converts the other scalars rather than refusing
    them (120 -> 120.0 for a float, 123 -> '123' for a string, 'yes' -> True for a bool): that would
    change saved configs and cache keys, and let through values check() refuses. An Optional[dict]
    that is null cannot be overridden with a mapping in OmegaConf 2.3 (`generator.prices={...}`).
    """
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) is Union and type(None) in args
    base = next(a for a in args if a is not type(None)) if optional else hint
    if base not in (int, list):
        return Any
    return Optional[base] if optional else base


@functools.cache
def _hints(schema: type) -> dict[str, Any]:
    """A schema's field types, evaluated once: every check and every typed group reads them."""
    return typing.get_type_hints(schema)


def _hydra_schema(schema: type) -> type:
    """`schema` as Hydra sees it (bon.config.<Name>Schema, importable so a composed config pickles)."""
    hints = _hints(schema)
    fields = [(f.name, _hydra_type(hints[f.name]), field(default="???"))
              for f in dataclasses.fields(schema) if f.metadata["in_presets"]]
    node = dataclasses.make_dataclass(f"{schema.__name__}Schema", fields)
    node.__module__ = __name__
    globals()[node.__name__] = node
    return node


# Hydra's schema -> the class check() uses, to say Hydra's refusals in check()'s words
_HYDRA_SCHEMAS: dict[type, type] = {}


def __getattr__(name: str) -> Any:
    """bon.config.<Name>Schema for a process that unpickles a composed config (a launcher's job) before
    anything there called conf_dir()."""
    if name.endswith("Schema") and not _HYDRA_SCHEMAS:
        register_schemas()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_schemas() -> None:
    """Register the schemas of HYDRA_GROUPS with Hydra's ConfigStore (conf_dir() does, once per process, so code
    that only reads typed options, e.g. `from bon.api import ...`, does not import Hydra)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group in HYDRA_GROUPS:
        for name, schema in GROUPS[group][1].items():
            node = next((h for h, s in _HYDRA_SCHEMAS.items() if s is schema), None) or _hydra_schema(schema)
            _HYDRA_SCHEMAS[node] = schema
            store.store(group=f"schema/{group}", name=str(name), node=node)



def check(cfg: Mapping[str, Any]) -> None:
    """Refuse a config value of the wrong type or out of range, naming the option (e.g. generator.n)."""
    _check_fields(RunOptions, cfg, "")
    for group, (selector, schemas) in GROUPS.items():
        values = cfg.get(group)
        if values is None:
            continue
        schema = schemas.get(values.get(selector) if selector else None)
        if schema is not None:  # an unknown kind or name gets its own error, listing the valid ones
            _check_fields(schema, values, f"{group}.")


def _check_fields(schema: type, values: Mapping[str, Any], prefix: str) -> None:
    hints = _hints(schema)
    for f in dataclasses.fields(schema):
        key = _FIELD_ALIASES.get(f.name, f.name)
        if key in values:
            _check_value(prefix + key, values[key], hints[f.name], f.metadata)


def _check_value(option: str, value: Any, hint: Any, meta: Mapping[str, Any]) -> None:
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) is Union and type(None) in args
    if optional:
        if value is None:
            return
        hint = next(a for a in args if a is not type(None))
    elif value is None:
        raise BonError(f"{option} must be set ({_describe(hint, meta)}), got null")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):  # a nested options group
        if not isinstance(value, Mapping):
            raise BonError(f"{option} must be a mapping of options, got {value!r}")
        _check_fields(hint, value, option + ".")
        return
    if not _is_instance(value, typing.get_origin(hint) or hint):
        raise BonError(f"{option} must be {_describe(hint, meta)}, got {value!r}")
    choices = meta.get("choices")
    if choices and value not in choices:
        raise BonError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    for bound, limit in meta.get("bounds", {}).items():
        if not _BOUND_TESTS[bound](value, limit):
            raise BonError(f"{option} must be {_describe(hint, meta)}, got {value!r}")


def _is_instance(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, (int, float))
    if kind in (list, dict):  # OmegaConf containers count, as do plain ones
        from omegaconf import DictConfig, ListConfig

        return isinstance(value, (kind, ListConfig if kind is list else DictConfig))
    return isinstance(value, kind)


_BOUND_TESTS = {"ge": lambda v, x: v >= x, "gt": lambda v, x: v > x, "le": lambda v, x: v <= x,
                "lt": lambda v, x: v < x}
_BOUND_WORDS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<"}
_KIND_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a mapping"}


def _describe(hint: Any, meta: Mapping[str, Any]) -> str:
    words = _KIND_WORDS.get(typing.get_origin(hint) or hint, str(hint))
    bounds = meta.get("bounds") or {}
    if bounds:
        words += " " + " and ".join(f"{_BOUND_WORDS[b]} {x:g}" for b, x in bounds.items())
    return words


# --------------------------------------------------------------------------- Hydra's own errors


def explain_composition_error(exc: BaseException) -> str | None:
    """One line for an error Hydra raises while composing the config (None: not such an error).

    Hydra prints these as many lines (a YAML syntax error as ~90, a `defaults:` list that includes
    itself as a 180 KB RecursionError); the user needs the file and line or the option.
    """
    import yaml
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, yaml.YAMLError):
        return _yaml_message(exc)
    if isinstance(exc, RecursionError):
        cycle = _recursing_config(exc)
        if cycle is None:
            return None
        return (f"config {cycle}.yaml: its `defaults:` list includes itself (directly or through another config), "
                f"so Hydra cannot compose it; remove that entry")
    if isinstance(exc, ValueError) and _raised_last_in(exc, "_run_hydra"):  # Hydra's own flags, e.g. -m with --cfg
        return f"{exc} (see --hydra-help)"
    if isinstance(exc, RuntimeError) and 'Could not detect "srun"' in str(exc):  # submitit's SLURM executor
        return ("hydra/launcher=slurm: SLURM's srun is not on this machine's PATH; submit the sweep from a node of "
                "the cluster, or run it here with hydra/launcher=local_parallel or hydra/launcher=submitit_local")
    if type(exc).__name__ in ("UncompletedJobError", "FailedJobError") and type(exc).__module__.startswith("submitit"):
        return _stopped_job(str(exc))
    if isinstance(exc, OmegaConfBaseException):
        unset = re.search(r"Environment variable '([^']+)' not found", str(exc))
        if unset is not None:
            return _unset_variable(unset.group(1), getattr(exc, "full_key", None))
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        typed = _schema_refusal(exc)
        if typed is not None:
            return typed
        text = str(exc)
        cause = exc.__cause__
        if isinstance(cause, yaml.YAMLError):
            return _yaml_message(cause)
        if isinstance(cause, OmegaConfBaseException) and str(cause).split("\n")[0] not in text:
            text += "; " + str(cause).split("\n")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        text = "; ".join(line.rstrip(".") for line in _join_choices(lines))
        return text.replace("\t", "")
    return None


def _stopped_job(text: str) -> str | None:
    """A job of a submitit sweep (hydra/launcher=slurm, submitit_local) that stopped on a user error: its one
    line and where its logs are. A crash (no `error:` line) keeps submitit's message, with the job's traceback."""
    said = next((line for line in text.splitlines() if line.startswith("error: ")), None)
    if said is None:
        return None
    logs = re.search(r"(\S*/\.submitit/[^/\s]+)/", text)
    return f"a job of the sweep stopped{f' (logs: {logs.group(1)})' if logs else ''}: {said[len('error: '):]}"


def _unset_variable(variable: str, option: str | None) -> str:
    """A config value read with ${oc.env:VARIABLE} (no default) whose variable is not set, e.g. the SLURM
    partition of conf/hydra/launcher/slurm.yaml: name the variable and the option that can be given instead."""
    option = option or _option_reading(variable)
    if option is None:
        return f"environment variable {variable} is not set (a config value reads it); set it"
    return f"{option}: environment variable {variable} is not set; set it, or give {option}=... on the command line"


def _option_reading(variable: str) -> str | None:
    """The option whose shipped preset reads $variable (Hydra does not say which when a launcher's does)."""
    root = Path(conf_dir())
    reads = re.compile(rf"^(\w+):\s*\$\{{oc\.env:{re.escape(variable)}\}}", re.MULTILINE)
    for path in sorted(root.rglob("*.yaml")):
        text = path.read_text()
        key = reads.search(text)
        if key is not None:
            package = re.search(r"^# @package (\S+)", text, re.MULTILINE)
            prefix = package.group(1) if package else ".".join(path.relative_to(root).parent.parts)
            return f"{prefix}.{key.group(1)}" if prefix else key.group(1)
    return None


def _schema_refusal(exc: BaseException) -> str | None:
    """A value Hydra's schema refused (an override, or a preset of the user's), in check()'s words."""
    from omegaconf.errors import ValidationError

    refusal = next((e for e in (exc, exc.__cause__, exc.__context__) if isinstance(e, ValidationError)), None)
    object_type = getattr(refusal, "object_type", None)
    schema = _HYDRA_SCHEMAS.get(object_type) if isinstance(object_type, type) else None
    if refusal is None or schema is None or not refusal.key:
        return None
    fields = {f.name: f for f in dataclasses.fields(schema)}
    if refusal.key not in fields:
        return None
    try:
        _check_value(str(refusal.full_key), refusal.value, _hints(schema)[refusal.key],
                     fields[refusal.key].metadata)
    except BonError as error:
        where = re.match(r"In '([^']+)':", str(exc))  # a value in a config file, not on the command line
        return f"config {where.group(1)}.yaml: {error}" if where else str(error)
    return None


def _join_choices(lines: list[str]) -> list[str]:
    """Hydra's 'Available options in X:' followed by one option per line -> one phrase."""
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Available options in"):
            options = []
            i += 1
            while i < len(lines) and " " not in lines[i] and not lines[i].endswith(":"):
                options.append(lines[i])
                i += 1
            out.append(f"{line.rstrip(':')}: {', '.join(options)}")
            continue
        if line.startswith("Config search path") or line.startswith("provider="):
            i += 1
            continue
        out.append(line)
        i += 1
    return out


def _yaml_message(exc: Any) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"{mark.name}:{mark.line + 1}" if mark is not None else "a config file"
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and start is not None and mark is not None and start.line != mark.line:
        context += f" that starts on line {start.line + 1}"
    return f"{where}: YAML syntax error: {problem}" + (f" ({context})" if context else "")


def _recursing_config(exc: RecursionError) -> str | None:
    """The config whose defaults recurse, read off the frames of Hydra's defaults-tree builder."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "_create_defaults_tree_impl":
            root = frame.f_locals.get("root")
            node = getattr(root, "node", None)
            path = node.get_config_path() if node is not None and hasattr(node, "get_config_path") else None
            if path:
                last = path
        tb = tb.tb_next
    return last


_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.IGNORECASE)  # scheme://user:password@


class RunStarted(threading.Event):
    """The `started` flag of hydra_command, set by the task function once Hydra has made the run directory.

    A launcher that runs jobs in other processes (joblib, submitit: conf/hydra/launcher/) pickles the task
    function with the globals it uses; a plain threading.Event cannot be pickled, this one arrives as a new,
    unset flag.
    """

    def __reduce__(self) -> tuple[type[RunStarted], tuple[()]]:
        return (RunStarted, ())


def hydra_command(hydra_main: Callable[[], Any], started: threading.Event) -> None:
    """Run a `@hydra.main` entry point as a bon command: every error a user can fix is one line, exit 2.

    Hydra prints its own errors over many lines, or as a traceback; with HYDRA_FULL_ERROR set it
    raises them instead, so they can be said in one line here. `started` is set by the task
    function: an OSError before it is Hydra failing to create or write the run directory. A user who
    sets HYDRA_FULL_ERROR themselves gets Hydra's full output, as they asked.
    """
    from bon.errors import JobStopped, command, fail, leave, stdout_gone

    secret = next((arg for arg in sys.argv[1:] if _URL_PASSWORD.search(arg)), None)
    if secret is not None:  # Hydra saves every override in .hydra/overrides.yaml before bon runs
        option = secret.split("=", 1)[0]
        fail(f"{option}: a password in a URL would be saved in the run's .hydra/overrides.yaml; leave it out of the "
             f"URL and set it in the environment (for cache.url: $BON_REDIS_PASSWORD)")
    ours = "HYDRA_FULL_ERROR" not in os.environ
    if ours:
        os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        with _mode_from_the_command_line(), _each_job_composed_once():
            command(hydra_main)()
    except BrokenPipeError:  # stdout closed early, e.g. `--help | head`: nothing more to say
        stdout_gone()
    except Exception as exc:
        if not ours:
            raise
        if isinstance(exc, JobStopped):  # a job's own line, with its logs and exit code
            leave(f"error: a job of the sweep stopped (logs: {exc.logs}): {exc.line.removeprefix('error: ')}",
                  exc.code)
        message = explain_composition_error(exc)
        if message is None and isinstance(exc, OSError) and not started.is_set() and _raised_in(exc, "run_job"):
            where = f"{exc.filename}: " if exc.filename else ""
            reason = "a file is in the way" if exc.errno in (errno.EEXIST, errno.ENOTDIR) else exc.strerror or exc
            message = (f"cannot create or write the run directory ({where}{reason}); "
                       f"set hydra.run.dir (hydra.sweep.dir with -m) to a writable directory")
        if message is None:
            raise
        fail(message)
    finally:
        if ours:
            os.environ.pop("HYDRA_FULL_ERROR", None)


@contextlib.contextmanager
def _mode_from_the_command_line() -> Iterator[None]:
    """Hydra composes the whole config twice per command: once only to read `hydra.mode` (a third of a
    replay run's time). bon's configs never set it, so unless the command line mentions it or points at
    other config directories, the mode is what `-m` says and the first composition is skipped: Hydra's
    get_mode then answers None, as it does after composing a config that leaves hydra.mode unset."""
    argv = sys.argv[1:]
    if any("hydra.mode" in a or a.startswith(("--config-dir", "-cd", "--config-path", "-cp", "hydra.searchpath",
                                              "+hydra.searchpath")) for a in argv):
        yield
        return
    from hydra._internal.hydra import Hydra

    original = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        Hydra.get_mode = original  # type: ignore[method-assign]


@contextlib.contextmanager
def _each_job_composed_once() -> Iterator[None]:
    """Hydra's sweeper composes every job's config to check a batch before launching it, then the launcher
    composes each one again (~0.1 s a job: 6 s of a 56-job sweep). Here the launcher gets the config the
    check composed, each at most once (a sweep may list a job twice), with the master config's resolver
    cache copied over again as Hydra's own composition does, so ${now:...} in a job is the sweep's time.
    A launcher that composes in another process, or a sweeper that checks nothing, composes as before."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.plugins.sweeper import Sweeper
    from omegaconf import OmegaConf

    checked: dict[tuple[int, tuple[str, ...]], list[Any]] = {}
    compose, check = ConfigLoaderImpl.load_sweep_config, Sweeper.validate_batch_is_legal

    def check_batch(self: Any, batch: Any) -> None:
        loader = self.hydra_context.config_loader if getattr(self, "hydra_context", None) else self.config_loader
        for overrides in batch:
            config = compose(loader, self.config, list(overrides))
            checked.setdefault((id(self.config), tuple(overrides)), []).append(config)

    def load_sweep_config(self: Any, master_config: Any, sweep_overrides: list[str]) -> Any:
        ready = checked.get((id(master_config), tuple(sweep_overrides)))
        if not ready:
            return compose(self, master_config, sweep_overrides)
        config = ready.pop(0)
        OmegaConf.copy_cache(from_config=master_config, to_config=config)
        return config

    Sweeper.validate_batch_is_legal = check_batch  # type: ignore[method-assign]
    ConfigLoaderImpl.load_sweep_config = load_sweep_config  # type: ignore[method-assign]
    try:
        yield
    finally:
        Sweeper.validate_batch_is_legal = check  # type: ignore[method-assign]
        ConfigLoaderImpl.load_sweep_config = compose  # type: ignore[method-assign]
        checked.clear()


def _raised_last_in(exc: BaseException, function: str) -> bool:
    """True when `function` raised `exc` itself (the innermost frame of its traceback)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == function


def _raised_in(exc: BaseException, function: str) -> bool:
    """True when `function` (e.g. Hydra's run_job, which makes the run directory) is on the traceback."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == function:
            return True
        tb = tb.tb_next
    return False

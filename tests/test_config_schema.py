"""The Hydra structured configs (bon.config's schemas registered with the ConfigStore) type the composed
config without changing it: every shipped preset composes to exactly what its YAML alone gives, and a
wrong int or container is refused while composing, in one line naming the option.
"""
from __future__ import annotations

import contextlib
import json
import pickle
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import bon.datasets  # noqa: F401 - registers the bon_default_dataset resolver conf/config.yaml uses
from bon import config

CONF = Path(config.conf_dir())

# Compositions compared whole (typed vs YAML only): the default, a live generator (the judge follows it),
# every dataset (datasets override the generator and judge), and the combinations the tests and README use.
# Each preset's own values are compared with its schema, without Hydra, in test_each_preset_passes_its_schema.
OVERRIDE_SETS: list[tuple[str, ...]] = [
    (),
    ("generator=deepseek",),
    *[(f"dataset={p.stem}",) for p in sorted((CONF / "dataset").glob("*.yaml"))],
    ("generator=local", "dataset=tasks", "intervention=prm"),
    ("dataset=agentprocessbench", "judge=deepseek", "dataset.subset=gaia_dev"),
    ("dataset=agentprocessbench", "judge=human"),
    ("generator=replay", "dataset=tasks", "generator.path=t.jsonl", "dataset.path=t.jsonl"),
    ("generator=deepseek", "generator.n=8", "generator.temperature=1", "generator.timeout=60",
     "generator.tools=[python,final_answer]", "+generator.extra=1", "dataset=tasks", "+dataset.system_prompt=hi"),
    ("generator=local", "judge=local", "judge.samples=3", "generator.models=[a/b,{model: c/d}]",
     "generator.prices={input_per_mtok: 1.0, output_per_mtok: 2}", "judge.prices={input_per_mtok: 1}",
     "dataset.task_ids=[bon-01]", "dataset.n_tasks=3"),
    ("generator=local", "judge=sim", "judge.confusion=[[1,0,0],[0,1,0],[0,0,1]]", "dataset=sim",
     "+dataset.profiles.tau2.task_alpha=2"),
    ("dataset=rehac", "judge=deepseek"),
]
TYPED_PRESETS = [p for group in config.HYDRA_GROUPS for p in sorted((CONF / group).glob("*.yaml"))]


def composed(config_name: str, overrides: tuple[str, ...]) -> dict:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    container = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(container, dict)
    return container


@contextlib.contextmanager
def yaml_only() -> Iterator[None]:
    """Hydra composing conf/ as if no schema were registered: each schema/<group>/<name> an empty config."""
    store = ConfigStore.instance()
    for group in config.HYDRA_GROUPS:
        for name in config.GROUPS[group][1]:
            store.store(group=f"schema/{group}", name=str(name), node={})
    try:
        yield
    finally:
        config.register_schemas()


def exact(value: dict) -> str:
    """Keys in order and values with their types (120 and 120.0, 1 and True differ)."""
    return json.dumps(value, ensure_ascii=False)


@pytest.mark.parametrize("config_name, overrides",
                         [("config", o) for o in OVERRIDE_SETS] + [("prm_eval", ()), ("prm_eval", ("judge=deepseek",))])
def test_schemas_type_the_config_without_changing_it(config_name, overrides):
    typed = composed(config_name, overrides)
    with yaml_only():
        plain = composed(config_name, overrides)
    assert exact(typed) == exact(plain)


@pytest.mark.parametrize("path", TYPED_PRESETS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_each_preset_passes_its_schema_unchanged(path):
    """What Hydra does with a preset that extends its schema (merge its values into the schema's node),
    without composing: every value keeps its type and order (120 stays an int, 1e3 a float, '5' a string)."""
    values = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    assert isinstance(values, dict)
    schema = [d for d in values.pop("defaults", []) if isinstance(d, str) and d.startswith("/schema/")]
    if not schema:  # a preset of a kind without a schema (test_every_preset_extends_its_schema... says which)
        return
    group, name = schema[0][len("/schema/"):].split("@")[0].split("/")
    node = ConfigStore.instance().repo["schema"][group][f"{name}.yaml"].node
    assert exact(OmegaConf.to_container(OmegaConf.merge(node, values), resolve=False)) == exact(values)


def test_compositions_are_typed_by_the_schemas():
    """The comparison above is not vacuous: the shipped presets do compose into Hydra's typed nodes."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=["generator=deepseek", "judge=sim", "dataset=builtin"])
    typed = {group: OmegaConf.get_type(cfg[group]) for group in config.HYDRA_GROUPS}
    assert {g: t.__name__ for g, t in typed.items() if t is not None} == {
        "generator": "LLMGeneratorSchema", "judge": "SimJudgeSchema", "dataset": "BuiltinDatasetSchema"}
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # e.g. for a process-based Hydra launcher


def test_every_preset_extends_its_schema_and_sets_all_of_its_fields():
    """A schema field a preset leaves out would be "???" in the composed config (code reading
    cfg.get(key) would see it instead of None), so each preset sets every field of the schema it extends."""
    store = ConfigStore.instance().repo["schema"]
    extended = 0
    for group in config.HYDRA_GROUPS:
        selector, schemas = config.GROUPS[group]
        for path in sorted((CONF / group).glob("*.yaml")):
            values = yaml.safe_load(path.read_text())
            defaults = values.pop("defaults", [])
            name = values.get(selector)
            if name not in schemas:
                assert not any("/schema/" in str(d) for d in defaults), path
                continue
            assert f"/schema/{group}/{name}@_here_" in defaults, f"{path}: does not extend its schema"
            assert defaults.index(f"/schema/{group}/{name}@_here_") < defaults.index("_self_"), path
            node = store[group][f"{name}.yaml"].node
            assert list(node) == list(values), f"{path}: keys differ from schema/{group}/{name}"
            extended += 1
    assert extended >= 19


def test_options_left_out_of_presets_are_still_checked():
    """dataset.system_prompt is not in conf/dataset/tasks.yaml (so not in Hydra's schema), yet a value added
    with `+dataset.system_prompt=` is typed by check()."""
    with pytest.raises(config.BonError, match=r"dataset.system_prompt must be a string, got 5"):
        config.check({"dataset": {"name": "tasks", "system_prompt": 5}})


@pytest.mark.parametrize("overrides, message", [
    (["generator.n=abc"], "generator.n must be an integer >= 1, got 'abc'"),
    (["generator.n=2.5"], "generator.n must be an integer >= 1, got 2.5"),
    (["generator=deepseek", "generator.n=abc"], "generator.n must be an integer >= 1, got 'abc'"),
    (["generator=deepseek", "generator.n=2.5"], "generator.n must be an integer >= 1, got 2.5"),
    (["generator=deepseek", "generator.n=null"], "generator.n must be set (an integer >= 1), got null"),
    (["generator=local", "generator.tools=python"], "generator.tools must be a list, got 'python'"),
    (["dataset.n_tasks=1.5"], "dataset.n_tasks must be an integer >= 1, got 1.5"),
    (["generator=local", "judge.max_chars=many"], "judge.max_chars must be an integer >= 1, got 'many'"),
])
def test_hydra_refuses_a_wrong_int_or_list_in_check_words(overrides, message):
    with pytest.raises(ConfigCompositionException) as caught:
        composed("config", tuple(overrides))
    assert config.explain_composition_error(caught.value) == message


def test_a_user_preset_extending_a_schema_gets_one_line_naming_its_file(tmp_path):
    """A preset of one's own may extend bon's schema too; a wrong value in it names the file and option."""
    (tmp_path / "generator").mkdir()
    (tmp_path / "generator" / "mine.yaml").write_text(
        "defaults:\n  - deepseek\n  - _self_\nn: lots\n")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        with pytest.raises(ConfigCompositionException) as caught:
            compose("config", overrides=[f"hydra.searchpath=[file://{tmp_path}]", "generator=mine", "judge=deepseek"])
    message = config.explain_composition_error(caught.value)
    assert message is not None and "\n" not in message
    assert "generator/mine" in message and "generator.n must be an integer >= 1, got 'lots'" in message

"""bon.compose_speed: config files parsed by libyaml read exactly as OmegaConf's own pure-Python loader
reads them, a file with a syntax error gets the message it always got, and compositions that share
Hydra's ConfigStore (instead of each copying it) do not leak into one another."""
from __future__ import annotations

import io
from pathlib import Path

import hydra
import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf, _utils

from bon import config

CONF = Path(config.conf_dir())  # installs the loader, as every command does before composing


def loaders() -> tuple[type, type]:
    installed = _utils.get_yaml_loader
    assert hasattr(installed, "python_loader"), "bon.config.conf_dir() did not install the libyaml loader"
    return installed.python_loader, installed()


@pytest.mark.parametrize("root", [CONF, Path(hydra.__file__).parent], ids=["bon", "hydra"])
def test_every_shipped_config_reads_the_same(root: Path) -> None:
    python, libyaml = loaders()
    files = sorted(root.rglob("*.yaml"))
    assert len(files) >= 20
    for path in files:
        text = path.read_text()
        expected = yaml.load(text, Loader=python)
        got = yaml.load(text, Loader=libyaml)
        assert got == expected and repr(got) == repr(expected), path  # repr: 1 vs 1.0 vs True stay apart


def test_omegaconf_rules_hold() -> None:
    """OmegaConf's own rules, not PyYAML's defaults: 1e3 is a float, a date stays a string, keys are unique."""
    text = "a: 1e3\nb: 2024-01-05\nc: .inf\nd: 0o17\ne: yes\nf: ~\n"
    assert OmegaConf.to_container(OmegaConf.create(text)) == {
        "a": 1000.0, "b": "2024-01-05", "c": float("inf"), "d": "0o17", "e": True, "f": None}
    assert yaml.load(text, Loader=loaders()[0]) == yaml.load(text, Loader=loaders()[1])


@pytest.mark.parametrize("text, message", [
    ("name: x\n  rank: [pos_ratio]\n", "mapping values are not allowed here"),
    ("a:\n\t- b\n", "found character '\\t' that cannot start any token"),
    ("a: *nope\n", "found undefined alias 'nope'"),
    ("a: 1\nb: 2\na: 3\n", "found duplicate key a"),
])
def test_a_broken_file_gets_the_pure_python_message_with_its_name_and_line(tmp_path: Path, text: str,
                                                                          message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(yaml.YAMLError) as caught:
        OmegaConf.load(path)
    assert message in str(caught.value) and str(path) in str(caught.value)
    stream = io.StringIO(text)
    stream.name = str(path)
    with pytest.raises(yaml.YAMLError) as by_python:
        yaml.load(stream, Loader=loaders()[0])
    assert str(caught.value) == str(by_python.value)


def test_compositions_sharing_the_config_store_do_not_leak_into_each_other() -> None:
    import bon.datasets  # noqa: F401 - registers the resolver conf/config.yaml uses

    stored = ConfigStore.instance().repo["schema"]["generator"]["llm.yaml"].node
    before = OmegaConf.to_yaml(stored)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        changed = compose("config", overrides=["generator=deepseek", "generator.n=7", "generator.temperature=0.25",
                                               "+generator.extra_body={a: 1}"])
        again = compose("config", overrides=["generator=deepseek"])
    assert (changed.generator.n, changed.generator.temperature) == (7, 0.25)
    assert (again.generator.n, again.generator.temperature) != (7, 0.25) and "extra_body" not in again.generator
    assert OmegaConf.to_yaml(stored) == before

"""The wheel must carry every subpackage and the Hydra config tree, or `pip install .` breaks bon.run."""
from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_subpackage_and_the_config_tree_are_packaged():
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "bon").rglob("__init__.py")}
    assert found | {"bon.conf"} == set(setup["packages"])
    assert setup["package-dir"]["bon.conf"] == "conf"
    assert (ROOT / "conf" / "config.yaml").is_file()
    globs = setup["package-data"]["bon.conf"]
    shipped = {p for pattern in globs for p in (ROOT / "conf").glob(pattern)}
    missing = sorted(str(p.relative_to(ROOT)) for p in set((ROOT / "conf").rglob("*.yaml")) - shipped)
    assert not missing, f"package-data of bon.conf ({globs}) leaves out {missing}"
    assert (ROOT / "conf" / "hydra" / "launcher" / "slurm.yaml") in shipped  # the cluster presets ship too


def test_every_data_file_of_the_package_ships():
    """bon/sim/profiles.yaml, the built-in tasks, the manifests: a data file left out breaks an installed bon."""
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = setup["package-data"]["bon"]
    shipped = {p for pattern in globs for p in (ROOT / "bon").glob(pattern)}
    data = {p for p in (ROOT / "bon").rglob("*") if p.is_file() and p.suffix not in (".py", ".pyc")
            and "__pycache__" not in p.parts}
    missing = sorted(str(p.relative_to(ROOT)) for p in data - shipped)
    assert not missing, f"package-data of bon ({globs}) leaves out {missing}"
    assert ROOT / "bon" / "sim" / "profiles.yaml" in shipped

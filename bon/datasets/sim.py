"""`dataset=sim`: the built-in synthetic benchmark as a candidate table (see bon.sim)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import polars as pl

from bon.errors import BonError, unknown_choice
from bon.sim import model
from bon.sim.model import JudgeModel, Profile


def profile(dataset_cfg: Mapping[str, Any]) -> Profile:
    profiles = dataset_cfg.get("profiles") or {}
    if dataset_cfg.get("subset") is not None:
        raise BonError(f"dataset=sim has profiles, not subsets: use dataset.profile={dataset_cfg['subset']} "
                       f"(valid: {', '.join(sorted(profiles))})")
    name = dataset_cfg.get("profile")
    if name not in profiles:
        raise unknown_choice("dataset.profile", name, profiles)
    return Profile.from_config(str(name), profiles[name])


def judge_model(judge_cfg: Mapping[str, Any], profile_name: str) -> JudgeModel:
    """The configured simulated judge, or one measured from a recorded judge (`judge.calibrate_from`)."""
    if judge_cfg.get("kind") != "sim":
        raise BonError(f"dataset=sim needs judge=sim (got judge kind {judge_cfg.get('kind')!r}); to imitate a "
                       f"recorded judge use judge=sim judge.calibrate_from=<judge name>")
    fields = ("confusion", "positive_bias", "orm_tpr", "orm_fpr", "orm_missing", "fail_rate")
    source = judge_cfg.get("calibrate_from")
    if source:
        from bon.datasets import agentprocessbench as apb
        from bon.datasets import locate_root
        from bon.sim.calibrate import judge_model as measured

        root = locate_root(judge_cfg.get("root"))
        if str(source).strip() == "all":  # a simulated judge imitates one recorded judge, never a blend
            raise BonError("judge.calibrate_from needs one recorded judge, not 'all'; valid choices: "
                           + ", ".join(sorted(apb.judge_dirs(root))))
        name = apb.resolve_judges(root, str(source))[0]
        subsets = [profile_name] if profile_name in apb.SUBSETS else list(apb.SUBSETS)
        base = measured(root, name, subsets)
        values = {f: getattr(base, f) for f in fields} | {"positive_bias": float(judge_cfg.get("positive_bias", 0.0))}
        return JudgeModel(name=f"sim:{name}", **values)
    if judge_cfg.get("name") not in (None, "sim"):
        raise BonError(f"judge.name={judge_cfg['name']!r} would only relabel the simulated judge; to imitate a "
                       f"recorded judge use judge.calibrate_from={judge_cfg['name']}")
    missing = [f for f in fields if judge_cfg.get(f) is None]
    if missing:
        raise BonError(f"judge=sim is missing {missing}; set them or judge.calibrate_from=<recorded judge>")
    return JudgeModel(name=str(judge_cfg.get("name") or "sim"), **{f: judge_cfg[f] for f in fields})


def candidate_table(dataset_cfg: Mapping[str, Any], generator_cfg: Mapping[str, Any],
                    judge_cfg: Mapping[str, Any], seed: int = 0) -> pl.DataFrame:
    """Generate tasks and candidates, judge them, and return the candidate table (all synthetic)."""
    if generator_cfg.get("kind") != "sim":
        raise BonError(f"dataset=sim needs generator=sim (got generator kind {generator_cfg.get('kind')!r})")
    prof = profile(dataset_cfg)
    n_tasks, n = int(dataset_cfg.get("n_tasks", 0)), int(generator_cfg.get("n", 0))
    if n_tasks < 1 or n < 1:
        raise BonError(f"dataset.n_tasks and generator.n must be at least 1 (got {n_tasks} and {n})")
    judge = judge_model(judge_cfg, prof.name)
    rng = np.random.default_rng(seed)
    trajs = model.generate(prof, model.sample_tasks(prof, n_tasks, rng), n, rng,
                           int(generator_cfg.get("wrong_answers", 3)))
    predicted, final, failed = model.judge(judge, trajs, rng)
    return model.candidate_table(trajs, predicted, final, failed, judge.name, prof.name)

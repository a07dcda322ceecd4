"""Mixed-model rollouts: the sample assignment, MixedGenerator over real HTTP, and the breakdown by model."""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json
import math
import random
import socket
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from llm_server import FAKE_KEY_ENV, Reply, llm_env_fixture, llm_server_fixture, server_error, tool_call  # noqa: F401 - pytest fixtures

from bon import candidates
from bon import tools as tool_registry
from bon.breakdown import by_model, format_by_model, pass_at_k
from bon.errors import BonError
from bon.generators.agent import AgentGenerator
from bon.generators.mixed import MixedGenerator, assign, model_configs
from bon.generators.store import load
from bon.llm import LLMClient, ResponseCache
from bon.selectors import SELECTORS, Key, Selector
from bon.types import Task

MODELS = ("openai/model-a", "openai/model-b")
TASKS = [Task("t1", "What is 6 times 7?", answer="42"), Task("t2", "What is 3 times 5?", answer="15")]

# --------------------------------------------------------------------------- assign


@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_equal_weights_are_round_robin(m):
    assert assign(17, [1.0] * m) == [s % m for s in range(17)]
    assert assign(17, [0.2] * m) == [s % m for s in range(17)]  # only the ratios matter, exactly


def test_every_prefix_follows_the_weights():
    rng = random.Random(7)
    for _ in range(200):
        weights = [rng.choice([0, 1, 2, 5, rng.random(), rng.uniform(0, 10)]) for _ in range(rng.randint(2, 6))]
        if not any(weights):
            continue
        order = assign(60, weights)
        total = sum(Fraction(w) for w in weights)
        counts = [0] * len(weights)
        for k, m in enumerate(order, 1):
            counts[m] += 1
            for i, w in enumerate(weights):
                target = k * Fraction(w) / total
                assert math.floor(target) <= counts[i] <= math.ceil(target), (weights, k, i)
        assert assign(23, weights) == order[:23]  # best-of-k on a prefix is a prefix of the same sequence


def test_a_three_to_one_mix_and_a_zero_weight():
    order = assign(8, [3, 1])
    assert (order.count(0), order.count(1)) == (6, 2) and order[0] == 0
    assert 2 not in assign(20, [1, 1, 0]) and assign(4, [0, 2]) == [1, 1, 1, 1]


@pytest.mark.parametrize("weights,words", [
    ([1, -1], ">= 0"), ([0, 0], "all zero"), ([], "none"), ([1, float("nan")], "finite"), ([1, "2"], "finite"), (3, "a list"), ("3,1", "a list"),
])
def test_bad_weights_are_one_line_errors_naming_the_option(weights, words):
    with pytest.raises(BonError, match="generator.mix") as err:
        assign(4, weights)
    assert words in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- MixedGenerator over HTTP


def by_model_name(body: dict) -> Reply:
    """model-a answers right, model-b wrong: the answer shows which model drew a sample."""
    return tool_call("final_answer", {"answer": "right" if body["model"] == "model-a" else "wrong"})


def make_mixed(base_url: str, n: int, weights=None, *, concurrency: int = 4, seed: int = 100,
               client_kw: dict | None = None) -> MixedGenerator:
    generators = []
    for model in MODELS:
        kw = {"api_key_env": FAKE_KEY_ENV, "backoff_base_s": 0.01, "timeout": 5.0, "max_attempts": 1,
              **((client_kw or {}).get(model, {}))}
        client = LLMClient(model, api_base=kw.pop("api_base", base_url), **kw)
        generators.append(AgentGenerator(client, tool_registry.get(["final_answer"]), seed=seed, temperature=0.5,
                                         max_steps=3, concurrency=concurrency,
                                         score=lambda task, answer: answer == "right"))
    return MixedGenerator(generators, n=n, weights=weights)


def run_all(mixed: MixedGenerator, tasks=TASKS, **kw):
    async def go():
        try:
            return await mixed.generate_all(tasks, **kw)
        finally:
            await mixed.aclose()
            for client in mixed.client.clients:
                await client.aclose()
    return asyncio.run(go())


@pytest.mark.usefixtures("llm_env")
def test_samples_go_to_their_assigned_model_with_distinct_seeds_and_resume(llm_server, tmp_path, capsys):
    llm_server.responder = by_model_name
    store = tmp_path / "trajectories.jsonl"
    weights = [2, 1]
    order = assign(6, weights)
    trajs = run_all(make_mixed(llm_server.base_url, 6, weights), store=store, progress=True)

    assert [(t.task_id, t.sample) for t in trajs] == [(t.id, s) for t in TASKS for s in range(6)]
    for t in trajs:
        assert t.metadata["model"] == MODELS[order[t.sample]]
        assert t.answer == ("right" if order[t.sample] == 0 else "wrong") and t.success == (order[t.sample] == 0)
        assert t.metadata["seed"] == 100 + t.sample  # the global sample index: seeds differ across models
    wire = sorted((r.body["messages"][1]["content"], r.body["model"], r.body["seed"]) for r in llm_server.requests)
    expected = sorted((t.question, MODELS[order[s]].split("/")[1], 100 + s) for t in TASKS for s in range(6))
    assert wire == expected  # one request per sample, each to its model, each with its own seed
    assert "generate openai/model-a + openai/model-b" in capsys.readouterr().err  # the bar names the mixture

    lines = [json.loads(line) for line in store.read_text().splitlines()]
    assert sorted((r["task_id"], r["sample"], r["metadata"]["model"]) for r in lines) == sorted(
        (t.id, s, MODELS[order[s]]) for t in TASKS for s in range(6))

    llm_server.reset()
    again_gen = make_mixed(llm_server.base_url, 6, weights)
    assert again_gen.todo(TASKS, load(store)) == []
    again = run_all(again_gen, store=store, progress=False)
    assert llm_server.count == 0  # everything came from the store
    assert [(t.task_id, t.sample, t.messages, t.metadata["model"]) for t in again] == \
        [(t.task_id, t.sample, t.messages, t.metadata["model"]) for t in trajs]


@pytest.mark.usefixtures("llm_env")
def test_a_failed_sample_is_generated_again_by_the_same_model(llm_server, tmp_path):
    down = {"model-b": True}

    def flaky(body: dict) -> Reply:
        if body["model"] == "model-b" and down["model-b"]:
            return server_error(500)
        return by_model_name(body)

    llm_server.responder = flaky
    store = tmp_path / "trajectories.jsonl"
    first = run_all(make_mixed(llm_server.base_url, 4), tasks=TASKS[:1], store=store, progress=False)
    assert [t.metadata["stop_reason"] for t in first] == ["answer", "error", "answer", "error"]  # b draws 1 and 3

    down["model-b"] = False
    llm_server.reset()
    second = run_all(make_mixed(llm_server.base_url, 4), tasks=TASKS[:1], store=store, progress=False)
    assert sorted((r.body["model"], r.body["seed"]) for r in llm_server.requests) == [("model-b", 101),
                                                                                     ("model-b", 103)]
    assert [t.answer for t in second] == ["right", "wrong", "right", "wrong"]


@pytest.mark.usefixtures("llm_env")
def test_a_dead_endpoint_for_one_model_stops_the_run_with_one_line(llm_server, tmp_path):
    llm_server.responder = by_model_name
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    mixed = make_mixed(llm_server.base_url, 2, concurrency=1,
                       client_kw={MODELS[1]: {"api_base": dead, "breaker_after": 1}})
    with pytest.raises(BonError, match="never answered") as err:
        run_all(mixed, tasks=TASKS[:1], store=tmp_path / "t.jsonl", progress=False)
    assert "\n" not in str(err.value)


@pytest.mark.usefixtures("llm_env")
def test_each_model_has_its_own_trajectory_limit(llm_server):
    llm_server.responder = by_model_name
    llm_server.latency = 0.1
    run_all(make_mixed(llm_server.base_url, 8, concurrency=1), tasks=TASKS[:1], progress=False)
    assert llm_server.count == 8 and llm_server.max_in_flight == 2  # one trajectory per model at a time


@pytest.mark.usefixtures("llm_env")
def test_the_plan_and_a_changed_mix_follow_the_assignment(llm_server, tmp_path, caplog):
    llm_server.responder = by_model_name
    cache = ResponseCache(cache_dir=tmp_path / "cache")
    store = tmp_path / "trajectories.jsonl"
    kw = {"client_kw": {m: {"cache": cache} for m in MODELS}}
    run_all(make_mixed(llm_server.base_url, 3, [2, 1], **kw), tasks=TASKS[:1], store=store, progress=False)

    async def cached(mixed: MixedGenerator) -> list[bool]:
        return [await mixed.first_call_cached(TASKS[0], s) for s in range(3)]
    assert asyncio.run(cached(make_mixed(llm_server.base_url, 3, [2, 1], **kw))) == [True] * 3
    swapped = [a == b for a, b in zip(assign(3, [2, 1]), assign(3, [1, 2]))]  # [1, 2] gives b the first sample
    assert asyncio.run(cached(make_mixed(llm_server.base_url, 3, [1, 2], **kw))) == swapped

    llm_server.reset()
    again = run_all(make_mixed(llm_server.base_url, 3, [1, 2], **kw), tasks=TASKS[:1], store=store, progress=False)
    assert llm_server.count == 0 and [t.metadata["model"] for t in again] == [MODELS[m] for m in assign(3, [2, 1])]
    assert "stored sample(s) were drawn by another model" in caplog.text  # reused, and said so
    cache.close()


def test_mixed_generator_settings_are_checked():
    client = LLMClient(MODELS[0], api_base="http://127.0.0.1:9/v1")
    gen = AgentGenerator(client, tool_registry.get(["final_answer"]))
    other = AgentGenerator(LLMClient(MODELS[1], api_base="http://127.0.0.1:9/v1"), tool_registry.get(["final_answer"]))
    with pytest.raises(BonError, match="generator.mix has 3 weight"):
        MixedGenerator([gen, other], n=4, weights=[1, 1, 1])
    with pytest.raises(BonError, match="more than once"):
        MixedGenerator([gen, gen], n=4)
    with pytest.raises(BonError, match="generator.n"):
        MixedGenerator([gen, other], n=0)
    mixed = MixedGenerator([gen, other], n=5, weights=[3, 2])
    assert mixed.samples_per_model() == {MODELS[0]: 3, MODELS[1]: 2}
    assert [mixed.model_index(s) for s in range(8)] == assign(8, [3, 2])  # also beyond n


def test_model_configs_take_the_preset_and_each_entry_s_client_options():
    preset = {"kind": "llm", "model": "openai/gpt-4o-mini", "api_key_env": "OPENAI_API_KEY", "n": 4, "max_steps": 9,
              "temperature": 0.7, "models": ["openai/gpt-4.1-mini", {"model": "deepseek/deepseek-chat",
                                                                      "api_key_env": "DEEPSEEK_API_KEY", "rpm": 30}],
              "mix": [3, 1]}
    a, b = model_configs(preset)
    assert (a.kind, a.model, a.api_key_env, a.n, a.max_steps, a.temperature, a.rpm, a.models, a.mix) == (
        "llm", "openai/gpt-4.1-mini", "OPENAI_API_KEY", 4, 9, 0.7, None, None, None)
    assert b == dataclasses.replace(a, model="deepseek/deepseek-chat", api_key_env="DEEPSEEK_API_KEY", rpm=30)
    for models, words in [(None, "non-empty list"), ("openai/x", "generator.models must be a list"), ([], "non-empty list"),
                          ([{"api_base": "x"}], r"generator.models\[0\] must be"),
                          (["a", {"model": "b", "max_steps": 3}], r"generator.models\[1\] sets max_steps"),
                          (["a", {"model": "b", "rpm": 0}], r"generator.models\[1\].rpm must be an integer >= 1")]:
        with pytest.raises(BonError, match=words):
            model_configs({**preset, "models": models})


# --------------------------------------------------------------------------- breakdown by model


def table_of(rows: list[dict]) -> pl.DataFrame:
    """A candidate table from (task, sample, model, success, pos_ratio[, judge]) rows."""
    full = [{"task_id": r["task"], "subset": "s", "sample": r["sample"], "judge": r.get("judge", "j"), "n_steps": 2,
             "n_pos": 0, "n_neg": 0, "n_missing": 0, "pos_ratio": r["pos_ratio"], "first_error": None,
             "clean_prefix": 1.0, "final_pred": 1, "judge_ok": True, "answer": "x", "success": r["success"]}
            for r in rows]
    return candidates.table(full).with_columns(pl.Series("model", [r["model"] for r in rows]))


def a_right_b_wrong(judge: str, b_looks_better: bool, tasks=("t1", "t2", "t3")) -> list[dict]:
    """Per task, 5 samples: A draws 2 and is always right, B draws 3 and is always wrong."""
    rows = []
    for task in tasks:
        for s, model in enumerate("ABABB"):
            score = (0.9 if model == "B" else 0.1) if b_looks_better else (0.9 if model == "A" else 0.1)
            rows.append({"task": task, "sample": s, "model": model, "success": model == "A", "pos_ratio": score,
                         "judge": judge})
    return rows


def test_breakdown_numbers_worked_out_by_hand():
    table = table_of(a_right_b_wrong("fooled", True) + a_right_b_wrong("good", False)
                     + [{"task": "unscored", "sample": s, "model": m, "success": None, "pos_ratio": 0.5, "judge": j}
                        for j in ("fooled", "good") for s, m in enumerate("AB")])
    rows = {(r["judge"], r["model"]): r for r in by_model(table, SELECTORS["pos_ratio"])}
    assert set(rows) == {(j, m) for j in ("fooled", "good") for m in ("A", "B", "mixture")}
    for judge in ("fooled", "good"):
        a, b, mix = rows[(judge, "A")], rows[(judge, "B")], rows[(judge, "mixture")]
        assert all(r["n_tasks"] == 3 for r in (a, b, mix))  # the task without a reference is left out
        assert (a["n_per_task"], b["n_per_task"], mix["n_per_task"]) == (2, 3, 5)
        assert (a["mean_success"], a["pass_at_n"], a["accuracy"], a["accuracy_expected"]) == (1, 1, 1, 1)
        assert (b["mean_success"], b["pass_at_n"], b["accuracy"], b["accuracy_expected"]) == (0, 0, 0, 0)
        assert (mix["mean_success"], mix["pass_at_n"]) == (pytest.approx(0.4), 1)
        # 2 of 5 candidates right: a random pair misses both with C(3,2)/C(5,2) = 3/10, a triple with 1/10
        assert a["mixture_pass_at_k"] == pytest.approx(0.7) and b["mixture_pass_at_k"] == pytest.approx(0.9)
    fooled_a, fooled_b = rows[("fooled", "A")], rows[("fooled", "B")]
    # preferring B, the selector is right only on a pair of two A's (1 of 10 pairs) and never on a triple
    assert fooled_a["mixture_accuracy_at_k"] == pytest.approx(0.1) and fooled_b["mixture_accuracy_at_k"] == 0
    assert fooled_a["gain"] == pytest.approx(-0.9) and rows[("fooled", "mixture")]["accuracy"] == 0
    good_a, good_b = rows[("good", "A")], rows[("good", "B")]
    # preferring A, it is right whenever an A is drawn: exactly pass@k
    assert good_a["mixture_accuracy_at_k"] == pytest.approx(0.7) and good_b["mixture_accuracy_at_k"] == pytest.approx(0.9)
    assert good_b["gain"] == pytest.approx(0.9) and rows[("good", "mixture")]["accuracy"] == 1

    printed = format_by_model(by_model(table.filter(pl.col("judge") == "good"), SELECTORS["pos_ratio"]))
    lines = printed.splitlines()
    assert lines[2].split()[:7] == ["A", "3", "2", "100.0", "100.0", "100.0", "[100.0,"]
    assert "70.0" in lines[2] and "+90.0" in lines[3] and lines[4].startswith("mixture")


def test_all_tied_the_selector_is_worth_the_mean_success():
    rows = [{**r, "pos_ratio": 0.5} for r in a_right_b_wrong("j", True)]
    out = {r["model"]: r for r in by_model(table_of(rows), SELECTORS["pos_ratio"])}
    assert out["A"]["mixture_accuracy_at_k"] == pytest.approx(0.4) == out["B"]["mixture_accuracy_at_k"]
    assert out["mixture"]["accuracy_expected"] == pytest.approx(0.4) and out["mixture"]["accuracy"] == 1  # sample 0


def brute_force(table: pl.DataFrame, selector: Selector, model: str) -> tuple[float, float, float]:
    """Mean over tasks of: the selector on the model's own candidates (tie-aware), and pass@k and the selector's
    tie-aware accuracy over every k-subset of all candidates, k = the model's count (plain Python, per task)."""
    own, passes, picks = [], [], []
    for _, part in table.group_by("task_id"):
        rows = part.sort("sample").to_dicts()
        mine = [r for r in rows if r["model"] == model]
        if not mine:
            continue
        top = selector.top_set(mine)
        own.append(np.mean([mine[i]["success"] for i in top]))
        subsets = list(itertools.combinations(rows, len(mine)))
        passes.append(np.mean([any(r["success"] for r in sub) for sub in subsets]))
        picks.append(np.mean([np.mean([sub[i]["success"] for i in selector.top_set(list(sub))]) for sub in subsets]))
    return float(np.mean(own)), float(np.mean(passes)), float(np.mean(picks))


@pytest.mark.parametrize("selector", [SELECTORS["pos_ratio"], SELECTORS["two_stage"],
                                      Selector("low_ratio", rank=(Key("pos_ratio", descending=False),))])
def test_mixture_at_k_matches_every_k_subset(selector):
    rng = random.Random(3)
    rows = []
    for t in range(25):
        n = rng.randint(3, 7)
        models = [rng.choice("ABC") for _ in range(n)]
        for s, m in enumerate(models):
            rows.append({"task": f"t{t}", "sample": s, "model": m, "success": rng.random() < {"A": .7, "B": .4, "C": .1}[m],
                         "pos_ratio": rng.choice([0.0, 0.5, 1.0])})
    table = table_of(rows).with_columns(pl.Series("final_pred", [rng.choice([1, -1, None]) for _ in rows],
                                                  dtype=pl.Int8))
    out = {r["model"]: r for r in by_model(table, selector)}
    for model in "ABC":
        own, passes, picks = brute_force(table, selector, model)
        assert out[model]["accuracy_expected"] == pytest.approx(own)
        assert out[model]["mixture_pass_at_k"] == pytest.approx(passes)
        assert out[model]["mixture_accuracy_at_k"] == pytest.approx(picks)
        assert out[model]["ci_low"] <= out[model]["accuracy_expected"] <= out[model]["ci_high"]


def test_pass_at_k_formula_against_enumeration():
    for n, c, k in [(5, 2, 2), (6, 0, 3), (6, 6, 1), (7, 3, 7), (8, 1, 4)]:
        items = [True] * c + [False] * (n - c)
        brute = np.mean([any(sub) for sub in itertools.combinations(items, k)])
        assert pass_at_k(n, c, k) == pytest.approx(brute)


def test_a_table_without_models_is_a_clear_error():
    table = table_of(a_right_b_wrong("j", True)).drop("model")
    with pytest.raises(BonError, match="`model` column"):
        by_model(table, SELECTORS["pos_ratio"])
    assert "no scored tasks" in format_by_model([])

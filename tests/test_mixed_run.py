"""`generator.models=[...]` end to end: `python -m bon.run` spreads the samples over two models on a
loopback server and reports each model alone against the mixture."""
from __future__ import annotations

import json

import polars as pl
from llm_server import FakeLLMServer, tool_call, verdict
from test_live import run_live


def two_models(body: dict) -> object:
    """model-a computes and answers 5 (right); model-b answers 6 (wrong); the judge grades by the answer."""
    messages = body["messages"]
    if body.get("tools"):
        if not any(m["role"] == "tool" for m in messages):
            return tool_call("calculator", {"expression": "2+3"})
        return tool_call("final_answer", {"answer": "5" if body["model"] == "model-a" else "6"})
    prompt = messages[-1]["content"]
    steps = [int(line[1:line.index("]")]) for line in prompt.splitlines()
             if line.startswith("[") and "] assistant" in line]
    good = '"answer": "5"' in prompt
    return verdict({s: 1 if good else -1 for s in steps}, 1 if good else -1)


def test_a_mixture_records_each_model_and_reports_it_against_the_mixture(tmp_path):
    with FakeLLMServer(two_models) as server:
        proc = run_live(tmp_path, server, "generator.models=[openai/model-a,openai/model-b]", "generator.mix=[3,1]")
        models = [r.body["model"] for r in server.requests if r.body.get("tools")]
    assert proc.returncode == 0, proc.stderr
    assert models.count("model-a") == 2 * 3 * 2 and models.count("model-b") == 2 * 1 * 2  # 2 tasks, 2 calls each
    out = tmp_path / "out"
    table = pl.read_parquet(out / "candidates.parquet")
    assert table.group_by("model").len().sort("model").rows() == [("openai/model-a", 6), ("openai/model-b", 2)]
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["model"]: r for r in summary["by_model"]}
    assert rows["openai/model-a"]["mean_success"] == 1.0 and rows["openai/model-b"]["mean_success"] == 0.0
    assert (rows["openai/model-a"]["n_per_task"], rows["openai/model-b"]["n_per_task"]) == (3, 1)
    # one of the 4 drawn from the mixture (3 right of 4) is right 3/4 of the time, model-b alone never
    assert rows["openai/model-b"]["mixture_pass_at_k"] == 0.75 and rows["openai/model-b"]["pass_at_n"] == 0.0
    by_model_usage = summary["usage"]["generation"]["by_model"]
    assert by_model_usage["openai/model-a"]["calls"] == 12 and by_model_usage["openai/model-b"]["calls"] == 4
    assert "mixture: openai/model-a draws 3 of 4, openai/model-b draws 1 of 4" in proc.stderr
    assert "openai/model-b" in proc.stdout and "mix pass@n" in proc.stdout


def test_a_bad_mixture_is_one_line(tmp_path):
    with FakeLLMServer(two_models) as server:
        proc = run_live(tmp_path, server, "generator.models=[openai/model-a,openai/model-b]", "generator.mix=[1]")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "generator.mix" in proc.stderr


def test_an_unpriced_model_of_a_mixture_is_told_to_price_its_own_entry(tmp_path):
    """`generator.prices` would price every model alike: the plan says to price the model's entry instead."""
    with FakeLLMServer(two_models) as server:
        proc = run_live(tmp_path, server, "generator.models=[openai/model-a,{model: openai/model-b, prices: "
                        "{input_per_mtok: 1, output_per_mtok: 2}}]")
    assert proc.returncode == 0, proc.stderr
    assert ("no price known for model openai/model-a: its cost is not counted, only its tokens; to count it give its "
            "entry in generator.models a price: {model: openai/model-a, prices: {input_per_mtok: <USD>, "
            "output_per_mtok: <USD>}}") in proc.stderr
    assert "model openai/model-b:" not in proc.stderr  # priced in its entry

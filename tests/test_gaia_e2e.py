"""GAIA end to end, offline: two fixture tasks in the GAIA layout, N=4 samples each, real tools.

A scripted model (the loopback OpenAI-compatible server) drives the agent through web_search,
visit_page, inspect_file and python, and answers from what the tools returned, so a broken tool
shows up as a wrong answer. A second loopback server plays the web (a SearXNG-style search API
and the pages it points to). The judge grades each transcript; selection and GAIA scoring follow.
"""
from __future__ import annotations

import json
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from commands import run_in_process
from llm_server import FakeLLMServer, tool_call, verdict

MUSEUM_PAGE = ("<html><head><title>Bon Museum</title><script>var x = 'Paris';</script></head><body>"
               "<h1>The Bon Museum</h1><p>The Bon Museum is located in <b>Lyon</b>, by the river.</p></body></html>")


class Web(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        port = self.server.server_address[1]
        if self.path.startswith("/search"):
            body = json.dumps({"results": [{"title": "Bon Museum", "url": f"http://127.0.0.1:{port}/museum",
                                            "content": "A museum of selection."}]}).encode()
            kind = "application/json"
        elif self.path == "/museum":
            body, kind = MUSEUM_PAGE.encode(), "text/html; charset=utf-8"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def web():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Web)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def tool_results(messages: list[dict]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "tool"]


def agent(body: dict):
    """Odd samples give a wrong answer; even ones answer from the tools' output."""
    messages = body["messages"]
    question = next(m["content"] for m in messages if m["role"] == "user")
    results = tool_results(messages)
    wrong = (body.get("seed") or 0) % 2 == 1
    if "sales.csv" in question:
        if not results:
            return tool_call("inspect_file", {"path": "sales.csv"})
        if len(results) == 1:
            return tool_call("python", {"code": "import csv\n"
                                                "rows = list(csv.DictReader(open('sales.csv')))\n"
                                                "print('TOTAL', sum(float(r['amount']) for r in rows))"})
        total = re.search(r"TOTAL ([\d.]+)", results[-1])
        return tool_call("final_answer", {"answer": "40" if wrong else (total.group(1) if total else "none")})
    if not results:
        return tool_call("web_search", {"query": "bon museum"})
    if len(results) == 1:
        url = re.search(r"https?://\S+/museum", results[0])
        return tool_call("visit_page", {"url": url.group(0) if url else "http://127.0.0.1:1/none"})
    city = re.search(r"located in \**(\w+)", results[-1])
    return tool_call("final_answer", {"answer": "Paris" if wrong else (city.group(1) if city else "none")})


def judge(body: dict):
    """Grades by the answer: right answers get +1 everywhere, wrong ones -1."""
    prompt = body["messages"][-1]["content"]
    steps = [int(line[1:line.index("]")]) for line in prompt.splitlines()
             if line.startswith("[") and "] assistant" in line]
    good = '"answer": "42.5"' in prompt or '"answer": "Lyon"' in prompt
    return verdict({s: 1 if good else -1 for s in steps}, 1 if good else -1)


def responder(body: dict):
    return agent(body) if body.get("tools") else judge(body)


def gaia_split(root: Path) -> Path:
    split = root / "2023" / "validation"
    split.mkdir(parents=True)
    (split / "sales.csv").write_text("item,amount\npen,10\nbook,20\nlamp,12.5\n")
    rows = [
        {"task_id": "csv-task", "Question": "What is the total amount in the attached sales.csv?", "Level": 1,
         "Final answer": "42.5", "file_name": "sales.csv"},
        {"task_id": "web-task", "Question": "In which city is the Bon Museum?", "Level": 2,
         "Final answer": "Lyon", "file_name": ""},
    ]
    (split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return split


def test_gaia_best_of_4_with_real_tools(tmp_path, web):
    split = gaia_split(tmp_path)
    env = {**os.environ, "BON_TEST_KEY": "sk-gaia-test", "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
    with FakeLLMServer(responder) as llm:
        args = ["dataset=gaia", f"dataset.path={split}", "generator=local", "judge=local", "generator.n=4",
                f"generator.api_base={llm.base_url}", f"judge.api_base={llm.base_url}",
                "generator.api_key_env=BON_TEST_KEY", "judge.api_key_env=BON_TEST_KEY",
                "tools.allow_private=true", "tools.web_search.provider=searxng",
                f"tools.web_search.base_url={web}", "selector=two_stage",
                f"cache.dir={tmp_path / 'cache'}", "bootstrap_resamples=200", f"hydra.run.dir={tmp_path / 'out'}"]
        proc = run_in_process("bon.run", *args, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out"
    trajectories = [json.loads(line) for line in (out / "trajectories.jsonl").read_text().splitlines()]
    assert len(trajectories) == 8
    by_task = {}
    for t in trajectories:
        by_task.setdefault(t["task_id"], {})[t["sample"]] = t
    for task_id, right in (("csv-task", "42.5"), ("web-task", "Lyon")):
        samples = by_task[task_id]
        assert sorted(samples) == [0, 1, 2, 3]
        for sample, t in samples.items():
            assert t["metadata"]["tool_errors"] == 0, tool_results(t["messages"])
            expected = right if sample % 2 == 0 else ("40" if task_id == "csv-task" else "Paris")
            assert t["answer"] == expected and t["success"] is (sample % 2 == 0)
    # the tools really ran: the page's script text was dropped, the python tool summed the file
    web_results = tool_results(by_task["web-task"][0]["messages"])
    assert "Lyon" in web_results[1] and "var x" not in web_results[1]
    assert "TOTAL 42.5" in tool_results(by_task["csv-task"][0]["messages"])[1]
    offered = {c["name"] for t in trajectories for c in t["metadata"]["tool_calls"]}
    assert offered == {"web_search", "visit_page", "inspect_file", "python", "final_answer"}  # dataset=gaia's set
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_tasks"] == 2 and summary["n_candidates"] == 8
    assert summary["accuracy"] == 1.0 and summary["random"] == 0.5 and summary["pass_at_n"] == 1.0
    assert summary["usage"]["generation"]["stop_reasons"] == {"answer": 8}

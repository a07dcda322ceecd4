"""Choosing tools by name with per-tool options, and the per-task directory of attachments they read."""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from llm_server import FAKE_KEY_ENV, llm_env_fixture, llm_server_fixture, tool_call  # noqa: F401 - pytest fixtures

from bon import tools
from bon.datasets.taskset import TaskSet
from bon.errors import BonError
from bon.generators.agent import AgentGenerator
from bon.llm import LLMClient
from bon.tools import Tool, ToolContext, ToolResult, workspace
from bon.types import Task


class Probe(Tool):
    """Records the options it was built with and the files directory it was called with."""

    name = "probe_tool"
    description = "test tool"
    parameters = {"type": "object", "properties": {}, "additionalProperties": False}
    seen: list[Path | None] = []

    def __init__(self, *, limit: int = 3, allow_private: bool = False) -> None:
        self.limit, self.allow_private = limit, allow_private

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> ToolResult:
        Probe.seen.append(context.files_dir)
        names = sorted(p.name for p in context.files_dir.iterdir()) if context.files_dir else []
        return ToolResult(",".join(names) or "no files")


@pytest.fixture
def probe():
    tools.REGISTRY[Probe.name] = Probe
    Probe.seen = []
    yield Probe
    del tools.REGISTRY[Probe.name]


def test_options_reach_the_tool_and_allow_private_reaches_tools_that_take_it(probe):
    built, calc = tools.get(["probe_tool", "calculator"], {"allow_private": True, "probe_tool": {"limit": 9}})
    assert (built.limit, built.allow_private) == (9, True)
    assert calc.name == "calculator"  # takes no allow_private: not passed, no error
    default, = tools.get(["probe_tool"])
    assert (default.limit, default.allow_private) == (3, False)


def test_unknown_option_and_unknown_tool_section_name_the_valid_choices(probe):
    with pytest.raises(BonError, match=r"tools\.probe_tool has no option lmit; valid options: limit"):
        tools.get(["probe_tool"], {"probe_tool": {"lmit": 1}})
    with pytest.raises(BonError, match=r"tools\.calculater is not a tool; valid: allow_private, .*calculator"):
        tools.get(["calculator"], {"calculater": {}})
    with pytest.raises(BonError, match=r"unknown tool.*'nope'.*calculator"):
        tools.get(["nope"])


def test_materialize_copies_exactly_the_task_files_by_name(tmp_path):
    src = tmp_path / "split"
    src.mkdir()
    (src / "a.csv").write_text("x\n1\n")
    (src / "metadata.jsonl").write_text('{"Final answer": "secret"}\n')  # must not be exposed
    task = Task("t/1", "q", files=(str(src / "a.csv"),))
    root = tmp_path / "ws"
    d = workspace.materialize(task, root)
    assert sorted(p.name for p in d.iterdir()) == ["a.csv"]
    assert d.parent == root and (d / "a.csv").read_text() == "x\n1\n"
    (d / "a.csv").write_text("changed")  # a copy: the original is untouched
    assert (src / "a.csv").read_text() == "x\n1\n"
    assert workspace.materialize(Task("t2", "q"), root) is None


def test_materialize_refuses_name_clashes_and_missing_files(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for d in ("x", "y"):
        (tmp_path / d / "f.txt").write_text(d)
    clash = Task("t", "q", files=(str(tmp_path / "x/f.txt"), str(tmp_path / "y/f.txt")))
    with pytest.raises(BonError, match="task t: two attached files share the name f.txt"):
        workspace.materialize(clash, tmp_path / "ws")
    with pytest.raises(BonError, match=r"attached file .*gone.txt does not exist"):
        workspace.materialize(Task("t", "q", files=(str(tmp_path / "gone.txt"),)), tmp_path / "ws2")


@pytest.mark.usefixtures("llm_env")
def test_agent_gives_tools_the_task_directory_and_removes_it_after(probe, llm_server, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    task = Task("t1", "read the file", answer="hello", files=(str(tmp_path / "notes.txt"),))
    llm_server.script(tool_call("probe_tool", {}), tool_call("final_answer", {"answer": "hello"}))
    client = LLMClient("openai/test-model", api_base=llm_server.base_url, api_key_env=FAKE_KEY_ENV)
    agent = AgentGenerator(client, tools.get(["probe_tool", "final_answer"]), max_steps=4,
                           score=TaskSet("tasks", ()).score)

    async def go():
        async with client:
            out = await agent.generate_all([task], progress=False)
            await agent.aclose()
            return out
    traj, = asyncio.run(go())
    assert traj.success is True
    tool_reply = next(m for m in traj.messages if m["role"] == "tool")
    assert tool_reply["content"] == "notes.txt"
    assert "- notes.txt" in traj.messages[1]["content"] and str(tmp_path) not in traj.messages[1]["content"]
    files_dir, = Probe.seen
    assert not files_dir.exists()  # aclose removed the copies


@pytest.mark.usefixtures("llm_env")
def test_a_missing_attachment_fails_before_any_model_call(llm_server, tmp_path):
    client = LLMClient("openai/test-model", api_base=llm_server.base_url, api_key_env=FAKE_KEY_ENV)
    agent = AgentGenerator(client, tools.get(["final_answer"]))
    ok = Task("a", "q")
    broken = Task("b", "q", files=(str(tmp_path / "missing.pdf"),))

    async def go():
        async with client:
            await agent.generate_all([ok, broken], progress=False)
    with pytest.raises(BonError, match="task b: attached file .*missing.pdf does not exist"):
        asyncio.run(go())
    assert llm_server.count == 0


def test_config_defaults_match_the_tools_own_defaults():
    """conf/tools/default.yaml lists every option of every configurable tool, with the tool's own default."""
    import inspect

    from omegaconf import OmegaConf

    from bon.config import conf_dir

    cfg = OmegaConf.to_container(OmegaConf.load(Path(conf_dir()) / "tools" / "default.yaml"))
    assert cfg.pop("allow_private") is False
    for name, options in cfg.items():
        params = {k: p.default for k, p in inspect.signature(tools.REGISTRY[name]).parameters.items()
                  if k != "allow_private"}
        assert set(options) == set(params), name
        for key, value in options.items():
            default = list(params[key]) if isinstance(params[key], tuple) else params[key]
            assert value == default, f"tools.{name}.{key}: config {value!r}, tool {default!r}"
    tools.get(list(cfg), cfg)  # and the tools accept them as given

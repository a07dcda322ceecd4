"""The built-in task set: every reference answer recomputed from its attachment, every attachment readable
by the agent's own tool, shipped in the wheel, and chosen by default whenever a live generator is."""
from __future__ import annotations

import asyncio
import calendar
import datetime as dt
import fnmatch
import json
import math
import os
import re
import statistics
import subprocess
import tomllib
from pathlib import Path

import docx
import openpyxl
import polars as pl
import pytest
from commands import run_in_process
from hydra import compose, initialize_config_dir
from llm_server import FakeLLMServer, tool_call, verdict
from pypdf import PdfReader

import bon.datasets  # noqa: F401 - registers the resolver conf/config.yaml's defaults list uses
from bon.config import conf_dir
from bon.datasets import builtin
from bon.errors import BonError
from bon.scoring.gaia import question_scorer
from bon.tools.base import ToolContext
from bon.tools.files import InspectFile

ROOT = Path(__file__).resolve().parents[1]
FILES = builtin.FILES_DIR
TASKS = {t.id: t for t in builtin.all_tasks()}


def file_of(task_id: str) -> Path:
    return Path(TASKS[task_id].files[0])


def pdf_text(name: str) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(FILES / name).pages)


def docx_rows(name: str) -> list[list[str]]:
    table = docx.Document(FILES / name).tables[0]
    return [[c.text for c in row.cells] for row in table.rows[1:]]


def sheet(name: str, index: int = 0) -> list[tuple]:
    ws = openpyxl.load_workbook(FILES / name, read_only=True).worksheets[index]
    return list(ws.iter_rows(min_row=2, values_only=True))


# One independent solution per task: read the attachment back the way a careful person would.
def solve(task_id: str) -> str:
    orders = pl.read_csv(FILES / "orders.csv", try_parse_dates=True)
    match task_id:
        case "bon-01":
            east = orders.filter((pl.col("region") == "East") & (pl.col("date").dt.month() == 3))
            return str((east["units"] * east["unit_price"]).sum())
        case "bon-02":
            q2 = orders.filter(pl.col("date").dt.month().is_between(4, 6))
            return q2.group_by("product").agg(pl.col("units").sum()).sort("units", descending=True)["product"][0]
        case "bon-03":
            costs = dict(sheet("inventory.xlsx", 1))
            return f"{sum(q * costs[sku] for sku, _, wh, q in sheet('inventory.xlsx', 0) if wh == 'Leeds'):.2f}"
        case "bon-04":
            staff = json.loads((FILES / "staff.json").read_text())["employees"]
            return str(statistics.median(p["salary"] for p in staff if p["department"] == "Engineering"
                                         and dt.date.fromisoformat(p["hired"]) < dt.date(2020, 1, 1)))
        case "bon-05":
            revenue = {(int(y), int(q)): float(v) for q, y, v in
                       re.findall(r"Q(\d) (\d{4}) revenue: ([\d.]+)", pdf_text("annual_review.pdf"))}
            assert len(revenue) == 8
            totals = [sum(v for (y, _), v in revenue.items() if y == year) for year in (2022, 2023)]
            return f"{100 * (totals[1] - totals[0]) / totals[0]:.1f}"
        case "bon-06":
            return str(sum(1 for _, _, owner, _, status in docx_rows("minutes.docx")
                           if owner == "Priya Nair" and status in ("open", "blocked")))
        case "bon-07":
            lines = (FILES / "server_log.txt").read_text().splitlines()[1:]
            return str(len({line.split()[2] for line in lines if line.split()[5] == "500"}))
        case "bon-08":
            exams = pl.read_csv(FILES / "exam_scores.csv")
            good = exams.filter((pl.col("exam1") + pl.col("exam2") + pl.col("exam3")) >= 255)
            return ", ".join(sorted(good["student"]))
        case "bon-09":
            header = next(openpyxl.load_workbook(FILES / "rainfall.xlsx").worksheets[0].iter_rows(values_only=True))
            rows = sheet("rainfall.xlsx")
            wet = [sum(1 for r in rows if r[i] > 10) for i in range(1, len(header))]
            return header[1 + wet.index(max(wet))].removesuffix(" (mm)")
        case "bon-10":
            legs = json.loads((FILES / "road_trip.json").read_text())["legs"]
            hours = sum(leg["driving_minutes"] for leg in legs) / 60
            return f"{sum(leg['distance_km'] for leg in legs) / hours:.1f}"
        case "bon-11":
            text = (FILES / "recipe.txt").read_text()
            makes = int(re.search(r"makes (\d+)", text).group(1))
            grams = sum(int(g) for g in re.findall(r"(\d+) g (?:rolled oats|plain flour)", text))
            return str(grams * 40 // makes)
        case "bon-12":
            due = re.findall(r"due \d+ \w+ (\d{4}), amount EUR (\d+)", pdf_text("service_agreement.pdf"))
            assert len(due) == 10
            return str(sum(int(amount) for year, amount in due if year == "2025"))
        case "bon-13":
            return str(sum(int(pages) for _, year, pages in docx_rows("donations.docx") if int(year) < 1950))
        case "bon-14":
            temps = pl.read_csv(FILES / "sensor_readings.csv")["temperature_c"]
            return f"{temps.diff().max():.1f}"
        case "bon-15":
            rows = sheet("budget_2024.xlsx")
            return max(rows, key=lambda r: r[2] - r[1])[0]
        case "bon-16":
            return str(sum(1 for n in range(1000, 2001) if all(n % d for d in range(2, math.isqrt(n) + 1))))
        case "bon-17":
            return str(sum(int(c) for c in str(1 << 100)))
        case "bon-18":
            return str(sum(calendar.weekday(y, m, 1) == calendar.SUNDAY for y in range(1901, 2001) for m in range(1, 13)))
        case "bon-19":
            return str(dt.date(2000, 1, 1).toordinal() - dt.date(1969, 7, 20).toordinal())
        case "bon-20":
            return str(math.prod(p ** int(math.log(20, p)) for p in (2, 3, 5, 7, 11, 13, 17, 19)))
        case "bon-21":
            n, steps = 27, 0
            while n > 1:
                n, steps = (n * 3 + 1 if n & 1 else n >> 1), steps + 1
            return str(steps)
        case "bon-22":
            balance = 5000.0
            for _ in range(120):
                balance += balance * 0.035 / 12
            return f"{balance:.2f}"
        case "bon-23":
            return str(sum(1 for n in range(1, 10000) if f"{n}" == f"{n}"[::-1] and f"{n:b}" == f"{n:b}"[::-1]))
    raise AssertionError(f"no independent solution for {task_id}")


@pytest.mark.parametrize("task_id", sorted(TASKS))
def test_reference_answer_is_recomputed_from_the_attachment(task_id):
    recomputed = solve(task_id)
    assert question_scorer(recomputed, TASKS[task_id].answer), (task_id, recomputed, TASKS[task_id].answer)


def test_a_gaia_style_set_most_with_files_of_every_kind():
    tasks = builtin.all_tasks()
    assert 20 <= len(tasks) <= 30
    with_files = [t for t in tasks if t.files]
    assert 2 * len(with_files) >= len(tasks)
    assert {Path(t.files[0]).suffix for t in with_files} >= {".csv", ".xlsx", ".json", ".pdf", ".docx", ".txt"}
    for t in tasks:  # GAIA's format: numbers bare, lists comma-separated, nothing empty
        assert t.answer and t.answer == t.answer.strip()
        if re.fullmatch(r"-?[\d.,]+", t.answer):  # a number: no thousands separators
            assert "," not in t.answer, t.answer
            float(t.answer)
        assert not re.search(r"[$%€£]", t.answer)


def test_inspect_file_reads_every_attachment():
    tool = InspectFile()
    for t in (t for t in builtin.all_tasks() if t.files):
        path = Path(t.files[0])
        result = asyncio.run(tool.call({"path": path.name}, ToolContext(task=t, files_dir=path.parent)))
        assert result.error_kind is None, (path.name, result.content[:300])
        assert len(result.content) > 200 and "git-lfs" not in result.content


def test_pdf_attachments_are_text_pdfs():
    assert "Instalment 10: due" in pdf_text("service_agreement.pdf")
    assert "Q4 2023 revenue" in pdf_text("annual_review.pdf")


def test_every_task_file_ships_in_the_wheel():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["bon"]
    shipped = [p.relative_to(ROOT / "bon").as_posix() for p in builtin.DATA_DIR.rglob("*") if p.is_file()]
    assert shipped and all(any(fnmatch.fnmatch(f, pattern) for pattern in data) for f in shipped), shipped


def test_load_options():
    assert len(builtin.load()) == len(TASKS)
    assert [t.id for t in builtin.load(n_tasks=2)] == ["bon-01", "bon-02"]
    assert [t.id for t in builtin.load(task_ids=["bon-05", "bon-16"])] == ["bon-05", "bon-16"]
    with pytest.raises(BonError, match="n_tasks"):
        builtin.load(n_tasks=0)
    with pytest.raises(BonError, match="bon-99"):
        builtin.load(task_ids=["bon-99"])


# --- which dataset and judge a run gets ----------------------------------------------------------------------


def choices(*overrides: str) -> tuple[str, str, str]:
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    c = cfg.hydra.runtime.choices
    return c.generator, c.judge, c.dataset


def test_a_live_generator_brings_the_builtin_tasks_and_its_own_judge():
    assert choices() == ("sim", "sim", "sim")  # the synthetic benchmark, unchanged
    assert choices("generator=deepseek") == ("deepseek", "deepseek", "builtin")
    assert choices("generator=openai", "judge=deepseek") == ("openai", "deepseek", "builtin")
    assert choices("dataset=agentprocessbench") == ("replay", "replay", "agentprocessbench")
    assert choices("dataset=tasks", "generator=anthropic") == ("anthropic", "anthropic", "tasks")
    assert choices("dataset=gaia") == ("local", "local", "gaia")


def run_bon(tmp_path: Path, server: FakeLLMServer, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith(("_API_KEY", "_API_BASE")) and k != "HYDRA_FULL_ERROR"}
    env |= {"DEEPSEEK_API_KEY": "sk-dummy", "DEEPSEEK_API_BASE": server.base_url, "NO_PROXY": "127.0.0.1",
            "BON_CACHE_DIR": str(tmp_path / "cache")}
    return run_in_process("bon.run", *args, cwd=tmp_path, env=env)  # the same exit code and stderr lines


def test_a_simulated_judge_is_refused_for_real_trajectories(tmp_path):
    with FakeLLMServer() as server:
        proc = run_bon(tmp_path, server, "generator=deepseek", "judge=sim")
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert "judge=sim" in proc.stderr and "simulated" in proc.stderr and "judge=<preset>" in proc.stderr
        proc = run_bon(tmp_path, server, "dataset=builtin")
        assert proc.returncode == 2 and "needs a live agent" in proc.stderr and "generator=<preset>" in proc.stderr
        assert server.count == 0


def test_openai_preset_is_redirected_by_openai_api_base(tmp_path):
    """bon sends no api_base when the preset's is null, so litellm's own environment variable applies."""
    def answer(body: dict) -> object:
        if body.get("tools"):
            return tool_call("final_answer", {"answer": TASKS["bon-01"].answer})
        return verdict({2: 1}, 1)

    with FakeLLMServer(answer) as server:
        env = {k: v for k, v in os.environ.items()
               if not k.endswith(("_API_KEY", "_API_BASE", "_BASE_URL")) and k != "HYDRA_FULL_ERROR"}
        env |= {"OPENAI_API_KEY": "sk-dummy", "OPENAI_API_BASE": server.base_url, "NO_PROXY": "127.0.0.1",
                "BON_CACHE_DIR": str(tmp_path / "cache")}
        proc = run_in_process("bon.run", "generator=openai", "dataset.n_tasks=1", "generator.n=1",
                              "bootstrap_resamples=200", cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert [r.body["model"] for r in server.requests] == ["gpt-4o-mini", "gpt-4o-mini"]  # agent, then judge
    assert "two_stage on builtin/gaia_style (1 tasks" in proc.stdout

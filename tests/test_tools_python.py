"""The python tool: results, limits, and the sandbox's security properties, in both isolation modes.

Every security test attempts the forbidden thing for real and checks the world afterwards (the
server saw no connection, the file does not exist), so each would fail if the protection were gone.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from bon.errors import BonError
from bon.tools.base import ToolContext, ToolResult
from bon.tools.python_tool import PythonTool
from bon.tools.sandbox import namespace_problem
from bon.types import Task

TASK = Task("t1", "question?")
MODES = ["namespace", "audit_hook"]
FAST = {"timeout": 10, "cpu_seconds": 5, "memory_mb": 512}


def tool_for(isolation: str = "auto", **options) -> PythonTool:
    return PythonTool(isolation=isolation, **{**FAST, **options})


def run(tool: PythonTool, code: str, files_dir: Path | None = None) -> ToolResult:
    return asyncio.run(tool.call({"code": code}, ToolContext(TASK, files_dir=files_dir)))


def sandbox_processes(marker: str) -> list[int]:
    """Host processes whose command line mentions `marker` (each sandbox's carries its directory's name)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


# --------------------------------------------------------------------------- results


@pytest.mark.parametrize("isolation", MODES)
def test_prints_sees_task_files_and_lists_created_files(tmp_path: Path, isolation: str) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "data.csv").write_text("a,b\n1,2\n3,4\n", encoding="utf-8")
    (files / "helper.py").write_text("def double(x):\n    return 2 * x\n", encoding="utf-8")
    code = ("import polars as pl, sys, helper\n"
            "print('double', helper.double(21))\n"
            "df = pl.read_csv('data.csv')\n"
            "print('sum', df['b'].sum())\n"
            "print('to stderr', file=sys.stderr)\n"
            "df.write_csv('out.csv')\n"
            "open('data.csv', 'w').write('overwritten copy')\n")
    result = run(tool_for(isolation), code, files)
    assert result.error_kind is None, result.content
    assert result.content.startswith("exit status 0")
    assert f"network={isolation}" in result.content
    assert "double 42\nsum 6\nto stderr" in result.content
    assert "files created (deleted after this call): out.csv (" in result.content
    assert "data.csv (" not in result.content  # the task's own file is not "created"
    assert (files / "data.csv").read_text(encoding="utf-8") == "a,b\n1,2\n3,4\n"  # the code had a copy


def test_uncaught_exception_is_an_exit_code_error_with_a_clean_traceback() -> None:
    result = run(tool_for(), "def f():\n    raise ValueError('boom')\nf()\n")
    assert result.error_kind == "exit_code"
    assert result.content.startswith("error: the program exited with status 1")
    assert 'File "<code>", line 2, in f' in result.content and "raise ValueError('boom')" in result.content
    assert "ValueError: boom" in result.content
    assert "sandbox_child" not in result.content and "<string>" not in result.content


def test_output_is_capped_keeping_its_start_and_end() -> None:
    result = run(tool_for(max_output_chars=1000), "print('START'); print('y' * 200_000); print('END')")
    assert result.error_kind == "output_truncated"
    assert "START" in result.content and "END" in result.content
    assert "characters omitted" in result.content
    assert len(result.content) < 1600


def test_temporary_directory_is_removed_afterwards() -> None:
    result = run(tool_for(), "import os; open('x.txt', 'w').write('x'); print(os.getcwd())")
    workdir = Path(result.content.split("output:\n", 1)[1].splitlines()[0])
    assert workdir.name == "work" and workdir.parent.name.startswith("bon-python-")
    assert not workdir.parent.exists()


def test_runs_share_nothing() -> None:
    tool = tool_for()
    run(tool, "open('state.txt', 'w').write('x'); x = 1")
    result = run(tool, "import os; print(os.path.exists('state.txt'), 'x' in globals())")
    assert "False False" in result.content


def test_max_parallel_bounds_concurrent_runs() -> None:
    tool = tool_for(max_parallel=1)
    code = "import time; a = time.time(); time.sleep(0.3); print('SPAN', a, time.time())"

    async def both() -> list[ToolResult]:
        context = ToolContext(TASK)
        return list(await asyncio.gather(*(tool.call({"code": code}, context) for _ in range(2))))
    spans = sorted(tuple(map(float, r.content.split("SPAN ", 1)[1].split()[:2])) for r in asyncio.run(both()))
    assert spans[0][1] <= spans[1][0]  # the second started after the first ended


# --------------------------------------------------------------------------- limits


def test_wall_clock_timeout_kills_the_whole_group() -> None:
    marker = f"{time.time_ns() % 10**9}.5"  # a unique sleep length to find stragglers by
    code = ("import subprocess\n"
            f"try:\n    subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"  # leaves the group
            "except OSError:\n    pass\n"  # (the audit hook refuses to start programs)
            "while True:\n    pass\n")
    tool = tool_for(timeout=1)
    started = time.monotonic()
    result = run(tool, code)
    elapsed = time.monotonic() - started
    assert result.error_kind == "timeout" and "time limit of 1 s" in result.content
    assert elapsed < 2.5
    assert sandbox_processes(marker) == []


def test_cpu_limit() -> None:
    started = time.monotonic()
    result = run(tool_for(cpu_seconds=1, timeout=10), "while True:\n    pass\n")
    assert result.error_kind == "cpu_limit", result.content
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("code", ["x = bytearray(2 << 30)", "import numpy as np\nx = np.ones((400, 1024, 1024))"])
def test_memory_limit(code: str) -> None:
    result = run(tool_for(memory_mb=256), code)
    assert result.error_kind == "memory_limit", result.content
    assert "MemoryError" in result.content


def test_file_size_limit() -> None:
    result = run(tool_for(max_file_mb=1), "open('big.bin', 'wb').write(b'x' * (3 << 20))")
    assert result.error_kind == "exit_code" and "File too large" in result.content


def test_fork_bomb_is_contained() -> None:
    tool = tool_for(timeout=2)
    if tool.sandbox.mode.run_as is None:
        pytest.skip("the process count is limited only when the code runs as uid 65534 (bon as root)")
    code = "import os\nprint(os.getcwd(), flush=True)\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run(tool, code)
    assert result.error_kind == "timeout"
    sandbox_dir = result.content.split("output:\n", 1)[1].splitlines()[0].rsplit("/", 1)[0]
    assert sandbox_processes(sandbox_dir) == []


# --------------------------------------------------------------------------- isolation


class CountingServer:
    """A TCP server on 127.0.0.1 that counts the connections it accepts."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("isolation", MODES)
def test_no_network(isolation: str) -> None:
    server = CountingServer()
    try:
        socket.create_connection(("127.0.0.1", server.port), timeout=2).close()  # reachable from here
        deadline = time.monotonic() + 2
        while server.accepted < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.accepted == 1
        connect = f"import socket; socket.create_connection(('127.0.0.1', {server.port}), timeout=2); print('CONNECTED')"
        code = (f"try:\n    {connect}\nexcept OSError as exc:\n    print('python blocked:', exc)\n"
                "import subprocess, sys\n"  # a new interpreter carries no audit hook: the kernel must stop it
                f"try:\n    print(subprocess.run([sys.executable, '-c', {connect!r}], capture_output=True, text=True))\n"
                "except OSError as exc:\n    print('program blocked:', exc)\n")
        tool = tool_for(isolation)
        assert tool.network_isolation == isolation
        result = run(tool, code)
        time.sleep(0.1)
        assert server.accepted == 1, result.content
        assert "python blocked:" in result.content and "CONNECTED" not in result.content.replace("'CONNECTED'", "")
    finally:
        server.close()


@pytest.mark.parametrize("isolation", MODES)
def test_no_secrets_from_the_environment(isolation: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("BON_TEST_SECRET", secret)
    # A process started with the secret in its environment, as bon itself is with API keys.
    holder = subprocess.Popen(["sleep", "30"], env={**os.environ})
    try:
        code = ("import os\nprint(dict(os.environ))\n"
                f"for pid in ({holder.pid}, {os.getpid()}, os.getppid()):\n"
                "    try:\n        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
                "    except OSError as exc:\n        print('blocked', exc)\n")
        result = run(tool_for(isolation), code)
        assert result.error_kind is None, result.content
        assert "PATH" in result.content  # the code did print its environment
        assert secret not in result.content
        assert Path(f"/proc/{holder.pid}/environ").read_bytes().count(secret.encode()) == 1  # the bait was there
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("isolation", MODES)
def test_no_writes_outside_the_working_directory(tmp_path: Path, isolation: str) -> None:
    owned = tmp_path / "owned_by_the_test"
    owned.mkdir()
    tag = uuid.uuid4().hex
    host_tmp = Path("/tmp") / f"bon-sandbox-escape-{tag}"  # world-writable on the host
    in_prefix = Path(sys.prefix) / f"bon-sandbox-escape-{tag}"  # root's, and visible to the code (the interpreter)
    by_shell = Path(sys.prefix) / f"bon-sandbox-escape-shell-{tag}"
    code = (
        "import os, subprocess\n"
        f"targets = {[str(owned / 'from_python.txt'), str(in_prefix), str(host_tmp)]!r}\n"
        "targets.append(os.path.join(os.path.dirname(os.getcwd()), 'beside.txt'))\n"
        "for target in targets:\n"
        "    try:\n        open(target, 'w').write('escaped')\n        print('WROTE', target)\n"
        "    except OSError as exc:\n        print('blocked', type(exc).__name__)\n"
        f"try:\n    subprocess.run(['sh', '-c', 'echo escaped > {by_shell}'])\n"
        "except OSError as exc:\n    print('program blocked', exc)\n"
        "open('inside.txt', 'w').write('fine')\n")
    try:
        result = run(tool_for(isolation), code)
        assert result.error_kind is None, result.content
        wrote = [line.split(" ", 1)[1] for line in result.content.splitlines() if line.startswith("WROTE ")]
        assert set(wrote) <= {str(host_tmp)}, wrote  # which can only land in a private /tmp (checked below)
        assert result.content.count("blocked") >= 3
        assert "inside.txt" in result.content  # writing inside still works
        assert sorted(os.listdir(owned)) == []
        assert not in_prefix.exists() and not by_shell.exists()
        assert not host_tmp.exists()  # namespaced as root, /tmp is a private tmpfs: the write lands there
    finally:
        for path in (in_prefix, by_shell, host_tmp):
            path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- options


def test_modes_are_reported() -> None:
    assert tool_for("audit_hook").network_isolation == "audit_hook"
    assert tool_for("namespace").network_isolation == "namespace"
    expected = "namespace" if namespace_problem() is None else "audit_hook"
    assert tool_for().network_isolation == expected  # auto picks namespaces where they work
    assert "audit_hook" in tool_for("audit_hook").file_isolation


@pytest.mark.parametrize("options, name", [({"isolation": "docker"}, "isolation"), ({"timeout": 0}, "timeout"),
                                           ({"memory_mb": "lots"}, "memory_mb"), ({"max_parallel": 0}, "max_parallel"),
                                           ({"cpu_seconds": 1.5}, "cpu_seconds")])
def test_bad_options_name_the_option(options: dict, name: str) -> None:
    with pytest.raises(BonError, match=f"tools.python.{name}"):
        PythonTool(**options)


def test_interpreter_is_the_running_one() -> None:
    result = run(tool_for(), "import sys; print(sys.version)")
    assert sys.version in result.content


def test_the_sandbox_never_mounts_in_bons_own_mount_namespace():
    """A mount made outside a fresh namespace would cover the host's /tmp: refused before any mount."""
    from bon.tools import sandbox_child

    here = os.readlink("/proc/self/ns/mnt")
    before = Path("/proc/self/mountinfo").read_text()
    with pytest.raises(OSError, match="not in a new mount namespace"):
        sandbox_child._mount_masks([{"dir": "/tmp", "mode": "1777", "size": "1m", "keep": []}], here)
    assert Path("/proc/self/mountinfo").read_text() == before

"""The python tool: results, limits, and the sandbox's security properties, in both isolation modes.

Every security test attempts the forbidden thing for real, as a model's code would, and checks the
world afterwards (the server saw no connection, the file does not exist, no process is left), so
each would fail if the protection were gone. As root, audit_hook mode needs a Python other users
can run: the tests use the system's (/usr/bin/python3), as the error message tells users to.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from bon.errors import BonError
from bon.tools import sandbox
from bon.tools.base import ToolContext, ToolResult
from bon.tools.python_tool import PythonTool
from bon.tools.sandbox import SANDBOX_UIDS, interpreter_info, namespace_problem
from bon.types import Task

TASK = Task("t1", "question?")
MODES = ["namespace", "audit_hook"]
FAST = {"timeout": 10, "cpu_seconds": 5, "memory_mb": 512}
AS_ROOT = os.geteuid() == 0


def audit_hook_python() -> str:
    """bon's own Python if a run's uid can execute it, else a system one (what the refusal suggests)."""
    if not AS_ROOT or sandbox._unreachable(interpreter_info()) is None:
        return sys.executable
    found = sandbox._readable_pythons()
    assert found, "audit_hook tests as root need a Python other users can run, e.g. /usr/bin/python3"
    return found[0]


def tool_for(isolation: str = "auto", **options) -> PythonTool:
    if isolation == "audit_hook":
        options.setdefault("interpreter", audit_hook_python())
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
    tool = tool_for(isolation)
    if "polars" in tool.sandbox.interpreter.packages:
        read = "import polars as pl\ndf = pl.read_csv('data.csv')\ntotal = df['b'].sum()\ndf.write_csv('out.csv')\n"
    else:  # the system Python audit_hook mode uses as root has no polars
        read = ("import csv\nrows = list(csv.DictReader(open('data.csv')))\ntotal = sum(int(r['b']) for r in rows)\n"
                "open('out.csv', 'w').write('b\\n')\n")
    code = ("import sys, helper\n"
            "print('double', helper.double(21))\n"
            + read +
            "print('sum', total)\n"
            "print('to stderr', file=sys.stderr)\n"
            "open('data.csv', 'w').write('overwritten copy')\n")
    result = run(tool, code, files)
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
    assert elapsed < 5  # the 1 s limit plus killing the group; generous for a shared machine
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


def test_extracted_archives_reach_the_code_but_links_and_hidden_entries_do_not(tmp_path: Path) -> None:
    """inspect_file extracts an archive into the task's directory; the program must see those files too,
    and nothing a link points at outside the task's directory."""
    files = tmp_path / "files"
    (files / "a.zip_extracted" / "inner").mkdir(parents=True)
    (files / "a.zip_extracted" / "inner" / "data.csv").write_text("x\n7\n", encoding="utf-8")
    (files / ".a.zip_partial").mkdir()  # an extraction still being written
    (files / ".a.zip_partial" / "half.csv").write_text("x\n", encoding="utf-8")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("no", encoding="utf-8")
    (files / "link_dir").symlink_to(outside, target_is_directory=True)
    code = ("import os\n"
            "print(open('a.zip_extracted/inner/data.csv').read().split()[1])\n"
            "print(sorted(os.listdir('.')))\n")
    result = run(tool_for(), code, files)
    assert result.error_kind is None, result.content
    assert "\n7\n" in result.content
    assert "['a.zip_extracted']" in result.content  # no hidden half-extraction, no link out
    assert "files created" not in result.content  # copies of the task's files are not "created"


def test_file_size_limit() -> None:
    result = run(tool_for(max_file_mb=1), "open('big.bin', 'wb').write(b'x' * (3 << 20))")
    assert result.error_kind == "exit_code" and "File too large" in result.content


@pytest.mark.parametrize("isolation", MODES)
def test_fork_bomb_is_capped_and_cleaned_up(isolation: str) -> None:
    if not AS_ROOT:
        pytest.skip("the process cap is enforced when bon runs as root (a uid of the run's own to count)")
    cap = 20
    code = ("import os, time\nprint(os.getcwd(), flush=True)\nborn = 0\n"
            "for _ in range(200):\n"
            "    try:\n        pid = os.fork()\n    except OSError:\n        continue\n"
            "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n"
            "    born += 1\n"
            "print('FORKED', born, flush=True)\n")
    result = run(tool_for(isolation, timeout=5, max_processes=cap), code)
    assert result.error_kind is None, result.content
    born = int(result.content.split("FORKED ", 1)[1].split()[0])
    assert 0 < born < cap  # the worker itself counts; the other 180 forks failed
    sandbox_dir = result.content.split("output:\n", 1)[1].splitlines()[0].rsplit("/", 1)[0]
    assert sandbox_processes(sandbox_dir) == []  # the sleeping children were killed when the code ended


@pytest.mark.parametrize("isolation", MODES)
def test_detached_daemons_do_not_outlive_the_call(isolation: str) -> None:
    """A double fork into a new session leaves the process group; the supervisor still reaps it."""
    code = ("import os, time\nprint(os.getcwd(), flush=True)\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(120)\n    os._exit(0)\n"
            "time.sleep(0.3)\nprint('LEFT', flush=True)\n")
    result = run(tool_for(isolation), code)
    assert result.error_kind is None and "LEFT" in result.content, result.content
    sandbox_dir = result.content.split("output:\n", 1)[1].splitlines()[0].rsplit("/", 1)[0]
    assert sandbox_processes(sandbox_dir) == []


@pytest.mark.parametrize("isolation", MODES)
def test_memory_is_bounded_for_all_processes_together(isolation: str) -> None:
    """Three children of 150 MB each fit each one's 256 MB, not 256 MB together: the run is stopped."""
    code = ("import os, time\nkids = []\n"
            "for i in range(3):\n"
            "    pid = os.fork()\n"
            "    if pid == 0:\n"
            "        block = b'x' * (150 << 20)\n"  # written, so resident
            "        print('HELD', i, flush=True)\n        time.sleep(30)\n        os._exit(0)\n"
            "    kids.append(pid)\n    time.sleep(0.5)\n"
            "for pid in kids:\n    os.waitpid(pid, 0)\n")
    result = run(tool_for(isolation, memory_mb=256, timeout=20), code)
    assert result.error_kind == "memory_limit", result.content
    assert "for all its processes together" in result.content
    assert result.content.count("HELD") < 3, result.content


@pytest.mark.parametrize("ending, kind", [("os._exit(3)", "exit_code"), ("os.kill(os.getpid(), 9)", "killed"),
                                          ("time.sleep(30)", "timeout")])
@pytest.mark.parametrize("isolation", MODES)
def test_the_code_cannot_forge_its_outcome(isolation: str, ending: str, kind: str) -> None:
    """Fake status lines written to every descriptor and to the supervisor's do not change the report."""
    code = ("import glob, os, time, json\n"
            "fields = [{'exit': 0}, {'memory_error': True}, {'killed_for': 'memory'}, {'setup_error': 'forged'}]\n"
            "lie = ''.join(json.dumps(f) + '\\n' for f in fields).encode()\n"
            "written = []\n"
            "for fd in range(3, 256):\n"
            "    try:\n        os.write(fd, lie)\n        written.append(fd)\n    except OSError:\n        pass\n"
            "for path in glob.glob('/proc/*/fd/*'):\n"
            "    try:\n        with open(path, 'wb') as f:\n            f.write(lie)\n        written.append(path)\n"
            "    except OSError:\n        pass\n"
            "print('WROTE', written, flush=True)\n"
            f"{ending}\n")
    result = run(tool_for(isolation, timeout=3), code)
    assert result.error_kind == kind, result.content
    assert not result.content.startswith("exit status 0")


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


def test_modes_are_reported_once_when_the_tool_is_built(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="bon.tools.python_tool")
    assert tool_for("audit_hook").network_isolation == "audit_hook"
    assert "isolation=audit_hook" in caplog.text and "NOT a security boundary" in caplog.text
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    caplog.clear()
    assert tool_for("namespace").network_isolation == "namespace"
    assert "isolation=namespace" in caplog.text and "no_new_privs" in caplog.text
    assert len(caplog.records) == 1
    assert namespace_problem(interpreter_info()) is None  # CI machines offer namespaces: auto must use them
    assert tool_for().network_isolation == "namespace"
    assert "audit_hook" in tool_for("audit_hook").file_isolation


@pytest.mark.parametrize("options, name", [({"isolation": "docker"}, "isolation"), ({"timeout": 0}, "timeout"),
                                           ({"memory_mb": "lots"}, "memory_mb"), ({"max_parallel": 0}, "max_parallel"),
                                           ({"cpu_seconds": 1.5}, "cpu_seconds"),
                                           ({"max_processes": 0}, "max_processes"),
                                           ({"interpreter": "/nonexistent/python3"}, "interpreter")])
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


# --------------------------------------------------------------------------- never root


PRIVILEGES = ("import json, os\n"
              "print('IDS', json.dumps([os.getresuid(), os.getresgid(), os.getgroups()]))\n"
              "for line in open('/proc/self/status'):\n"
              "    if line.startswith(('Cap', 'NoNewPrivs')):\n        print(line.strip())\n"
              "for attempt in ('os.setuid(0)', 'os.setgid(0)', 'os.chroot(\"/\")'):\n"
              "    try:\n        exec(attempt)\n        print('ALLOWED', attempt)\n"
              "    except OSError as exc:\n        print('refused', attempt, exc.errno)\n")


@pytest.mark.parametrize("isolation", MODES)
def test_code_never_runs_as_root_nor_with_capabilities(isolation: str) -> None:
    result = run(tool_for(isolation), PRIVILEGES)
    assert result.error_kind is None, result.content
    ids = result.content.split("IDS ", 1)[1].splitlines()[0]
    uids, gids, groups = json.loads(ids)
    assert 0 not in uids and 0 not in gids and 0 not in groups
    if AS_ROOT:
        assert len(set(uids)) == 1 and uids[0] in SANDBOX_UIDS and groups == []
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb") + (("CapBnd",) if AS_ROOT else ()):
        assert f"{field}:\t0000000000000000" in result.content, field
    assert "NoNewPrivs:\t1" in result.content
    assert "ALLOWED" not in result.content and result.content.count("refused") == 3


@pytest.mark.parametrize("isolation", MODES)
def test_setuid_programs_do_not_give_root_back(isolation: str) -> None:
    """no_new_privs: a setuid-root program the code runs still runs as the code's uid."""
    if not AS_ROOT:
        pytest.skip("only root can make a setuid-root program for the test")
    # Somewhere the code can see in both modes (namespaced, /tmp is private) and other users may enter.
    bait_dir = Path(tempfile.mkdtemp(prefix="bon-test-setuid-", dir="/var/lib" if os.path.isdir("/var/lib") else "/"))
    try:
        os.chmod(bait_dir, 0o755)
        bait = bait_dir / "id"
        shutil.copyfile(shutil.which("id") or "/usr/bin/id", bait)
        os.chmod(bait, 0o4755)  # setuid root
        as_other = subprocess.run([str(bait), "-u"], capture_output=True, text=True, user=65534)
        assert as_other.stdout.split() == ["0"]  # the bait works: it gives root to any other user
        code = ("import ctypes\n"  # around the audit hook, which refuses subprocess: what a hostile model would do
                f"print('STATUS', ctypes.CDLL(None).system(b'{bait} -u >&2'), flush=True)\n")
        result = run(tool_for(isolation), code)
        printed = result.content.split("output:\n", 1)[1].split()
        assert "STATUS" in printed and printed[-1] == "0", result.content  # it ran
        assert "0" not in printed[:-2] and len(printed) == 3, result.content  # as the run's uid, not root
    finally:
        shutil.rmtree(bait_dir)


def test_auto_never_falls_back_to_the_audit_hook_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    if not AS_ROOT:
        pytest.skip("as another user auto falls back to the audit hook, with a warning")
    monkeypatch.setattr(sandbox, "namespace_problem", lambda interpreter=None: "unshare: simulated failure")
    with pytest.raises(BonError, match="bon runs as root and namespaces do not work here .*simulated.*"
                                       "isolation=audit_hook"):
        tool_for("auto")


def test_audit_hook_as_root_refuses_an_interpreter_the_code_cannot_run(tmp_path: Path) -> None:
    """A Python below a private directory (as under /root) cannot run as the run's uid: refuse, naming the fix."""
    if not AS_ROOT:
        pytest.skip("the run's uid is changed only when bon is root")
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    python = private / "python3"
    shutil.copy2(os.path.realpath(audit_hook_python()), python)
    with pytest.raises(BonError, match=f"cannot run {python}: .* is closed to other users.*"
                                       "tools.python.interpreter.*isolation=namespace"):
        tool_for("audit_hook", interpreter=str(python))
    # namespaces bind the interpreter back in for the run's uid, so the same Python works there
    result = run(tool_for("namespace", interpreter=str(python)), "import os; print('UID', os.getuid())")
    assert result.error_kind is None and "UID 0" not in result.content, result.content


def test_audit_hook_routes_around_the_hook_meet_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """The audit hook is no boundary (dir_fd, sqlite3, ctypes go around it); as root, the run's uid still is."""
    if not AS_ROOT:
        pytest.skip("as bon's own user the audit hook is all there is in this mode (documented)")
    secret = f"s3cret-{uuid.uuid4().hex}"
    monkeypatch.setenv("BON_TEST_SECRET", secret)
    tag = uuid.uuid4().hex
    targets = [Path(f"/etc/bon-escape-{tag}-{n}") for n in ("dirfd", "sqlite", "shell")]
    code = ("import os, sqlite3, ctypes\n"
            "proc = os.open('/proc', os.O_RDONLY)\n"
            f"try:\n    print(os.read(os.open('{os.getpid()}/environ', os.O_RDONLY, dir_fd=proc), 1 << 20))\n"
            "except OSError as exc:\n    print('environ refused', exc.errno)\n"
            "etc = os.open('/etc', os.O_RDONLY)\n"
            f"try:\n    os.open('{targets[0].name}', os.O_WRONLY | os.O_CREAT, dir_fd=etc)\n"
            "except OSError as exc:\n    print('dir_fd write refused', exc.errno)\n"
            f"try:\n    sqlite3.connect('{targets[1]}').execute('create table t (x)')\n"
            "except sqlite3.Error as exc:\n    print('sqlite refused', exc)\n"
            f"ctypes.CDLL(None).system(b'id -u; cat /proc/{os.getpid()}/environ; touch {targets[2]}')\n")
    try:
        result = run(tool_for("audit_hook"), code)
        assert "environ refused" in result.content and "dir_fd write refused" in result.content, result.content
        assert "sqlite refused" in result.content
        assert secret not in result.content
        assert not any(t.exists() for t in targets)
    finally:
        for target in targets:
            target.unlink(missing_ok=True)


def test_host_unix_sockets_under_run_are_out_of_reach() -> None:
    """Namespaced as root, /run is an empty tmpfs: a world-connectable host socket there cannot be reached."""
    if not AS_ROOT:
        pytest.skip("/run is covered only when bon is root (documented)")
    path = Path("/run") / f"bon-test-{uuid.uuid4().hex[:8]}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen()
    server.settimeout(0.2)
    try:
        code = ("import os, socket\nprint('RUN', os.listdir('/run'))\n"
                f"try:\n    socket.socket(socket.AF_UNIX).connect('{path}')\n    print('CONNECTED')\n"
                "except OSError as exc:\n    print('refused', exc.errno)\n")
        result = run(tool_for("namespace"), code)
        assert "RUN []" in result.content and "refused" in result.content, result.content
        with pytest.raises(TimeoutError):
            server.accept()  # nothing came in
        probe = socket.socket(socket.AF_UNIX)
        probe.connect(str(path))  # while the host can connect
        probe.close()
    finally:
        server.close()
        path.unlink(missing_ok=True)


# --------------------------------------------------------------------------- bon as an unprivileged user

AS_USER_SCRIPT = r'''
import asyncio, json, sys
from bon.tools.base import ToolContext
from bon.tools.python_tool import PythonTool
from bon.types import Task
code = """
import glob, json, os
print('IDS', json.dumps([os.getresuid(), os.getresgid()]))
for line in open('/proc/self/status'):
    if line.startswith(('CapEff', 'CapPrm', 'NoNewPrivs')):
        print(line.strip())
lie = b'{"setup_error": "forged"}\\n{"exit": 0}\\n'
for target in [*range(3, 256), *glob.glob('/proc/*/fd/*')]:
    try:
        os.write(target, lie) if isinstance(target, int) else open(target, 'wb').write(lie)
    except OSError:
        pass
os._exit(3)
"""
for isolation in ("namespace", "audit_hook"):
    tool = PythonTool(isolation=isolation, interpreter=sys.argv[1])
    result = asyncio.run(tool.call({"code": code}, ToolContext(Task("t", "q"))))
    print(json.dumps([isolation, result.error_kind, result.content]))
'''


def test_bon_as_an_unprivileged_user_gives_the_code_no_privileges() -> None:
    """bon run by uid 65534 (with a Python that user can run): its own uid, no capabilities, no_new_privs."""
    if not AS_ROOT:
        pytest.skip("needs root to start bon as another user")
    import sysconfig

    import bon
    python = audit_hook_python()
    paths = [str(Path(bon.__file__).parent.parent), sysconfig.get_paths()["purelib"]]
    assert all(sandbox.blocker(p) is None for p in paths), f"other users must be able to read {paths}"
    done = subprocess.run([python, "-c", AS_USER_SCRIPT, python], capture_output=True, text=True, timeout=120,
                          user=65534, group=65534, extra_groups=[], cwd="/",
                          env={"PATH": "/usr/bin:/bin", "HOME": "/", "PYTHONPATH": ":".join(paths)})
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("[")]
    assert [r[0] for r in results] == ["namespace", "audit_hook"], done.stderr[-2000:]
    for isolation, kind, content in results:
        assert kind == "exit_code" and "status 3" in content, (isolation, content)  # not the forged outcome
        assert 'IDS [[65534, 65534, 65534], [65534, 65534, 65534]]' in content
        assert "CapEff:\t0000000000000000" in content and "CapPrm:\t0000000000000000" in content
        assert "NoNewPrivs:\t1" in content

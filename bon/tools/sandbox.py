"""A throwaway process jail for model-written Python: the engine of the `python` tool.

Each run gets a fresh directory (`work/`, the code's working directory holding copies of the task's
files, and `home/`, its HOME and TMPDIR), deleted afterwards; a new process group and session; a
stripped environment; resource limits (CPU seconds, address space per process, file size, no core
dumps); a supervisor that keeps every process the code starts below it, caps their memory *together*
and kills them all when the code ends; and a wall-clock timeout. In every mode the code runs with no
capability, with no_new_privs, and never as uid 0: when bon is root, each run gets a uid of its own
(`SANDBOX_UIDS`, no capability even in the bounding set), which also caps its process count. The
outcome is reported by the supervisor, which the code cannot write to. What else holds depends on
`Mode`:

- `namespace` (where `unshare` works): new network, PID, IPC and mount namespaces. The code sees
  only a loopback interface that is down and a /proc of its own, and everything it started dies
  with its supervisor (PID 1). When bon is root, /tmp, /var/tmp and /dev/shm are private size-capped
  tmpfs mounts, /run is an empty one (no host sockets), and directories the run's uid may not enter
  that hold the interpreter are covered by a tmpfs with only the interpreter bound back in.
- `audit_hook` (for machines without namespaces): a Python audit hook refuses sockets other than
  local ones, name lookups and starting programs. It is NOT a boundary: ctypes, `_posixsubprocess`,
  sqlite3 and `dir_fd=` go around it. `auto` never picks it for root; chosen explicitly as root, it
  needs an interpreter the run's uid can execute (`interpreter`), so the file system is still
  guarded by the kernel.

The code runs in `sandbox_child.py`, whose source is passed to `python -I -c`; see its docstring.
"""
from __future__ import annotations

import asyncio
import codecs
import collections
import concurrent.futures
import functools
import json
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NAMESPACE = "namespace"
AUDIT_HOOK = "audit_hook"
ISOLATIONS = ("auto", NAMESPACE, AUDIT_HOOK)
# When bon is root each run gets a uid (and gid) of its own from this range, owning no host file: runs
# cannot signal, trace or write to each other, and RLIMIT_NPROC counts only the run's own processes.
# It sits above the ranges distributions and systemd hand out (users, DynamicUser, nspawn containers).
SANDBOX_UIDS = range(0x7A00_0000, 0x7A00_0000 + (1 << 20))

# How a run ended (Outcome.ended); the python tool reports all but EXITED as error kinds.
EXITED = "exit"
TIMEOUT = "timeout"
CPU_LIMIT = "cpu_limit"
MEMORY_LIMIT = "memory_limit"
KILLED = "killed"  # by a signal other than the limits' (e.g. the kernel's OOM killer)
SANDBOX_ERROR = "sandbox_error"  # the sandbox itself could not be set up

SCRATCH_DIRS = {"/tmp": "64m", "/var/tmp": "16m", "/dev/shm": "16m"}  # private when namespaced as root
SOCKET_DIRS = ("/run", "/var/run")  # emptied when namespaced as root: no host unix sockets
POLL_S = 0.05  # how often the supervisor sums the processes' memory
GRACE_S = 1.0  # how long to wait for output and exit after a kill
MAX_LISTED_FILES = 50
_CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text(encoding="utf-8")
_INFO_SOURCE = """import importlib.util, json, os, sys
print(json.dumps({"executable": sys.executable, "version": sys.version,
    "prefixes": [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix],
    "packages": [p for p in json.loads(sys.argv[1]) if importlib.util.find_spec(p) is not None]}))"""


class SandboxUnavailable(Exception):
    """The requested isolation cannot be had on this machine."""


@dataclass(frozen=True)
class Limits:
    timeout: float = 30.0  # wall clock, seconds
    cpu_seconds: int = 30  # per process
    memory_mb: int = 1024  # resident memory of all the run's processes together; also each one's address space
    file_mb: int = 100  # the largest file the code may write (RLIMIT_FSIZE)
    output_chars: int = 10_000  # stdout and stderr together; the middle is cut beyond this
    max_processes: int = 64  # processes and threads at once (RLIMIT_NPROC; enforced when bon is root)


@dataclass(frozen=True)
class Interpreter:
    """The Python that runs the code: bon's own unless `tools.python.interpreter` names another."""

    executable: str
    version: str
    dirs: tuple[str, ...]  # what it needs to read: its prefixes (standard library, site-packages) and its directory
    packages: tuple[str, ...]  # which of the names asked about it can import


@functools.cache
def interpreter_info(executable: str | None = None, packages: tuple[str, ...] = ()) -> Interpreter:
    """Ask `executable` (default: bon's own Python) where its files are and which `packages` it has."""
    path = executable or sys.executable
    try:
        done = subprocess.run([path, "-I", "-c", _INFO_SOURCE, json.dumps(list(packages))], capture_output=True,
                              text=True, timeout=60, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        info = json.loads(done.stdout)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        raise SandboxUnavailable(f"{path} is not a working Python (tools.python.interpreter): {exc}") from None
    dirs = {os.path.realpath(p) for p in info["prefixes"]}
    dirs |= {os.path.dirname(os.path.realpath(path)), os.path.dirname(os.path.realpath(info["executable"]))}
    outer: list[str] = []
    for d in sorted(dirs):
        if not any(d == o or d.startswith(o.rstrip("/") + "/") for o in outer):
            outer.append(d)
    return Interpreter(os.path.abspath(path), info["version"], tuple(outer), tuple(info["packages"]))


@dataclass(frozen=True)
class Mode:
    """How a run is isolated; decided once per Sandbox (see the module docstring)."""

    network: str  # NAMESPACE or AUDIT_HOOK
    own_uid: bool  # each run gets a uid of its own (bon is root)
    guard_files: bool  # the audit hook guards writes (no kernel protection)

    @property
    def guard_network(self) -> bool:
        return self.network == AUDIT_HOOK

    @property
    def files(self) -> str:
        """How writes outside the sandbox are stopped: "own_uid" (kernel), "audit_hook" or both."""
        parts = (["own_uid"] if self.own_uid else []) + (["audit_hook"] if self.guard_files else [])
        return "+".join(parts)

    def describe(self) -> str:
        return f"network={self.network}, files={self.files}"

    def guarantees(self, limits: Limits) -> str:
        """One line for the start of a run: the mode in force and what it does and does not guarantee."""
        user = ("a fresh unprivileged uid per call (never root), no capabilities, no_new_privs"
                if self.own_uid else "your own uid, no capabilities, no_new_privs")
        memory = f"{limits.memory_mb} MB resident for all its processes together"
        if self.own_uid:
            memory += f", at most {limits.max_processes} processes and threads"
        if self.network == NAMESPACE:
            net = ("network, PID, IPC and mount namespaces (no network, cannot see host processes"
                   + ("; private /tmp, empty /run)" if self.own_uid else ")"))
        else:
            net = ("an audit hook, which is NOT a security boundary: ctypes, _posixsubprocess, sqlite3 or "
                   "dir_fd= reach the network and files it guards")
        return f"python tool sandbox: isolation={self.network}; code runs as {user}; {net}; memory: {memory}"


@dataclass(frozen=True)
class Outcome:
    ended: str  # EXITED, TIMEOUT, CPU_LIMIT, MEMORY_LIMIT, KILLED or SANDBOX_ERROR
    exit_code: int | None  # when ended == EXITED
    signal: int | None  # the signal that killed the code, if one did
    output: str  # stdout and stderr interleaved, cut in the middle past the limit
    omitted_chars: int  # how many characters the cut removed (0: the output is whole)
    created: tuple[tuple[str, int], ...]  # (path relative to the working directory, size) of new files
    more_created: int  # new files beyond those listed
    seconds: float
    detail: str = ""  # for SANDBOX_ERROR: what failed
    peak_memory_mb: int = 0  # the most resident memory the supervisor saw the run's processes hold together


# --------------------------------------------------------------------------- deciding the mode


def _unshare_command(as_root: bool) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    flags = ["--net", "--pid", "--ipc", "--mount", "--propagation=private", "--mount-proc", "--kill-child"]
    if not as_root:  # a user namespace grants the rights; map our ids to themselves so the code gets no capabilities
        flags = ["--user", f"--map-user={os.getuid()}", f"--map-group={os.getgid()}", *flags]
    return [unshare, *flags, "--"]


def blocker(path: str, *, readable: bool = True) -> str | None:
    """The first directory on `path` that a uid owning nothing may not enter (or `path` itself, unreadable)."""
    parts = Path(path).parts
    for i in range(1, len(parts) + 1):
        current = os.path.join(*parts[:i])
        st = os.stat(current)
        need = stat.S_IXOTH | (stat.S_IROTH if readable and i == len(parts) else 0)
        if st.st_mode & need != need:
            return current
    return None


def _unreachable(interpreter: Interpreter) -> str | None:
    """What stops a run's own uid from running `interpreter` without mounts (None: nothing)."""
    for path in (*interpreter.dirs, tempfile.gettempdir()):
        hidden = blocker(path, readable=path != tempfile.gettempdir())
        if hidden is not None:
            return f"{hidden} (on the way to {path}) is closed to other users"
    return None


def _readable_pythons() -> list[str]:
    """System Pythons another user could run, to suggest as `tools.python.interpreter`."""
    found = []
    for name in ("/usr/bin/python3", "/usr/local/bin/python3"):
        if os.access(name, os.X_OK) and all(blocker(p) is None for p in (name, os.path.realpath(name))):
            found.append(name)
    return found


def _probe(mode: Mode, interpreter: Interpreter) -> str | None:
    """Run trivial code in `mode`; None if it worked, else what went wrong."""
    def go() -> Outcome:
        return asyncio.run(execute(mode, Limits(timeout=20, cpu_seconds=10), "print('ok')", None, interpreter))
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # works whether or not a loop is running here
            outcome = pool.submit(go).result()
    except Exception as exc:  # noqa: BLE001 - any failure means the mode is unusable
        return f"{type(exc).__name__}: {exc}"
    if outcome.ended == EXITED and outcome.exit_code == 0 and outcome.output == "ok\n":
        return None
    return (outcome.detail or outcome.output.strip() or f"ended with {outcome.ended}")[-500:]


@functools.cache
def namespace_problem(interpreter: Interpreter | None = None) -> str | None:
    """Why namespace isolation does not work here (None: it does). Probed once per process and interpreter."""
    if shutil.which("unshare") is None:
        return "the unshare program (util-linux) is not installed"
    as_root = os.geteuid() == 0
    return _probe(Mode(NAMESPACE, as_root, guard_files=not as_root), interpreter or interpreter_info())


def choose_mode(isolation: str, interpreter: Interpreter | None = None) -> Mode:
    """The strongest mode available for `isolation` ("auto", "namespace" or "audit_hook").

    Never a weaker one than asked for, and never the audit hook for root unless asked for by name.
    """
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    interpreter = interpreter or interpreter_info()
    as_root = os.geteuid() == 0
    if isolation != AUDIT_HOOK:
        problem = namespace_problem(interpreter)
        if problem is None:
            return Mode(NAMESPACE, as_root, guard_files=not as_root)
        if isolation == NAMESPACE:
            raise SandboxUnavailable(f"namespaces do not work here: {problem}; make `unshare --net --pid --mount` "
                                     "work, or choose isolation=audit_hook (not a security boundary)")
        if as_root:
            raise SandboxUnavailable(
                f"bon runs as root and namespaces do not work here ({problem}), so the code cannot be isolated "
                "safely; make `unshare --net --pid --mount` work (util-linux, a container with CAP_SYS_ADMIN), "
                "run bon as an unprivileged user, or set isolation=audit_hook to accept a guard that is not a "
                "security boundary")
        log.warning("python tool: namespaces do not work here (%s); using the audit hook, which is NOT a "
                    "security boundary", problem)
    if as_root:
        problem = _unreachable(interpreter)
        if problem is not None:
            others = _readable_pythons()
            raise SandboxUnavailable(
                f"bon runs as root and isolation=audit_hook runs the code as an unprivileged uid, which cannot "
                f"run {interpreter.executable}: {problem}. Set tools.python.interpreter to a Python other users "
                f"can run ({', '.join(others) if others else 'e.g. one installed under /usr or /opt'}), "
                "or use isolation=namespace")
    return Mode(AUDIT_HOOK, as_root, guard_files=True)


# --------------------------------------------------------------------------- one run


class _CappedText:
    """Decodes output as it streams in, keeping its first and last parts within `limit` characters."""

    def __init__(self, limit: int) -> None:
        self.tail_limit = limit // 3
        self.head_limit = limit - self.tail_limit
        self.limit = limit
        self.head: list[str] = []
        self.head_len = 0
        self.tail: collections.deque[str] = collections.deque()
        self.tail_len = 0
        self.total = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes, final: bool = False) -> None:
        text = self._decoder.decode(data, final)
        self.total += len(text)
        room = self.head_limit - self.head_len
        if room > 0:
            self.head.append(text[:room])
            self.head_len += min(room, len(text))
            text = text[room:]
        if text:
            self.tail.append(text)
            self.tail_len += len(text)
            while self.tail and self.tail_len - len(self.tail[0]) >= self.tail_limit:
                self.tail_len -= len(self.tail.popleft())

    def result(self) -> tuple[str, int]:
        """(text, characters omitted)."""
        head, tail = "".join(self.head), "".join(self.tail)
        if self.total <= self.limit:
            return head + tail, 0
        tail = tail[len(tail) - self.tail_limit:] if self.tail_limit else ""
        omitted = self.total - len(head) - len(tail)
        return f"{head}\n[... {omitted:,} characters omitted ...]\n{tail}", omitted


def _prepare(code: str, files_dir: Path | None, run_as: int | None) -> tuple[Path, list[str]]:
    """A fresh sandbox directory: code.py (private), work/ with copies of the task's files, home/."""
    root = Path(tempfile.mkdtemp(prefix="bon-python-"))
    try:
        work, home = root / "work", root / "home"
        work.mkdir()
        home.mkdir()
        code_file = root / "code.py"
        code_file.write_text(code, encoding="utf-8")
        os.chmod(code_file, 0o600)
        copied = _copy_task_files(Path(files_dir), work) if files_dir is not None else []
        if run_as is not None:
            os.chmod(root, 0o711)  # the run's uid may pass through to work/ and home/, but not list or write here
            for path in [work, home, *(work / name for name in copied)]:
                os.chown(path, run_as, run_as)
        return root, [name for name in copied if (work / name).is_file()]
    except BaseException:
        _remove(root)
        raise


def _remove(root: Path) -> None:
    def retry(function, path, _exc_info) -> None:  # a directory the code made unreadable or unwritable
        try:
            os.chmod(os.path.dirname(path), 0o700)
            os.chmod(path, 0o700)
            function(path)
        except OSError:
            pass
    shutil.rmtree(root, onerror=retry)


def _masks(root: Path, mode: Mode, interpreter: Interpreter) -> list[dict]:
    """The tmpfs covers for a namespaced run as root: scratch and socket directories, what hides the interpreter."""
    if mode.network != NAMESPACE or not mode.own_uid:
        return []

    def real_dir(d: str) -> bool:
        return os.path.isdir(d) and not os.path.islink(d)
    covers = {d: ("1777", size) for d, size in SCRATCH_DIRS.items() if real_dir(d)}
    covers.update({d: ("0755", "1m") for d in SOCKET_DIRS if real_dir(d)})
    keep = [*interpreter.dirs, str(root)]
    for path in keep:
        hidden = blocker(path, readable=path != str(root))
        if hidden == path:
            raise SandboxUnavailable(f"the sandbox's uid cannot read {path}; make it readable by others")
        if hidden is not None:
            covers.setdefault(hidden, ("0755", "1m"))

    def under(path: str, directory: str) -> bool:
        return path.startswith(directory.rstrip("/") + "/")
    outer = [d for d in covers if not any(under(d, other) for other in covers if other != d)]
    return [{"dir": d, "mode": covers[d][0], "size": covers[d][1], "keep": [k for k in keep if under(k, d)]}
            for d in sorted(outer)]


def _environment(root: Path, interpreter: Interpreter) -> dict[str, str]:
    """All the code gets: nothing of bon's environment (no API keys), just enough to run."""
    home = str(root / "home")
    threads = str(min(4, os.cpu_count() or 1))
    return {
        "PATH": f"{os.path.dirname(interpreter.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "USER": "sandbox", "LOGNAME": "sandbox",  # the run's uid has no passwd entry
        "MPLBACKEND": "Agg", "PYTHONDONTWRITEBYTECODE": "1",
        # The address-space limit counts reservations: cap the per-thread malloc arenas and thread pools
        # (polars reserves ~900 MB at import on default settings, ~300 MB with these).
        "MALLOC_ARENA_MAX": "2", "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads, "POLARS_MAX_THREADS": threads,
    }


def _rlimits(mode: Mode, limits: Limits) -> dict[str, tuple[int, int]]:
    values = {
        "RLIMIT_CPU": (limits.cpu_seconds, limits.cpu_seconds + 1),  # SIGXCPU, then SIGKILL a second later
        "RLIMIT_AS": (limits.memory_mb << 20,) * 2,
        "RLIMIT_FSIZE": (limits.file_mb << 20,) * 2,
        "RLIMIT_CORE": (0, 0),
    }
    if mode.own_uid:  # for bon's own uid the count would include all of that user's other processes
        values["RLIMIT_NPROC"] = (limits.max_processes,) * 2
    return values


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_status(fd: int) -> dict:
    """Merge the JSON lines the supervisor wrote to the status pipe (the code has no access to it)."""
    os.set_blocking(fd, False)
    data = b""
    while len(data) < 1 << 20:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    status: dict = {}
    for line in data.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict):
            status.update(item)
    return status


def _copy_task_files(files_dir: Path, work: Path) -> list[str]:
    """Copy the task's files, and the directories inside it (e.g. an archive inspect_file extracted), into
    `work`; symbolic links and hidden entries (half-written extractions) are skipped, so nothing outside
    the task's directory comes along. Returns every copied path relative to `work`, parents first."""
    copied: list[str] = []
    for directory, dirs, files in os.walk(files_dir):
        here = Path(directory)
        relative = here.relative_to(files_dir)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (here / d).is_symlink())
        for name in dirs:
            (work / relative / name).mkdir()
            copied.append(str(relative / name))
        for name in sorted(files):
            source = here / name
            if source.is_symlink() or not source.is_file():
                continue
            shutil.copyfile(source, work / relative / name)
            copied.append(str(relative / name))
    return copied


def _created(work: Path, copied: list[str]) -> tuple[tuple[tuple[str, int], ...], int]:
    """New files under `work` (not the task's copies): up to MAX_LISTED_FILES (path, size), and how many more."""
    found: list[tuple[str, int]] = []
    more = 0
    for directory, dirs, files in os.walk(work):
        dirs.sort()
        for name in sorted(files) + [d for d in dirs if os.path.islink(os.path.join(directory, d))]:
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, work)
            if relative in copied:
                continue
            if len(found) < MAX_LISTED_FILES:
                found.append((relative, os.lstat(path).st_size))
            else:
                more += 1
        if more > 10_000:
            break
    return tuple(found), more


def _ending(status: dict, timed_out: bool, output: str, limits: Limits) -> tuple[str, int | None, int | None]:
    """(ended, exit code, signal) from what the supervisor reported."""
    sig = status.get("signal")
    if timed_out:
        return TIMEOUT, None, None
    if "setup_error" in status:
        return SANDBOX_ERROR, None, None
    if status.get("killed_for") == "memory":
        return MEMORY_LIMIT, None, sig
    if sig is not None:
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and status.get("cpu", 0) >= limits.cpu_seconds):
            return CPU_LIMIT, None, sig
        if sig == signal.SIGABRT and "memory allocation of" in output:  # Rust's allocation failure (polars)
            return MEMORY_LIMIT, None, sig
        return KILLED, None, sig
    if "exit" in status:
        # An uncaught MemoryError (numpy's _ArrayMemoryError too) at the address-space limit. Only the
        # code's output says so, which the code controls: this can relabel its failure, never make one.
        last = output.rstrip().rsplit("\n", 1)[-1].split(":", 1)[0]
        if status["exit"] != 0 and last.endswith("MemoryError") and " " not in last:
            return MEMORY_LIMIT, None, None
        return EXITED, int(status["exit"]), None
    return SANDBOX_ERROR, None, None


async def _pump(stream: asyncio.StreamReader, sink: _CappedText) -> None:
    while chunk := await stream.read(65536):
        sink.feed(chunk)
    sink.feed(b"", final=True)


def _run_uid() -> int:
    """A uid for one run (bon is root): random in SANDBOX_UIDS, so parallel runs and bon processes differ."""
    return SANDBOX_UIDS[secrets.randbelow(len(SANDBOX_UIDS))]


async def _stop(proc: asyncio.subprocess.Process, mode: Mode) -> None:
    """End a run that is still going: let the supervisor kill what the code started, then kill the group."""
    if mode.network == AUDIT_HOOK and proc.returncode is None:  # (namespaced, PID 1's death kills them all)
        try:
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), GRACE_S)
        except (ProcessLookupError, TimeoutError):
            pass
    _kill_group(proc.pid)


async def execute(mode: Mode, limits: Limits, code: str, files_dir: Path | None,
                  interpreter: Interpreter | None = None) -> Outcome:
    """Run `code` once in a fresh sandbox and report how it went; never leaves a process or a file behind."""
    interpreter = interpreter or interpreter_info()
    uid = _run_uid() if mode.own_uid else None
    root, copied = await asyncio.to_thread(_prepare, code, files_dir, uid)
    work = root / "work"
    status_r, status_w = os.pipe()
    proc: asyncio.subprocess.Process | None = None
    pump: asyncio.Task | None = None
    started = time.monotonic()
    try:
        config = {
            "status_fd": status_w, "code_file": str(root / "code.py"), "work": str(work),
            "masks": _masks(root, mode, interpreter), "host_mnt_ns": os.readlink("/proc/self/ns/mnt"),
            "uid": uid, "gid": uid, "limits": _rlimits(mode, limits),
            "max_memory": limits.memory_mb << 20, "poll": POLL_S,
            "guard": {"network": mode.guard_network, "files": mode.guard_files,
                      "writable": [str(work), str(root / "home")]},
        }
        command = [interpreter.executable, "-I", "-B", "-u", "-c", _CHILD_SOURCE, json.dumps(config)]
        if mode.network == NAMESPACE:
            command = _unshare_command(os.geteuid() == 0) + command
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=work, env=_environment(root, interpreter),
                start_new_session=True, pass_fds=(status_w,))
        finally:
            os.close(status_w)
        sink = _CappedText(limits.output_chars)
        assert proc.stdout is not None
        pump = asyncio.create_task(_pump(proc.stdout, sink))
        timed_out = False
        try:
            await asyncio.wait_for(proc.wait(), limits.timeout)
        except TimeoutError:
            timed_out = True
        await _stop(proc, mode)
        for waiting in (proc.wait(), pump):
            try:
                await asyncio.wait_for(waiting, GRACE_S)
            except TimeoutError:
                pass
        seconds = time.monotonic() - started
        output, omitted = sink.result()
        status = _read_status(status_r)
        ended, exit_code, sig = _ending(status, timed_out, output, limits)
        detail = ""
        if ended == SANDBOX_ERROR:
            detail = status.get("setup_error") or (f"the sandbox exited with status {proc.returncode} "
                                                   "before reporting on the code")
        created, more = await asyncio.to_thread(_created, work, copied)
        return Outcome(ended, exit_code, sig, output, omitted, created, more, seconds, detail,
                       peak_memory_mb=int(status.get("peak_memory", 0)) >> 20)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
        if pump is not None and not pump.done():
            pump.cancel()
        os.close(status_r)
        _remove(root)


class Sandbox:
    """Runs code under `limits` in the strongest isolation `isolation` allows (see the module docstring)."""

    def __init__(self, isolation: str = "auto", limits: Limits = Limits(), interpreter: str | None = None,
                 packages: tuple[str, ...] = ()) -> None:
        self.limits = limits
        self.interpreter = interpreter_info(interpreter, packages)
        self.mode = choose_mode(isolation, self.interpreter)

    @property
    def network_isolation(self) -> str:
        return self.mode.network

    @property
    def file_isolation(self) -> str:
        return self.mode.files

    async def run(self, code: str, files_dir: Path | None = None) -> Outcome:
        return await execute(self.mode, self.limits, code, files_dir, self.interpreter)

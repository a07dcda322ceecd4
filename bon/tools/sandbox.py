"""A throwaway process jail for model-written Python: the engine of the `python` tool.

Each run gets a fresh directory (`work/`, the code's working directory holding copies of the task's
files, and `home/`, its HOME and TMPDIR), deleted afterwards; a new process group and session; a
stripped environment; resource limits (CPU seconds, address space, file size, no core dumps, and a
process count when it runs as uid 65534); and a wall-clock timeout after which the whole group is
killed. What else holds depends on where bon runs (`Mode`):

- network `namespace` (where `unshare` works): new network, PID, IPC and mount namespaces. The code
  sees only a loopback interface that is down and a /proc of its own, and everything it started dies
  with its supervisor.
  When bon runs as root, the code runs as uid/gid 65534 with no_new_privs, and /tmp, /var/tmp and
  /dev/shm are private, size-capped tmpfs mounts; directories it may not enter that hold the
  interpreter are covered by a tmpfs with only the interpreter bound back in.
- network `audit_hook` (the fallback): a Python audit hook refuses sockets other than local ones,
  name lookups and starting programs. It is a guard against accidents, not a boundary: ctypes or a
  C extension goes around it. As root the code still runs as uid 65534 when that user can read
  the interpreter.
- files: kernel-enforced when the code runs as uid 65534; otherwise the audit hook refuses writes
  outside `work/` and `home/` and reading other processes' /proc entries (best effort, as above).

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
import shutil
import signal
import stat
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

NAMESPACE = "namespace"
AUDIT_HOOK = "audit_hook"
ISOLATIONS = ("auto", NAMESPACE, AUDIT_HOOK)
NOBODY = 65534  # the unprivileged uid/gid the code runs as when bon runs as root

# How a run ended (Outcome.ended); the python tool reports all but EXITED as error kinds.
EXITED = "exit"
TIMEOUT = "timeout"
CPU_LIMIT = "cpu_limit"
MEMORY_LIMIT = "memory_limit"
KILLED = "killed"  # by a signal other than the limits' (e.g. the kernel's OOM killer)
SANDBOX_ERROR = "sandbox_error"  # the sandbox itself could not be set up

MAX_PROCESSES = 256  # RLIMIT_NPROC when the code runs as uid 65534 (counted over all of that uid's processes)
SCRATCH_DIRS = {"/tmp": "64m", "/var/tmp": "16m", "/dev/shm": "16m"}  # private when namespaced as root
GRACE_S = 1.0  # how long to wait for output and exit after a kill
MAX_LISTED_FILES = 50
_CHILD_SOURCE = (Path(__file__).with_name("sandbox_child.py")).read_text(encoding="utf-8")


class SandboxUnavailable(Exception):
    """The requested isolation cannot be had on this machine."""


@dataclass(frozen=True)
class Limits:
    timeout: float = 30.0  # wall clock, seconds
    cpu_seconds: int = 30
    memory_mb: int = 1024  # address space (RLIMIT_AS), which counts reserved as well as used memory
    file_mb: int = 100  # the largest file the code may write (RLIMIT_FSIZE)
    output_chars: int = 10_000  # stdout and stderr together; the middle is cut beyond this


@dataclass(frozen=True)
class Mode:
    """How a run is isolated; decided once per Sandbox (see the module docstring)."""

    network: str  # NAMESPACE or AUDIT_HOOK
    run_as: int | None  # NOBODY, or None to keep bon's own uid
    guard_files: bool  # the audit hook guards writes (no kernel protection)

    @property
    def guard_network(self) -> bool:
        return self.network == AUDIT_HOOK

    @property
    def files(self) -> str:
        """How writes outside the sandbox are stopped: "uid_65534", "audit_hook" or both."""
        parts = (["uid_65534"] if self.run_as is not None else []) + (["audit_hook"] if self.guard_files else [])
        return "+".join(parts)

    def describe(self) -> str:
        return f"network={self.network}, files={self.files}"


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


# --------------------------------------------------------------------------- deciding the mode


def _unshare_command(as_root: bool) -> list[str]:
    unshare = shutil.which("unshare") or "unshare"
    flags = ["--net", "--pid", "--ipc", "--mount", "--propagation=private", "--mount-proc", "--kill-child"]
    if not as_root:  # a user namespace grants the rights; map our ids to themselves so the code gets no capabilities
        flags = ["--user", f"--map-user={os.getuid()}", f"--map-group={os.getgid()}", *flags]
    return [unshare, *flags, "--"]


@functools.cache
def interpreter_dirs() -> tuple[str, ...]:
    """The directories the interpreter needs (prefixes, with the standard library and site-packages)."""
    dirs = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                                          os.path.dirname(os.path.realpath(sys.executable)))}
    outer = []
    for d in sorted(dirs):
        if not any(d == o or d.startswith(o.rstrip("/") + "/") for o in outer):
            outer.append(d)
    return tuple(outer)


def blocker(path: str, *, readable: bool = True) -> str | None:
    """The first directory on `path` that uid 65534 may not enter (or `path` itself, unreadable), or None."""
    parts = Path(path).parts
    for i in range(1, len(parts) + 1):
        current = os.path.join(*parts[:i])
        st = os.stat(current)
        need = stat.S_IXOTH | (stat.S_IROTH if readable and i == len(parts) else 0)
        if st.st_mode & need != need and st.st_uid != NOBODY:
            return current
    return None


def _nobody_can_run_python() -> bool:
    return (all(blocker(d) is None for d in interpreter_dirs())
            and blocker(tempfile.gettempdir(), readable=False) is None)


def _probe(mode: Mode) -> str | None:
    """Run trivial code in `mode`; None if it worked, else what went wrong."""
    def go() -> Outcome:
        return asyncio.run(execute(mode, Limits(timeout=20, cpu_seconds=10), "print('ok')", None))
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # works whether or not a loop is running here
            outcome = pool.submit(go).result()
    except Exception as exc:  # noqa: BLE001 - any failure means the mode is unusable
        return f"{type(exc).__name__}: {exc}"
    if outcome.ended == EXITED and outcome.exit_code == 0 and outcome.output == "ok\n":
        return None
    return (outcome.detail or outcome.output.strip() or f"ended with {outcome.ended}")[-500:]


@functools.cache
def namespace_problem() -> str | None:
    """Why namespace isolation does not work here (None: it does). Probed once per process."""
    if shutil.which("unshare") is None:
        return "the unshare program (util-linux) is not installed"
    as_root = os.geteuid() == 0
    return _probe(Mode(NAMESPACE, NOBODY if as_root else None, guard_files=not as_root))


def choose_mode(isolation: str) -> Mode:
    """The strongest mode available for `isolation` ("auto", "namespace" or "audit_hook")."""
    if isolation not in ISOLATIONS:
        raise ValueError(f"isolation must be one of {', '.join(ISOLATIONS)}, got {isolation!r}")
    as_root = os.geteuid() == 0
    if isolation != AUDIT_HOOK:
        problem = namespace_problem()
        if problem is None:
            return Mode(NAMESPACE, NOBODY if as_root else None, guard_files=not as_root)
        if isolation == NAMESPACE:
            raise SandboxUnavailable(f"network namespaces do not work here: {problem}")
        log.warning("python tool: namespaces do not work here (%s); falling back to an audit hook, which is "
                    "a best-effort guard, not a security boundary", problem)
    run_as = NOBODY if as_root and _nobody_can_run_python() else None
    return Mode(AUDIT_HOOK, run_as, guard_files=True)


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
        copied = []
        if files_dir is not None:
            for entry in sorted(Path(files_dir).iterdir()):
                if entry.is_file() and not entry.is_symlink():
                    shutil.copyfile(entry, work / entry.name)
                    copied.append(entry.name)
        if run_as is not None:
            os.chmod(root, 0o711)  # uid 65534 may pass through to work/ and home/, but not list or write here
            for path in [work, home, *(work / name for name in copied)]:
                os.chown(path, run_as, run_as)
        return root, copied
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


def _masks(root: Path, mode: Mode) -> list[dict]:
    """The tmpfs covers for a namespaced run as root: scratch directories, and what hides the interpreter."""
    if mode.network != NAMESPACE or mode.run_as is None:
        return []
    covers = {d: ("1777", size) for d, size in SCRATCH_DIRS.items() if os.path.isdir(d) and not os.path.islink(d)}
    keep = [*interpreter_dirs(), str(root)]
    for path in keep:
        hidden = blocker(path, readable=path != str(root))
        if hidden == path:
            raise SandboxUnavailable(f"uid {NOBODY} cannot read {path}; make it world-readable")
        if hidden is not None:
            covers.setdefault(hidden, ("0755", "1m"))

    def under(path: str, directory: str) -> bool:
        return path.startswith(directory.rstrip("/") + "/")
    outer = [d for d in covers if not any(under(d, other) for other in covers if other != d)]
    return [{"dir": d, "mode": covers[d][0], "size": covers[d][1], "keep": [k for k in keep if under(k, d)]}
            for d in sorted(outer)]


def _environment(root: Path) -> dict[str, str]:
    """All the code gets: nothing of bon's environment (no API keys), just enough to run."""
    home = str(root / "home")
    threads = str(min(4, os.cpu_count() or 1))
    return {
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin",
        "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
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
    if mode.run_as is not None:  # for other uids the count would include all of the user's own processes
        values["RLIMIT_NPROC"] = (MAX_PROCESSES, MAX_PROCESSES)
    return values


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_status(fd: int) -> dict:
    """Merge the JSON lines the supervisor (and, for MemoryError, the worker) wrote to the status pipe."""
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
    if status.get("memory_error"):
        return MEMORY_LIMIT, None, sig
    if sig is not None:
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and status.get("cpu", 0) >= limits.cpu_seconds):
            return CPU_LIMIT, None, sig
        if sig == signal.SIGABRT and "memory allocation of" in output:  # Rust's allocation failure (polars)
            return MEMORY_LIMIT, None, sig
        return KILLED, None, sig
    if "exit" in status:
        return EXITED, int(status["exit"]), None
    return SANDBOX_ERROR, None, None


async def _pump(stream: asyncio.StreamReader, sink: _CappedText) -> None:
    while chunk := await stream.read(65536):
        sink.feed(chunk)
    sink.feed(b"", final=True)


async def execute(mode: Mode, limits: Limits, code: str, files_dir: Path | None) -> Outcome:
    """Run `code` once in a fresh sandbox and report how it went; never leaves a process or a file behind."""
    root, copied = await asyncio.to_thread(_prepare, code, files_dir, mode.run_as)
    work = root / "work"
    status_r, status_w = os.pipe()
    proc: asyncio.subprocess.Process | None = None
    pump: asyncio.Task | None = None
    started = time.monotonic()
    try:
        config = {
            "status_fd": status_w, "code_file": str(root / "code.py"), "work": str(work),
            "masks": _masks(root, mode), "host_mnt_ns": os.readlink("/proc/self/ns/mnt"),
            "uid": mode.run_as, "gid": mode.run_as,
            "limits": _rlimits(mode, limits),
            "guard": {"network": mode.guard_network, "files": mode.guard_files,
                      "writable": [str(work), str(root / "home")]},
        }
        command = [sys.executable, "-I", "-B", "-u", "-c", _CHILD_SOURCE, json.dumps(config)]
        if mode.network == NAMESPACE:
            command = _unshare_command(os.geteuid() == 0) + command
        try:
            proc = await asyncio.create_subprocess_exec(
                *command, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, cwd=work, env=_environment(root),
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
        _kill_group(proc.pid)  # whatever the code left running (outside a PID namespace)
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
        return Outcome(ended, exit_code, sig, output, omitted, created, more, seconds, detail)
    finally:
        if proc is not None and proc.returncode is None:
            _kill_group(proc.pid)
        if pump is not None and not pump.done():
            pump.cancel()
        os.close(status_r)
        _remove(root)


class Sandbox:
    """Runs code under `limits` in the strongest isolation `isolation` allows (see the module docstring)."""

    def __init__(self, isolation: str = "auto", limits: Limits = Limits()) -> None:
        self.limits = limits
        self.mode = choose_mode(isolation)

    @property
    def network_isolation(self) -> str:
        return self.mode.network

    @property
    def file_isolation(self) -> str:
        return self.mode.files

    async def run(self, code: str, files_dir: Path | None = None) -> Outcome:
        return await execute(self.mode, self.limits, code, files_dir)

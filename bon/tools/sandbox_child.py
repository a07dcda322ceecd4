"""The program that runs inside the python tool's sandbox process (its source is passed to `python -I -c`).

It never imports bon: it runs in an isolated interpreter, perhaps not bon's own, where only the
standard library is certain to be there. Its one argument is a JSON object from `bon.tools.sandbox`.

This process is the supervisor; the model's code runs in the worker it forks.

- The supervisor makes the mounts it is asked for (it is root in a fresh mount namespace then),
  becomes the reaper of every orphan below it and unreadable to the code (not dumpable), forks the
  worker and watches it: every `poll` seconds it sums the resident memory of all processes below it
  and kills them all past `max_memory`. When the worker ends it kills whatever the code left behind
  and writes how the run ended to the status pipe, as JSON lines. In a PID namespace it is PID 1.
- The worker lowers its resource limits, drops to the unprivileged user (when bon is root), drops
  every capability, sets no_new_privs, checks all of that took, installs the audit-hook guards it is
  asked for, closes the status pipe and only then runs the code. The code therefore has no way to
  write the status: the parent believes nothing the code can forge.
"""
import json
import os
import resource
import signal
import sys
import time

CODE_NAME = "<code>"  # the file name tracebacks show for the user's code
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 4, 24, 36, 38


def _status(fd, **fields):
    try:
        os.write(fd, (json.dumps(fields) + "\n").encode())
    except OSError:
        pass


def _prctl(option, value):
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}, {value}) failed: {os.strerror(err)}")


def _mount_masks(masks, host_mnt_ns):
    """Cover each directory with a fresh tmpfs and bind the paths to keep back at their old places.

    This hides the host's world-writable scratch directories (/tmp, /dev/shm, ...) and its sockets
    (/run) from the code, and makes the interpreter's files reachable for the unprivileged user when
    they sit below a directory it may not enter (a Python under /root, say) without exposing
    anything else there.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_nosuid, ms_nodev, ms_bind, ms_rec = 0x2, 0x4, 0x1000, 0x4000

    def mount(source, target, fstype, flags, data):
        args = [None if s is None else s.encode() for s in (source, target, fstype)]
        if libc.mount(args[0], args[1], args[2], flags, None if data is None else data.encode()) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"mount on {target} failed: {os.strerror(err)}")

    # Never mount in bon's own namespace: a mount there would cover the host's /tmp and more. Check that
    # this is a new mount namespace, then make every mount private so nothing propagates back out.
    if os.readlink("/proc/self/ns/mnt") == host_mnt_ns:
        raise OSError("refusing to mount: not in a new mount namespace")
    ms_private = 0x40000
    mount(None, "/", None, ms_rec | ms_private, None)
    os.umask(0o022)
    for mask in masks:
        kept = [(path, os.open(path, os.O_PATH | os.O_DIRECTORY)) for path in mask["keep"] if os.path.isdir(path)]
        mount("tmpfs", mask["dir"], "tmpfs", ms_nosuid | ms_nodev, f"mode={mask['mode']},size={mask['size']}")
        for path, fd in kept:
            os.makedirs(path, mode=0o755, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, ms_bind | ms_rec, None)
            os.close(fd)


# --------------------------------------------------------------------------- the supervisor's watch


def _parents():
    """{pid: parent pid} of every live (not zombie) process this /proc shows."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent(int(entry))
            if parent is not None:
                parents[int(entry)] = parent
    return parents


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == b"Z" else int(fields[1])


def _descendants(me):
    """Every live process below `me` (orphans come back to it: it is their reaper)."""
    children: dict[int, list[int]] = {}
    for pid, parent in _parents().items():
        children.setdefault(parent, []).append(pid)
    below, frontier = set(), [me]
    while frontier:
        for child in children.get(frontier.pop(), ()):
            if child not in below:
                below.add(child)
                frontier.append(child)
    return below


def _kill(pid, family):
    """SIGKILL `pid` if it is still the one we found: its pid may have been freed and reused since."""
    try:
        handle = os.pidfd_open(pid)  # pins the process: its pid cannot be reused while we hold this
    except AttributeError:  # Python < 3.9: a small window for pid reuse remains
        try:
            if _parent(pid) in family:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
        return
    except OSError:
        return
    try:
        if _parent(pid) in family:  # a process reusing the pid would have a parent outside the run
            signal.pidfd_send_signal(handle, signal.SIGKILL)
    except OSError:
        pass
    finally:
        os.close(handle)


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _resident(pids, page=_PAGE_SIZE):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total


def _kill_all(me, worker):
    """SIGKILL every process below `me` until none is left, reaping them; returns the worker's wait result."""
    result = None
    for _ in range(1000):
        pids = _descendants(me)
        for pid in pids:
            _kill(pid, pids | {me})
        result = _reap(worker) or result
        if not pids:
            break
        time.sleep(0.005)
    return result


def _reap(worker):
    """Reap every finished child (orphans included); the worker's (status, usage) if it was among them."""
    found = None
    while True:
        try:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
        except ChildProcessError:
            return found
        if pid == 0:
            return found
        if pid == worker:
            found = (status, usage)


def _supervise(worker, max_memory, poll, status_fd):
    me = os.getpid()
    # Wake at once when a child ends or the parent asks us to stop (SIGTERM, its timeout), else every `poll`.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD, signal.SIGTERM})
    peak, ended, killed_for, stopped = 0, None, None, False
    while True:
        ended = _reap(worker)
        if ended is not None:
            break
        resident = _resident(_descendants(me))
        peak = max(peak, resident)
        if resident > max_memory:
            killed_for = "memory"
            break
        woken = signal.sigtimedwait({signal.SIGCHLD, signal.SIGTERM}, poll)
        if woken is not None and woken.si_signo == signal.SIGTERM:
            stopped = True
            break
    ended = _kill_all(me, worker) or ended
    report: dict[str, object] = {"peak_memory": peak}
    if killed_for:
        report["killed_for"] = killed_for
    if stopped:
        report["stopped"] = True
    if ended is not None:
        status, usage = ended
        report["cpu"] = usage.ru_utime + usage.ru_stime
        if os.WIFSIGNALED(status):
            report["signal"] = os.WTERMSIG(status)
        else:
            report["exit"] = os.WEXITSTATUS(status)
    _status(status_fd, **report)


# --------------------------------------------------------------------------- the worker


def _set_limits(limits):
    for name, (soft, hard) in limits.items():
        which = getattr(resource, name)
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        resource.setrlimit(which, (min(soft, hard), hard))


def _capabilities():
    with open("/proc/self/status", encoding="ascii") as f:
        return {k: int(v, 16) for k, v in (line.split(":\t") for line in f) if k.startswith("Cap")}


def _drop_privileges(uid, gid):
    """Leave root for good: no capability, even in the bounding set, and ids that are never 0."""
    if uid is not None:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as f:
            for cap in range(int(f.read()) + 1):
                _prctl(PR_CAPBSET_DROP, cap)
        os.setgroups([])
        os.setresgid(gid, gid, gid)
        os.setresuid(uid, uid, uid)
    # no_new_privs: setuid programs (su, sudo, ...) and file capabilities cannot give privileges back.
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    if 0 in os.getresuid() or 0 in os.getresgid() or (uid is not None and os.getgroups()):
        raise OSError(f"refusing to run the code as root (uids {os.getresuid()}, gids {os.getresgid()})")
    held = {k: v for k, v in _capabilities().items() if k in ("CapEff", "CapPrm", "CapInh", "CapAmb") and v}
    if held:
        raise OSError(f"refusing to run the code with capabilities {held}")


def _install_guard(network, files, writable):
    """A best-effort audit hook: no sockets beyond local ones, no writes outside `writable`, no programs.

    Audit hooks see what Python code does through most of the standard library, not all of it:
    ctypes, C extensions, sqlite3's file opening, `_posixsubprocess` and `dir_fd=` relative to an
    open directory all go around it. It catches accidents; the kernel-enforced modes are the boundary.
    """
    import re
    import socket

    writable = tuple(os.path.realpath(d) for d in writable)
    spawn_events = frozenset({"os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen",
                              "os.startfile", "pty.spawn"})
    dns_events = frozenset({"socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                            "socket.getnameinfo", "socket.sethostname"})
    address_events = frozenset({"socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg"})
    # event -> [(position of a path it changes, position of that path's dir_fd or None)], per the audit events table
    changes: dict[str, list[tuple[int, int | None]]] = {
               "os.remove": [(0, 1)], "os.rmdir": [(0, 1)], "os.mkdir": [(0, 2)], "os.chmod": [(0, 2)],
               "os.chown": [(0, 3)], "os.utime": [(0, 3)], "os.symlink": [(1, 2)],
               "os.rename": [(0, 2), (1, 3)], "os.link": [(0, 2), (1, 3)], "os.truncate": [(0, None)],
               "os.setxattr": [(0, None)], "os.removexattr": [(0, None)], "os.chflags": [(0, None)]}
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    devices = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})
    proc_pid = re.compile(r"/proc/(\d+)(?:/|$)")

    def where(path, dir_fd=None, *, realpath=os.path.realpath, fsdecode=os.fsdecode, join=os.path.join,
              readlink=os.readlink, getcwd=os.getcwd, dirname=os.path.dirname, basename=os.path.basename):
        """Both the path itself (final symlink not followed) and what it points to, made absolute."""
        path = fsdecode(path)
        if not os.path.isabs(path):
            base = readlink(f"/proc/self/fd/{dir_fd}") if isinstance(dir_fd, int) else getcwd()
            path = join(base, path)
        return join(realpath(dirname(path)), basename(path)), realpath(path)

    def inside(path, roots=writable):
        return any(path == root or path.startswith(root + "/") for root in roots)

    def refuse_write(path, dir_fd=None):
        if isinstance(path, int):
            return  # an already open descriptor
        if path is None:
            return
        located, target = where(path, dir_fd)
        if target in devices or (inside(located) and inside(target)):
            return
        raise PermissionError(f"sandbox: writing to {target} is not allowed; write inside the working "
                              f"directory ({writable[0]})")

    def hook(event, args, *, getpid=os.getpid, af_unix=socket.AF_UNIX):
        if event in spawn_events:
            raise PermissionError("sandbox: starting other programs is not allowed here")
        if network:
            if event == "socket.__new__" and args[1] != af_unix:
                raise PermissionError("sandbox: network access is disabled")
            if event in dns_events:
                raise PermissionError("sandbox: network access (name lookups) is disabled")
            if event in address_events:
                address = args[1] if len(args) > 1 else None
                if not isinstance(address, (str, bytes)) or not address or address[:1] in ("\0", b"\0"):
                    raise PermissionError("sandbox: network access is disabled")
                refuse_write(address)
        if files:
            if event == "open":
                path, mode, flags = (tuple(args) + (None, None, None))[:3]
                if isinstance(path, int) or path is None:
                    return
                if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                        isinstance(flags, int) and flags & write_flags):
                    refuse_write(path)
                    return
                match = proc_pid.match(where(path)[1])
                if match and int(match.group(1)) != getpid():
                    raise PermissionError("sandbox: reading other processes' /proc entries is not allowed")
            elif event in changes:
                for at, fd_at in changes[event]:
                    refuse_write(args[at], None if fd_at is None else args[fd_at])

    sys.addaudithook(hook)


def _run(code):
    import builtins
    import linecache
    import traceback
    import types

    module = types.ModuleType("__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules["__main__"] = module
    sys.argv = [CODE_NAME]
    sys.path.insert(0, os.getcwd())  # as for a script run there: the task's .py files can be imported
    linecache.cache[CODE_NAME] = (len(code), None, code.splitlines(True), CODE_NAME)
    try:
        exec(compile(code, CODE_NAME, "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - report as Python would, without the sandbox's own frames
        tb = exc.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename != CODE_NAME:
            tb = tb.tb_next
        try:
            traceback.print_exception(type(exc), exc, tb)
        except MemoryError:
            sys.stderr.write(f"{type(exc).__name__}\n")
        raise SystemExit(1) from None


def _worker(config, code, status_fd):
    try:
        _set_limits(config["limits"])
        _drop_privileges(config["uid"], config["gid"])
        if config["uid"] is None:
            _prctl(PR_SET_DUMPABLE, 1)  # only the supervisor hides from processes of its own user
        os.chdir(config["work"])
        guard = config["guard"]
        if guard["network"] or guard["files"]:
            _install_guard(guard["network"], guard["files"], guard["writable"])
    except Exception as exc:  # noqa: BLE001 - a sandbox that cannot be set up must not run the code
        _status(status_fd, setup_error=f"{type(exc).__name__}: {exc}")
        os._exit(1)
    os.close(status_fd)  # from here on the code runs: it must have no way to report for the sandbox
    _run(code)


def main():
    config = json.loads(sys.argv[1])
    status_fd = config["status_fd"]
    os.set_inheritable(status_fd, False)
    try:
        with open(config["code_file"], encoding="utf-8") as f:
            code = f.read()
        if config["masks"]:
            _mount_masks(config["masks"], config["host_mnt_ns"])
        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # whatever the code starts stays below us, however it detaches
        _prctl(PR_SET_DUMPABLE, 0)  # the code cannot ptrace us or open our /proc entries, even as our user
    except Exception as exc:  # noqa: BLE001
        _status(status_fd, setup_error=f"{type(exc).__name__}: {exc}")
        os._exit(1)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        _worker(config, code, status_fd)
        raise SystemExit(0)
    _supervise(pid, config["max_memory"], config["poll"], status_fd)
    os._exit(0)


if __name__ == "__main__":
    main()

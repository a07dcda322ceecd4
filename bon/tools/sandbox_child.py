"""The program that runs inside the python tool's sandbox process (its source is passed to `python -I -c`).

It never imports bon: it runs in an isolated interpreter, perhaps as another user, where only the
standard library is certain to be readable. Its one argument is a JSON object from `bon.tools.sandbox`.

This process is the supervisor. It reads the code, makes the mounts it is asked for (it is root in a
fresh mount namespace then), and forks the worker, which lowers its resource limits, drops to the
unprivileged user and installs the audit-hook guards it is asked for, then runs the code. The
supervisor waits for the worker and writes how it ended to the status pipe as JSON lines. In a PID
namespace the supervisor is PID 1, so its exit kills every process the code left behind; the code
itself never runs as PID 1, whose odd signal rules would stop the CPU limit's SIGXCPU from landing.
"""
import json
import os
import resource
import sys

CODE_NAME = "<code>"  # the file name tracebacks show for the user's code


def _status(fd, **fields):
    try:
        os.write(fd, (json.dumps(fields) + "\n").encode())
    except OSError:
        pass


def _mount_masks(masks, host_mnt_ns):
    """Cover each directory with a fresh tmpfs and bind the paths to keep back at their old places.

    This hides the host's world-writable scratch directories (/tmp, /dev/shm, ...) from the code, and
    makes the interpreter's files reachable for the unprivileged user when they sit below a directory
    it may not enter (a Python under /root, say) without exposing anything else there.
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


def _set_limits(limits):
    for name, (soft, hard) in limits.items():
        which = getattr(resource, name)
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
        resource.setrlimit(which, (min(soft, hard), hard))


def _drop_privileges(uid, gid):
    import ctypes

    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError("could not change to the unprivileged user")
    # no_new_privs: setuid programs (su, sudo, ...) cannot give the code its privileges back.
    if ctypes.CDLL(None, use_errno=True).prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")


def _install_guard(network, files, writable):
    """A best-effort audit hook: no sockets beyond local ones, no writes outside `writable`, no programs.

    Audit hooks see what Python code does through the standard library; code that reaches the C
    library directly (ctypes, a C extension) is not seen. That is why the namespace and the
    unprivileged user are preferred and this guard is the fallback.
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
    changes = {"os.remove": [(0, 1)], "os.rmdir": [(0, 1)], "os.mkdir": [(0, 2)], "os.chmod": [(0, 2)],
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


def _run(code, status_fd):
    import builtins
    import linecache
    import traceback
    import types

    module = types.ModuleType("__main__")
    module.__builtins__ = builtins
    sys.modules["__main__"] = module
    sys.argv = [CODE_NAME]
    sys.path.insert(0, os.getcwd())  # as for a script run there: the task's .py files can be imported
    linecache.cache[CODE_NAME] = (len(code), None, code.splitlines(True), CODE_NAME)
    try:
        exec(compile(code, CODE_NAME, "exec"), module.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - report as Python would, without the sandbox's own frames
        if isinstance(exc, MemoryError):
            _status(status_fd, memory_error=True)
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
        if config["uid"] is not None:
            _drop_privileges(config["uid"], config["gid"])
        os.chdir(config["work"])
        guard = config["guard"]
        if guard["network"] or guard["files"]:
            _install_guard(guard["network"], guard["files"], guard["writable"])
    except Exception as exc:  # noqa: BLE001 - a sandbox that cannot be set up must not run the code
        _status(status_fd, setup_error=f"{type(exc).__name__}: {exc}")
        os._exit(1)
    _run(code, status_fd)


def main():
    config = json.loads(sys.argv[1])
    status_fd = config["status_fd"]
    os.set_inheritable(status_fd, False)  # programs the code starts do not get it
    try:
        with open(config["code_file"], encoding="utf-8") as f:
            code = f.read()
        if config["masks"]:
            _mount_masks(config["masks"], config["host_mnt_ns"])
    except Exception as exc:  # noqa: BLE001
        _status(status_fd, setup_error=f"{type(exc).__name__}: {exc}")
        os._exit(1)
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        _worker(config, code, status_fd)
        raise SystemExit(0)
    _, status, usage = os.wait4(pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    if os.WIFSIGNALED(status):
        _status(status_fd, signal=os.WTERMSIG(status), cpu=cpu)
    else:
        _status(status_fd, exit=os.WEXITSTATUS(status), cpu=cpu)
    os._exit(0)


if __name__ == "__main__":
    main()

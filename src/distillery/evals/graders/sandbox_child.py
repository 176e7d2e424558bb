"""The program a ``python`` grader's sandbox runs: it loads the user's source and calls its
``grade(sample, item)`` for each case. Never imported by distillery: ``python_grader`` passes this
file's text to ``python -I -B -c`` inside the sandbox (``unshare --user --net``), so it uses the
standard library only.

Protocol: one JSON request line on stdin ``{"source", "cases": [{"sample", "item"}], "limits":
{"timeout_s", "memory_bytes", "cpu_s", "open_files", "deadline_s"}, "hold_stdin"}``; JSON lines on the original stdout:
``{"ready": true}`` once the source has loaded (or ``{"load_error", "details"}``), then one
``{"i", "score"}`` or ``{"i", "error", "kind", "details"}`` per case, in order. A request with
``"probe_port"`` first tries to reach that loopback port (before any limit), to prove that the
network namespace isolates.

Before the user's code runs this program, in order: reads the request; starts a watchdog thread
that ends the process at ``deadline_s`` or when stdin closes (with ``hold_stdin`` the parent keeps
it open until it has every answer, so a sandbox does not outlive a server that died); moves its results to
a private copy of stdout and points fd 1 and ``sys.stdout`` at stderr (a ``print`` in the user's
code cannot corrupt the results); sets the resource limits (address space, CPU seconds, no new
processes, no file writes, few open files, no core dumps); installs the audit hook. The audit hook
(a second layer behind the namespace and the limits) refuses sockets, new processes and
programs, ``ctypes``, writing, removing or renaming files, and reading any file outside Python's
own directories (the standard library and the environment's site-packages); an audit hook cannot
be removed once installed.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
import traceback
from collections.abc import Callable
from typing import Any

MAX_MESSAGE = 2000
MAX_DETAILS = 8000
SOURCE_NAME = "<grader>"

# audit events refused outright (by prefix)
REFUSED_EVENTS = (
    "socket.",
    "subprocess.",
    "os.system",
    "os.exec",
    "os.spawn",
    "os.posix_spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "os.remove",
    "os.unlink",
    "os.rename",
    "os.replace",
    "os.rmdir",
    "os.mkdir",
    "os.mkfifo",
    "os.mknod",
    "os.chmod",
    "os.chown",
    "os.chflags",
    "os.lchflags",
    "os.link",
    "os.symlink",
    "os.truncate",
    "os.utime",
    "os.setxattr",
    "os.removexattr",
    "os.chroot",
    "shutil.",
    "pty.",
    "ctypes.",
)
# ctypes may be imported (scipy, sympy, pandas do), which loads libraries; looking up a symbol,
# calling a foreign function or reading memory by address stays refused
ALLOWED_EVENTS = frozenset({"ctypes.dlopen"})
# imported before the hook with its ``fork_exec`` (which raises no audit event) disabled, so
# ``import subprocess`` works and starts nothing; importing it again is refused
REFUSED_MODULES = frozenset({"_posixsubprocess"})
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


class SandboxRefusal(PermissionError):
    """What the user's code gets for a refused operation."""


class GradeTimeout(BaseException):
    """Raised in the user's code when a call runs past its time limit."""


def _readable_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.getcwd()}
    roots |= {p for p in sys.path if p}
    roots |= {"/dev/null", "/dev/urandom", "/dev/zero", "/usr/share/zoneinfo"}
    return tuple(sorted({os.path.realpath(r) for r in roots}))


def disarm_fork_exec() -> None:
    """Replace ``_posixsubprocess.fork_exec`` (how ``subprocess`` starts a program, without an
    audit event of its own) by a refusal; no reference to the original is left."""
    try:
        import _posixsubprocess
    except ImportError:  # pragma: no cover - every POSIX CPython has it
        return

    def fork_exec(*args: Any, **kwargs: Any) -> Any:
        raise SandboxRefusal("the python grader sandbox refuses starting a process")

    _posixsubprocess.fork_exec = fork_exec  # type: ignore[attr-defined]


def install_audit_hook() -> None:
    roots = _readable_roots()
    disarm_fork_exec()
    realpath, fsdecode, isinstance_ = os.path.realpath, os.fsdecode, isinstance

    def readable(path: str) -> bool:
        real = realpath(path)
        return any(real == root or real.startswith(root + os.sep) for root in roots)

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open":
            path, mode, flags = (*args, None, None, None)[:3]
            if isinstance_(path, int):
                return
            if isinstance_(mode, str) and any(c in mode for c in "wax+"):
                raise SandboxRefusal(f"the python grader sandbox refuses writing {path!r}")
            if isinstance_(flags, int) and flags & WRITE_FLAGS:
                raise SandboxRefusal(f"the python grader sandbox refuses writing {path!r}")
            if path is not None and not readable(fsdecode(path)):
                raise SandboxRefusal(f"the python grader sandbox refuses reading {path!r}")
            return
        if event in ("os.listdir", "os.scandir") and args and args[0] is not None:
            if not isinstance_(args[0], int) and not readable(fsdecode(args[0])):
                raise SandboxRefusal(f"the python grader sandbox refuses listing {args[0]!r}")
            return
        if event == "import" and args and args[0] in REFUSED_MODULES:
            raise ImportError(f"the python grader sandbox refuses importing {args[0]}")
        if event.startswith(REFUSED_EVENTS) and event not in ALLOWED_EVENTS:
            raise SandboxRefusal(f"the python grader sandbox refuses {event}")

    sys.addaudithook(hook)


def set_limits(limits: dict[str, Any]) -> None:
    memory = int(limits["memory_bytes"])
    cpu = int(limits["cpu_s"])
    files = int(limits.get("open_files", 64))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
    for which, value in (
        (resource.RLIMIT_AS, (memory, memory)),
        # soft = hard: the sandbox's python is PID 1 of its namespace, which ignores SIGXCPU;
        # at the hard limit the kernel sends SIGKILL
        (resource.RLIMIT_CPU, (cpu, cpu)),
        (resource.RLIMIT_FSIZE, (0, 0)),
        (resource.RLIMIT_NPROC, (0, 0)),
        (resource.RLIMIT_NOFILE, (files, files)),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(which, value)


def probe(port: int) -> str:
    """``isolated`` when loopback port ``port`` (listening outside) cannot be reached."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(2.0)
        code = s.connect_ex(("127.0.0.1", port))
    return "connected" if code == 0 else "isolated"


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(exc: BaseException) -> tuple[str, str]:
    """A one-line message naming the user's line, and the traceback of the user's frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == SOURCE_NAME]
    where = f" (line {frames[-1].lineno}, in {frames[-1].name})" if frames else ""
    text = str(exc)
    message = f"{type(exc).__name__}: {text}{where}" if text else f"{type(exc).__name__}{where}"
    details = "".join(traceback.format_exception(exc)).replace(
        f'File "{SOURCE_NAME}"', "File grader source"
    )
    return cut(message, MAX_MESSAGE), cut(details, MAX_DETAILS)


def check_score(value: Any) -> tuple[float | None, str | None]:
    if isinstance(value, bool) or not isinstance(value, int | float):
        shown = cut(repr(value), 200)
        return None, f"grade() returned {shown} ({type(value).__name__}), not a number"
    try:
        score = float(value)
    except OverflowError:
        return None, "grade() returned an integer too large for a float"
    if not math.isfinite(score):
        return None, f"grade() returned {score}, not a finite number"
    return score, None


def start_watchdog(deadline_s: float, watch_stdin: bool) -> None:
    """A thread that ends the process at ``deadline_s``, or as soon as stdin closes when the
    parent holds it open for that: a sandbox never outlives the server that started it."""
    import select
    import threading
    import time

    end = time.monotonic() + deadline_s

    def watch() -> None:
        while (left := end - time.monotonic()) > 0:
            if not watch_stdin:
                time.sleep(left)
                continue
            ready, _, _ = select.select([0], [], [], left)
            if ready and not os.read(0, 1):
                os._exit(70)  # the parent closed stdin, or died
        os._exit(71)

    threading.Thread(target=watch, name="sandbox-watchdog", daemon=True).start()


def main() -> None:
    request = json.loads(sys.stdin.buffer.readline())
    limits = request["limits"]
    start_watchdog(float(limits["deadline_s"]), bool(request.get("hold_stdin")))
    out_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(obj: dict[str, Any]) -> None:
        os.write(out_fd, (json.dumps(obj, ensure_ascii=True) + "\n").encode())

    if "probe_port" in request:
        emit({"probe": probe(int(request["probe_port"]))})
    timeout_s = float(limits["timeout_s"])

    def on_alarm(signum: int, frame: Any) -> None:
        raise GradeTimeout()

    signal.signal(signal.SIGALRM, on_alarm)
    source = str(request["source"])
    import linecache

    lines = source.splitlines(keepends=True)
    linecache.cache[SOURCE_NAME] = (len(source), None, lines, SOURCE_NAME)
    set_limits(limits)
    install_audit_hook()

    namespace: dict[str, Any] = {"__name__": "grader", "__builtins__": __builtins__}
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout_s)
        exec(compile(source, SOURCE_NAME, "exec"), namespace)
        signal.setitimer(signal.ITIMER_REAL, 0)
        grade = namespace.get("grade")
        if not callable(grade):
            raise TypeError("the source defines no function grade(sample, item)")
    except GradeTimeout:
        emit({"load_error": f"loading the source ran past {timeout_s:g} s", "kind": "timeout"})
        return
    except BaseException as exc:  # whatever the user's code raised
        signal.setitimer(signal.ITIMER_REAL, 0)
        message, details = describe(exc)
        emit({"load_error": message, "kind": "runtime", "details": details})
        return
    emit({"ready": True})
    call: Callable[[Any, Any], Any] = grade
    for i, case in enumerate(request["cases"]):
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                value = call(case["sample"], case["item"])
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except GradeTimeout:
            emit({"i": i, "error": f"grade() ran past {timeout_s:g} s", "kind": "timeout"})
            continue
        except BaseException as exc:  # whatever the user's code raised
            message, details = describe(exc)
            emit({"i": i, "error": message, "kind": "runtime", "details": details})
            continue
        score, problem = check_score(value)
        if problem is not None:
            emit({"i": i, "error": problem, "kind": "result"})
        else:
            emit({"i": i, "score": score})


if __name__ == "__main__":
    main()

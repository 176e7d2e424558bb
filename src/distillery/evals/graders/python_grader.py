"""``python``: the user's own ``grade(sample, item) -> float``, run in a sandbox (OpenAI's type).

``{"type": "python", "name", "source", "image_tag"?, "pass_threshold"?}``. ``source`` (at most
256 kB, as OpenAI's) defines ``def grade(sample: dict, item: dict) -> float``; ``sample`` is the
sample namespace (``output_text``, ``output_json``...), ``item`` the data row. The score is what
``grade`` returns (an ``int`` or ``float``, finite); ``passed`` is ``score >= pass_threshold``, or
``None`` without a threshold. ``image_tag`` is accepted and ignored: there is one image, the
server's own Python with the packages of its environment (numpy and the like import; the
network does not exist).

The code only ever runs sandboxed, never in the server's process:

- a fresh ``python -I -B`` (isolated mode: no environment variables, no user site, no script
  directory; no bytecode written) in new user, network, PID and IPC namespaces (``unshare --user
  --net --pid --ipc --fork --kill-child`` from util-linux): no network interface but a loopback
  that is down, so nothing can be reached, not even this server on 127.0.0.1; no other process
  can be seen or signalled; the environment is empty but for locale and thread-count variables;
  the working directory is a new empty temporary directory, removed afterwards;
- resource limits set before the user's code runs (``RLIMIT_AS`` ``memory_mb``, ``RLIMIT_CPU``,
  ``RLIMIT_NPROC`` 0, ``RLIMIT_FSIZE`` 0, ``RLIMIT_NOFILE`` 64, no core dumps) and a wall-time
  limit per call of ``grade`` (``timeout_s``, from an interval timer inside and enforced from
  outside by killing the process); a watchdog thread ends the process when the server closes (or
  loses) its stdin, or at an overall deadline, so a sandbox never outlives the server;
- an audit hook (``sys.addaudithook``) as a second layer: sockets, subprocesses, ``os.system``,
  ``exec*``/``spawn*``/``fork``, signals, ``ctypes``, writing or removing files, and reading files
  outside Python's own directories are refused. The sandbox shares the server's filesystem and
  user (it is not a container); these refusals keep the code from reading the server's data.

The limits are set inside the child by the trusted bootstrap (``sandbox_child.py``) instead of a
``preexec_fn``, which is unsafe in a process with threads (the server has several).

``sandbox_available()`` probes once per process (cached) that this works here: it runs the
bootstrap with a trivial grader and checks that a port listening on the host's loopback cannot
be reached from inside. Where it does not work (no ``unshare``, unprivileged user namespaces
disabled, not Linux) building a python grader is a 400 that says why (a server started before
the machine was fixed keeps that answer until it restarts).

Batches: ``grade_many`` sends up to ``batch_size`` (item, sample) pairs to one process as JSON on
stdin and reads one JSON line back per pair, with up to ``processes`` processes at a time. A pair
that kills its process (a timeout, the CPU or memory limit, ``os._exit``) fails alone: the pairs
after it go to a new process. A runtime error, a timeout or a result that is not a number is a
``GraderError`` for that pair (``kind`` ``python_grader_runtime_error`` or
``unresponsive_reward_error``, the traceback in ``details``), a sandbox that cannot start one of
``kind`` ``python_grader_server_error``.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import importlib.resources
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from distillery.errors import InvalidRequestError
from distillery.evals.graders.base import (
    PYTHON_RUNTIME_ERROR,
    PYTHON_SERVER_ERROR,
    UNRESPONSIVE_ERROR,
    Grade,
    GradeInput,
    GraderConfig,
    GraderError,
    parse_config,
    score_passed,
)

MAX_SOURCE_BYTES = 256 * 1024  # OpenAI's limit on a python grader's source
UNSHARE_FLAGS = ("--user", "--net", "--pid", "--ipc", "--fork", "--kill-child")
LINE_LIMIT = 1 << 20  # the longest result line read back
GRACE_S = 2.0  # beyond timeout_s before the process is killed from outside
STDERR_TAIL = 4000
_KINDS = {"runtime": PYTHON_RUNTIME_ERROR, "result": PYTHON_RUNTIME_ERROR}


@dataclass(frozen=True)
class SandboxLimits:
    """How long and how big a python grader may run."""

    timeout_s: float = 30.0  # wall time of one ``grade`` call (and of loading the source)
    memory_mb: int = 2048  # address space of the sandbox process (OpenAI gives 2 GB)
    batch_size: int = 64  # (item, sample) pairs per sandbox process
    processes: int = 4  # sandbox processes at a time in one ``grade_many``
    startup_s: float = 15.0  # starting the interpreter, beyond ``timeout_s`` for loading

    def for_child(self, cases: int) -> dict[str, Any]:
        return {
            "timeout_s": self.timeout_s,
            "memory_bytes": self.memory_mb * 1024 * 1024,
            # every call may use its whole time on the CPU, the loading too; a call that runs
            # on past it is killed from outside (at timeout_s + GRACE_S) before this limit
            "cpu_s": math.ceil(self.timeout_s * (cases + 1) + GRACE_S) + 2,
            "open_files": 64,
            # the process ends itself then, whatever it is doing (a backstop to the kill)
            "deadline_s": self.startup_s + (self.timeout_s + GRACE_S) * (cases + 1),
        }


class PythonGraderConfig(GraderConfig):
    type: Literal["python"] = "python"
    name: str
    source: str = Field(min_length=1)
    image_tag: str | None = None  # accepted, ignored: one image, this server's Python
    pass_threshold: float | None = None

    @field_validator("source")
    @classmethod
    def _small_enough(cls, source: str) -> str:
        size = len(source.encode("utf-8", "surrogatepass"))
        if size > MAX_SOURCE_BYTES:
            raise ValueError(f"the source is {size} bytes; at most {MAX_SOURCE_BYTES} are allowed")
        return source


# --- the source, checked in this process without running it ------------------------------------


def check_source(source: str, param: str) -> None:
    """A 400 when ``source`` does not compile or defines no ``grade(sample, item)``.

    ``compile`` only parses and compiles: nothing of the source runs here.
    """
    try:
        compile(source, "<grader>", "exec", dont_inherit=True)
        tree = ast.parse(source, "<grader>")
    except SyntaxError as exc:
        where = f" (line {exc.lineno})" if exc.lineno else ""
        raise InvalidRequestError(
            f"The python grader's source does not compile: {exc.msg}{where}.",
            param=param,
            code="invalid_value",
        ) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise InvalidRequestError(
            f"The python grader's source does not compile: {exc or type(exc).__name__}.",
            param=param,
            code="invalid_value",
        ) from None
    problem = _grade_problem(tree)
    if problem is not None:
        raise InvalidRequestError(problem, param=param, code="invalid_value")


def _grade_problem(tree: ast.Module) -> str | None:
    found: ast.stmt | None = None
    for stmt in tree.body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name == "grade":
            found = stmt
        elif isinstance(stmt, ast.Assign | ast.AnnAssign):
            targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
            if any(isinstance(t, ast.Name) and t.id == "grade" for t in targets):
                found = stmt
        elif isinstance(stmt, ast.ImportFrom | ast.Import) and any(
            (a.asname or a.name) == "grade" for a in stmt.names
        ):
            found = stmt
    if found is None:
        return "The python grader's source defines no function grade(sample, item)."
    if isinstance(found, ast.AsyncFunctionDef):
        return "grade(sample, item) must be a plain function, not async."
    if isinstance(found, ast.FunctionDef):
        args = found.args
        positional = len(args.posonlyargs) + len(args.args)
        if positional < 2 and args.vararg is None:
            return f"grade(sample, item) must take two arguments; it takes {positional}."
    return None


# --- the sandbox ---------------------------------------------------------------------------------


@functools.cache
def child_program() -> str:
    """The bootstrap the sandbox runs (``sandbox_child.py``), as text for ``python -c``."""
    resource = importlib.resources.files("distillery.evals.graders") / "sandbox_child.py"
    return resource.read_text(encoding="utf-8")


def sandbox_command() -> list[str] | None:
    """The command that starts a sandbox, or None without ``unshare``."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    return [unshare, *UNSHARE_FLAGS, "--", sys.executable, "-I", "-B", "-c", child_program()]


def _environment(workdir: str) -> dict[str, str]:
    return {
        "PATH": os.defpath,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": workdir,
        "TMPDIR": workdir,
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _request(
    source: str, cases: Sequence[Mapping[str, Any]], limits: SandboxLimits, *, hold_stdin: bool
) -> bytes:
    """The request line: JSON escapes newlines, so it is one line."""
    body = {
        "source": source,
        "cases": list(cases),
        "limits": limits.for_child(len(cases)),
        "hold_stdin": hold_stdin,
    }
    return json.dumps(body, default=_json_default, ensure_ascii=False).encode("utf-8") + b"\n"


def _json_default(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, set | frozenset):
        return list(value)
    return str(value)


@functools.cache
def _probe() -> str | None:
    if sys.platform != "linux":
        return f"it needs Linux namespaces and resource limits, and this is {sys.platform}"
    command = sandbox_command()
    if command is None:
        return "the unshare command (util-linux) is not installed"
    limits = SandboxLimits(timeout_s=10.0, memory_mb=512)
    with socket.socket() as listener, tempfile.TemporaryDirectory() as workdir:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        case = {"sample": {"output_text": "x"}, "item": {}}
        source = "def grade(sample, item):\n    return 1.0\n"
        body = json.loads(_request(source, [case], limits, hold_stdin=False))
        body["probe_port"] = listener.getsockname()[1]
        try:
            done = subprocess.run(
                command,
                input=json.dumps(body).encode(),
                capture_output=True,
                cwd=workdir,
                env=_environment(workdir),
                timeout=60,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"the sandbox did not start ({type(exc).__name__}: {exc})"
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    error = done.stderr.decode("utf-8", "replace").strip()[-500:]
    expected = ['{"probe": "isolated"}', '{"ready": true}', '{"i": 0, "score": 1.0}']
    if lines == expected:
        return None
    if lines[:1] == ['{"probe": "connected"}']:
        return "code inside the network namespace could still reach the host's loopback"
    return f"the sandbox failed (exit status {done.returncode}): {error or lines or 'no output'}"


def sandbox_problem() -> str | None:
    """Why python graders cannot run on this machine, or None when the sandbox works."""
    return _probe()


def sandbox_available() -> bool:
    """Whether the python grader's sandbox works here (probed once per process)."""
    return sandbox_problem() is None


@dataclass
class CaseResult:
    """One (item, sample) pair's outcome: a score, or an error with its ``GraderError`` kind."""

    score: float | None = None
    error: str | None = None
    kind: str | None = None
    details: str | None = None


@dataclass
class _Stop:
    """Why a sandbox process stopped before answering every case."""

    result: CaseResult
    fatal: bool = False  # the remaining cases cannot run either (the source, the sandbox)


@dataclass
class _Tail:
    text: str = ""

    def add(self, chunk: bytes) -> None:
        self.text = (self.text + chunk.decode("utf-8", "replace"))[-STDERR_TAIL:]


async def _drain(stream: asyncio.StreamReader | None, tail: _Tail) -> None:
    if stream is None:
        return
    while chunk := await stream.read(65536):
        tail.add(chunk)


async def _line(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any] | str | None:
    """The next result line as a dict, ``"timeout"``, ``"garbled"``, or None at the end."""
    assert proc.stdout is not None
    try:
        raw = await asyncio.wait_for(proc.stdout.readline(), timeout)
    except TimeoutError:
        return "timeout"
    except ValueError:  # a line longer than LINE_LIMIT
        return "garbled"
    if not raw:
        return None
    try:
        parsed = json.loads(raw)
    except ValueError:
        return "garbled"
    return parsed if isinstance(parsed, dict) else "garbled"


def _died(returncode: int | None, stderr: str, started: bool) -> CaseResult:
    """What to say about a sandbox process that ended without answering."""
    tail = stderr.strip()[-1000:]
    if not started and ("unshare:" in tail or returncode == 127):
        return CaseResult(
            error=f"the sandbox could not start: {tail or f'exit status {returncode}'}",
            kind=PYTHON_SERVER_ERROR,
            details="sandbox_start_failed",
        )
    if returncode is not None and returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        why = "it reached its CPU time limit or was killed" if name == "SIGKILL" else "it crashed"
        return CaseResult(
            error=f"the grader process ended with {name}: {why}",
            kind=PYTHON_RUNTIME_ERROR,
            details=tail or None,
        )
    return CaseResult(
        error=f"the grader process exited (status {returncode}) before returning a grade",
        kind=PYTHON_RUNTIME_ERROR,
        details=tail or None,
    )


def _case_result(message: Mapping[str, Any]) -> CaseResult:
    if "score" in message and isinstance(message["score"], int | float):
        return CaseResult(score=float(message["score"]))
    kind = _KINDS.get(str(message.get("kind")), UNRESPONSIVE_ERROR)
    details = message.get("details")
    return CaseResult(
        error=str(message.get("error") or "grade() failed"),
        kind=kind,
        details=str(details) if details else None,
    )


async def _one_process(
    source: str, cases: Sequence[Mapping[str, Any]], limits: SandboxLimits
) -> tuple[list[CaseResult], _Stop | None]:
    """Run ``cases`` in one sandbox process: the results it answered, and why it stopped early."""
    command = sandbox_command()
    if command is None:
        server = CaseResult(
            error="the unshare command (util-linux) is not installed",
            kind=PYTHON_SERVER_ERROR,
            details="sandbox_unavailable",
        )
        return [], _Stop(server, fatal=True)
    workdir = tempfile.mkdtemp(prefix="distillery-grader-")
    try:
        try:
            proc = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                env=_environment(workdir),
                limit=LINE_LIMIT,
                start_new_session=True,
            )
        except OSError as exc:
            server = CaseResult(
                error=f"the sandbox could not start: {exc}",
                kind=PYTHON_SERVER_ERROR,
                details="sandbox_start_failed",
            )
            return [], _Stop(server, fatal=True)
        tail = _Tail()
        drain = asyncio.create_task(_drain(proc.stderr, tail))
        try:
            return await _converse(proc, source, cases, limits, tail, drain)
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
            drain.cancel()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _converse(
    proc: asyncio.subprocess.Process,
    source: str,
    cases: Sequence[Mapping[str, Any]],
    limits: SandboxLimits,
    tail: _Tail,
    drain: asyncio.Task[None],
) -> tuple[list[CaseResult], _Stop | None]:
    assert proc.stdin is not None
    try:
        # stdin stays open while the sandbox works: when it closes (this process closes it
        # at the end, or dies) the sandbox ends itself
        proc.stdin.write(_request(source, cases, limits, hold_stdin=True))
        await proc.stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass  # it died at once: the answer below says why

    async def ended(started: bool) -> CaseResult:
        await proc.wait()
        await asyncio.wait({drain}, timeout=1.0)
        return _died(proc.returncode, tail.text, started)

    stop = await _loaded(proc, limits, ended)
    if stop is not None:
        return [], stop
    answered: list[CaseResult] = []
    for i in range(len(cases)):
        line = await _line(proc, limits.timeout_s + GRACE_S)
        if line == "timeout":
            timed_out = CaseResult(
                error=f"grade() ran past {limits.timeout_s:g} s", kind=UNRESPONSIVE_ERROR
            )
            return answered, _Stop(timed_out)
        if line is None:
            return answered, _Stop(await ended(True))
        if not isinstance(line, dict) or line.get("i") != i:
            garbled = CaseResult(
                error="the grader process wrote something that is not a result",
                kind=PYTHON_RUNTIME_ERROR,
            )
            return answered, _Stop(garbled)
        answered.append(_case_result(line))
    return answered, None


async def _loaded(
    proc: asyncio.subprocess.Process,
    limits: SandboxLimits,
    ended: Callable[[bool], Awaitable[CaseResult]],
) -> _Stop | None:
    """None once the sandbox says the source loaded, else why no case can run."""
    first = await _line(proc, limits.startup_s + limits.timeout_s)
    if first == "timeout":
        slow = CaseResult(
            error=f"loading the source ran past {limits.timeout_s:g} s", kind=UNRESPONSIVE_ERROR
        )
        return _Stop(slow, fatal=True)
    if not isinstance(first, dict):
        return _Stop(await ended(False), fatal=True)
    if "load_error" in first:
        failed = _case_result({**first, "error": first["load_error"]})
        failed.error = f"the source failed to load: {failed.error}"
        return _Stop(failed, fatal=True)
    return None


async def run_in_sandbox(
    source: str, cases: Sequence[Mapping[str, Any]], limits: SandboxLimits
) -> list[CaseResult]:
    """Every case's result, in order, from as few sandbox processes as the cases allow."""
    results: list[CaseResult] = []
    while len(results) < len(cases):
        answered, stop = await _one_process(source, cases[len(results) :], limits)
        results += answered
        if stop is None:
            continue
        if stop.fatal:
            results += [stop.result] * (len(cases) - len(results))
        else:
            results.append(stop.result)
    return results


# --- the grader ----------------------------------------------------------------------------------


class PythonGrader:
    type: ClassVar[str] = "python"

    def __init__(self, config: PythonGraderConfig, limits: SandboxLimits | None = None) -> None:
        self.config = config
        self.name = config.name
        self.limits = limits or SandboxLimits()

    async def grade(self, inp: GradeInput) -> Grade:
        (result,) = await self.grade_many([inp])
        if isinstance(result, GraderError):
            raise result
        return result

    async def grade_many(self, inputs: Sequence[GradeInput]) -> list[Grade | GraderError]:
        """Grade ``inputs`` in batches of ``limits.batch_size`` per sandbox process, with at
        most ``limits.processes`` processes at a time; results in the order of ``inputs``."""
        cases = [{"sample": inp.sample, "item": inp.item} for inp in inputs]
        size = max(1, self.limits.batch_size)
        batches = [cases[i : i + size] for i in range(0, len(cases), size)]
        gate = asyncio.Semaphore(max(1, self.limits.processes))

        async def batch(part: list[dict[str, Any]]) -> list[CaseResult]:
            async with gate:
                return await run_in_sandbox(self.config.source, part, self.limits)

        done = await asyncio.gather(*(batch(part) for part in batches))
        return [self._grade(result) for part in done for result in part]

    def _grade(self, result: CaseResult) -> Grade | GraderError:
        if result.score is not None:
            score = result.score
            return Grade(score=score, passed=score_passed(score, self.config.pass_threshold))
        details: dict[str, object] = {"details": result.details} if result.details else {}
        return GraderError(
            f"python grader {self.name!r}: {result.error}", kind=result.kind, details=details
        )


def build_python(
    config: Mapping[str, Any], param: str, limits: SandboxLimits | None = None
) -> PythonGrader:
    """The ``python`` grader of ``config``: a 400 for a bad source or when there is no sandbox."""
    cfg = parse_config(PythonGraderConfig, config, param)
    check_source(cfg.source, f"{param}.source")
    problem = sandbox_problem()
    if problem is not None:
        raise InvalidRequestError(
            f"The python grader needs a sandbox, and this machine has none: {problem}. Install "
            "util-linux (the unshare command) and enable unprivileged user namespaces (sysctl "
            "user.max_user_namespaces > 0; kernel.unprivileged_userns_clone=1 where it exists; "
            "kernel.apparmor_restrict_unprivileged_userns=0 on Ubuntu 24.04 and later).",
            param=f"{param}.type",
            code="sandbox_unavailable",
        )
    return PythonGrader(cfg, limits)

"""python: the user's grade(sample, item) in the sandbox; its source checked without running it.

The tests that run code need the sandbox (``unshare`` and unprivileged user namespaces) and are
skipped, with the probe's reason, where it does not work; the source checks and the refusal
without a sandbox run everywhere.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from distillery.errors import InvalidRequestError
from distillery.evals.graders import python_grader
from distillery.evals.graders.base import Grade, GradeInput, GraderError, sample_from_output
from distillery.evals.graders.python_grader import (
    MAX_SOURCE_BYTES,
    PythonGrader,
    SandboxLimits,
    build_python,
    sandbox_available,
    sandbox_problem,
)
from distillery.evals.graders.registry import build_grader

from .support import run_grade

needs_sandbox = pytest.mark.skipif(
    not sandbox_available(), reason=f"no python grader sandbox here: {sandbox_problem()}"
)
EXACT = """
def grade(sample, item):
    return 1.0 if sample["output_text"].strip() == item["answer"] else 0.0
"""


def config(source: str, **extra: Any) -> dict[str, Any]:
    return {"type": "python", "name": "py", "source": textwrap.dedent(source), **extra}


def grader(source: str, **limits: Any) -> PythonGrader:
    return build_python(config(source), "grader", SandboxLimits(**limits))


def fails(source: str, item: dict[str, Any] | None = None, **limits: Any) -> GraderError:
    with pytest.raises(GraderError) as err:
        run_grade(grader(source, **limits), "answer", item or {})
    return err.value


# --- the source, checked without a sandbox -------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def grade(sample, item)\n    return 1\n", "does not compile"),
        ("return 1\n", "does not compile"),
        ("x = 1\n", "defines no function grade"),
        ("def other(sample, item):\n    return 1\n", "defines no function grade"),
        ("async def grade(sample, item):\n    return 1\n", "not async"),
        ("def grade(sample):\n    return 1\n", "two arguments"),
        ("a = 1\x00\n", "does not compile"),
    ],
)
def test_bad_sources_are_400s_at_build_time(
    source: str, message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(python_grader, "sandbox_problem", lambda: ran.append("probe"))
    with pytest.raises(InvalidRequestError, match=message) as err:
        build_grader(config(source), param="method.reinforcement.grader")
    assert err.value.status == 400
    assert err.value.param == "method.reinforcement.grader.source"
    assert ran == []  # the source is refused before the sandbox is even asked


def test_sources_that_define_grade_otherwise_are_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(python_grader, "sandbox_problem", lambda: None)
    for source in (
        "from math import fsum as grade\n",
        "grade = lambda sample, item: 1.0\n",
        "def grade(*args):\n    return 1.0\n",
        "def grade(sample, item, extra=None):\n    return 1.0\n",
    ):
        assert build_grader(config(source)).type == "python"


def test_source_size_limit() -> None:
    big = EXACT + "#" * MAX_SOURCE_BYTES
    with pytest.raises(InvalidRequestError, match="at most") as err:
        build_grader(config(big), param="grader")
    assert err.value.param == "grader.source"
    with pytest.raises(InvalidRequestError) as err:
        build_grader({**config(EXACT), "timeout": 5}, param="grader")
    assert err.value.param == "grader.timeout"


def test_no_sandbox_is_a_400_that_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    # the one simulated case: the probe answers that this machine has no sandbox
    monkeypatch.setattr(
        python_grader,
        "sandbox_problem",
        lambda: "the unshare command (util-linux) is not installed",
    )
    assert not python_grader.sandbox_available()
    with pytest.raises(InvalidRequestError) as err:
        build_grader(config(EXACT), param="testing_criteria[0]")
    assert err.value.status == 400
    assert err.value.param == "testing_criteria[0].type"
    message = err.value.message
    assert (
        "needs a sandbox" in message and "unshare command (util-linux) is not installed" in message
    )
    assert "user namespaces" in message
    multi = {"type": "multi", "name": "m", "graders": {"p": config(EXACT)}, "calculate_output": "p"}
    with pytest.raises(InvalidRequestError) as err:
        build_grader(multi, param="grader")
    assert err.value.param == "grader.graders.p.type"


# --- running in the sandbox ---------------------------------------------------------------------


@needs_sandbox
def test_a_passing_grade() -> None:
    grade = run_grade(build_grader(config(EXACT, pass_threshold=1.0)), " 4 ", {"answer": "4"})
    assert grade == Grade(score=1.0, passed=True)
    grade = run_grade(build_grader(config(EXACT, pass_threshold=1.0)), "5", {"answer": "4"})
    assert grade.score == 0.0 and grade.passed is False
    without = run_grade(build_grader(config(EXACT, image_tag="2025-05-08")), "4", {"answer": "4"})
    assert without.passed is None


@needs_sandbox
def test_the_code_sees_sample_and_item_as_dicts() -> None:
    source = """
    import json, math
    def grade(sample, item):
        assert isinstance(sample, dict) and isinstance(item, dict)
        got = sample["output_json"]["values"]
        return math.fsum(got) / item["scale"] + len(sample["output_text"]) * 0
    """
    grade = run_grade(grader(source), json.dumps({"values": [1, 2, 3.5]}), {"scale": 2})
    assert grade.score == 3.25
    assert run_grade(grader("def grade(s, i):\n    return True + 1\n"), "x").score == 2.0


@needs_sandbox
def test_a_runtime_error_is_a_grader_error_with_the_line() -> None:
    error = fails(
        """
        def helper(item):
            return item["total"] / item["count"]

        def grade(sample, item):
            return helper(item)
        """,
        {"total": 1, "count": 0},
    )
    assert error.kind == "python_grader_runtime_error"
    assert "ZeroDivisionError: division by zero (line 3, in helper)" in error.message
    traceback = str(error.details["details"])
    assert "Traceback" in traceback and 'return item["total"] / item["count"]' in traceback


@needs_sandbox
@pytest.mark.parametrize(
    ("returns", "message"),
    [("'0.5'", "not a number"), ("None", "not a number"), ("float('nan')", "not a finite")],
)
def test_a_result_that_is_not_a_number(returns: str, message: str) -> None:
    error = fails(f"def grade(sample, item):\n    return {returns}\n")
    assert error.kind == "python_grader_runtime_error" and message in error.message


@needs_sandbox
def test_a_source_that_fails_to_load() -> None:
    error = fails("import no_such_module\ndef grade(sample, item):\n    return 1\n")
    assert "failed to load" in error.message and "ModuleNotFoundError" in error.message


@needs_sandbox
@pytest.mark.parametrize(
    "body",
    [
        "while True:\n        pass",
        # an except clause that swallows the timer's exception: killed from outside
        "while True:\n        try:\n            while True:\n                pass\n"
        "        except BaseException:\n            pass",
    ],
)
def test_a_timeout(body: str) -> None:
    error = fails(f"def grade(sample, item):\n    {body}\n", timeout_s=1)
    assert error.kind == "unresponsive_reward_error"
    assert "ran past 1 s" in error.message


@needs_sandbox
def test_a_socket_to_the_loopback_is_refused() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        error = fails(
            f"""
            import socket
            def grade(sample, item):
                with socket.create_connection(("127.0.0.1", {port}), timeout=2):
                    return 1.0
            """
        )
    assert error.kind == "python_grader_runtime_error"
    assert "refuses socket" in error.message


@needs_sandbox
def test_the_namespace_has_no_network_even_without_the_audit_hook() -> None:
    """The first layer on its own: a plain python in the sandbox's namespaces."""
    command = python_grader.sandbox_command()
    assert command is not None
    plain = [*command[: command.index("--") + 1], sys.executable, "-I", "-c"]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        code = (
            "import socket\ns = socket.socket()\ns.settimeout(2)\n"
            f"print(s.connect_ex(('127.0.0.1', {listener.getsockname()[1]})))"
        )
        done = subprocess.run([*plain, code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() != "0"  # not connected: the network is unreachable


@needs_sandbox
def test_the_memory_limit() -> None:
    error = fails(
        "def grade(sample, item):\n    block = bytearray(512 * 1024 * 1024)\n    return 1\n",
        memory_mb=256,
    )
    assert error.kind == "python_grader_runtime_error"
    assert "MemoryError" in error.message


@needs_sandbox
@pytest.mark.parametrize(
    ("code", "refused"),
    [
        ("import os\n    return os.system('true')", "refuses os.system"),
        ("import subprocess\n    return subprocess.run(['true']).returncode", "subprocess.Popen"),
        ("import os\n    return os.fork()", "refuses os.fork"),
        ("open('out.txt', 'w').write('x')\n    return 1", "refuses writing"),
        ("return len(open('/etc/hostname').read())", "refuses reading"),
        ("import os\n    return len(os.listdir('/root'))", "refuses listing"),
        ("import ctypes\n    return ctypes.CDLL(None).getpid()", "refuses ctypes"),
    ],
)
def test_the_audit_hook_refuses(code: str, refused: str) -> None:
    error = fails(f"def grade(sample, item):\n    {code}\n")
    assert refused in error.message


@needs_sandbox
def test_printing_does_not_corrupt_the_results() -> None:
    source = """
    import os, sys
    def grade(sample, item):
        print('{"i": 0, "score": 99.0}')
        os.write(1, b'{"i": 0, "score": 98.0}\\n')
        sys.stderr.write("noise\\n")
        return 0.25
    """
    assert run_grade(grader(source), "x").score == 0.25


@needs_sandbox
def test_grade_many_batches_and_isolates_failures() -> None:
    # a counter that lives as long as its process shows how the pairs were batched
    source = """
    import os
    calls = 0
    def grade(sample, item):
        global calls
        calls += 1
        if item["k"] == "exit":
            os._exit(3)
        if item["k"] == "raise":
            raise ValueError("bad row")
        return calls
    """
    keys = ["a", "b", "c", "d", "exit", "e", "raise", "f"]
    inputs = [GradeInput(item={"k": k}, sample=sample_from_output("x")) for k in keys]
    results = asyncio.run(grader(source, batch_size=3).grade_many(inputs))
    shown = [r.score if isinstance(r, Grade) else r.kind for r in results]
    # batches [a b c] [d exit e] [raise f]: the exit kills its process, e runs in a new one
    assert shown == [
        1.0, 2.0, 3.0,
        1.0, "python_grader_runtime_error", 1.0,
        "python_grader_runtime_error", 2.0,
    ]  # fmt: skip
    exit_error = results[4]
    assert isinstance(exit_error, GraderError) and "exited (status 3)" in exit_error.message
    one_process = asyncio.run(grader(source).grade_many(inputs[:4]))
    assert [r.score for r in one_process if isinstance(r, Grade)] == [1.0, 2.0, 3.0, 4.0]


@needs_sandbox
def test_python_inside_multi_is_batched_too() -> None:
    from distillery.evals.graders.base import grade_many

    multi = build_grader(
        {
            "type": "multi",
            "name": "m",
            "graders": {"code": config(EXACT), "calls": config(
                "n = 0\ndef grade(s, i):\n    global n\n    n += 1\n    return n\n")},
            "calculate_output": "code + calls / 100",
        }
    )  # fmt: skip
    inputs = [GradeInput(item={"answer": "4"}, sample=sample_from_output(a)) for a in "454"]
    results = asyncio.run(grade_many(multi, inputs))
    assert [r.score for r in results if isinstance(r, Grade)] == [1.01, 0.02, 1.03]

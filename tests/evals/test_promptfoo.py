"""Promptfoo (the eval CLI OpenAI points Evals API users to) driving distillery as an
OpenAI-compatible provider: ``examples/promptfoo/promptfooconfig.yaml``, unchanged, evaluates a
student distilled here through the live gateway.

``make test`` installs promptfoo from ``examples/promptfoo/package-lock.json`` (``npm ci``). Node
and npm are on the project's machines; where they are missing the test skips, except in CI.
Promptfoo is kept off the network: telemetry, update checks and sharing off, and any request that
is not for 127.0.0.1 goes to a closed loopback port.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.support.ft import upload, wait_for

pytestmark = pytest.mark.training

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "promptfoo"
PROMPTFOO = EXAMPLE / "node_modules" / ".bin" / "promptfoo"
CATEGORIES = {"IT", "労務", "総務", "経理", "人事"}
STUDENT = "smollm2-135m-instruct"
TINY = {"max_length": 64, "lora_r": 4, "lora_alpha": 8}
OFFLINE = {
    "PROMPTFOO_DISABLE_TELEMETRY": "1",
    "PROMPTFOO_DISABLE_UPDATE": "1",
    "PROMPTFOO_DISABLE_SHARING": "1",
    "PROMPTFOO_DISABLE_RUNTIME_WARNINGS": "1",
    "PROMPTFOO_FAILED_TEST_EXIT_CODE": "0",  # a wrong answer is a result, not a crash
    "NODE_NO_WARNINGS": "1",
    # the one request no setting turns off ("telemetry disabled") goes nowhere
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "NO_PROXY": "127.0.0.1,localhost",
}


def _promptfoo() -> Path:
    if PROMPTFOO.exists():
        return PROMPTFOO
    message = "promptfoo is not installed: make test runs npm ci in examples/promptfoo"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def _answer(row: dict[str, Any]) -> dict[str, Any]:
    output = row["response"]["output"]
    return output if isinstance(output, dict) else json.loads(output)  # type: ignore[no-any-return]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_promptfoo_evaluates_a_distilled_student_through_distillery(
    client: openai.OpenAI, gateway: Any, tmp_path: Path
) -> None:
    promptfoo = _promptfoo()
    job = client.fine_tuning.jobs.create(
        model=STUDENT,
        training_file=upload(client),
        suffix="router",
        seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2}}},
        extra_body={"distillery": TINY},
    )
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    student = done.fine_tuned_model
    assert student is not None

    out = tmp_path / "results.json"
    env = {
        **os.environ,
        **OFFLINE,
        "PROMPTFOO_CONFIG_DIR": str(tmp_path / "promptfoo"),
        "DISTILLERY_BASE_URL": gateway.url + "/v1",
        "DISTILLERY_API_KEY": "unused",
        "DISTILLERY_STUDENT": student,
    }
    command = [str(promptfoo), "eval", "-c", str(EXAMPLE / "promptfooconfig.yaml")]
    command += ["--no-cache", "--no-progress-bar", "--no-table", "--no-write", "-o", str(out)]
    run = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr

    results = json.loads(out.read_text(encoding="utf-8"))["results"]
    rows = sorted(results["results"], key=lambda row: row["testIdx"])
    stats = results["stats"]
    assert len(rows) == 6 and stats["errors"] == 0, [row.get("error") for row in rows]
    assert stats["successes"] + stats["failures"] == 6
    answers = [_answer(row) for row in rows]
    for row, answer in zip(rows, answers, strict=True):
        assert answer["category"] in CATEGORIES  # the schema held (constrained decoding)
        # promptfoo's verdict is the category check on what distillery's student answered
        assert row["success"] == (answer["category"] == row["vars"]["category"]), row
    assert stats["successes"] == sum(row["success"] for row in rows)

    # every exchange went through distillery to the student, stored with promptfoo's metadata
    stored = list(client.chat.completions.list(metadata={"source": "promptfoo"}, limit=100))
    assert len(stored) == 6
    assert {completion.model for completion in stored} == {student}
    contents = sorted(json.loads(c.choices[0].message.content or "")["category"] for c in stored)
    assert contents == sorted(answer["category"] for answer in answers)
    questions = {row["vars"]["question"] for row in rows}
    assert {"有給の申請は？", "VPN password reset?"} <= questions

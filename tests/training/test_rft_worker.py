"""A reinforcement run's worker killed after a checkpoint resumes from it (the embedded student,
a few tiny steps): the prompts it chose, the step count and the optimizer carry over."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from distillery.training.local.backend import LocalBackend
from distillery.training.local.rft_config import LocalRFTConfig

from .test_worker import finish, log_of, wait_for

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("training_home")]

GRADER = {
    "type": "string_check",
    "name": "yes",
    "input": "{{sample.output_json.answer}}",
    "reference": "{{item.reference_answer}}",
    "operation": "eq",
}
FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "yes_no",
        "schema": {
            "type": "object",
            "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
            "required": ["answer"],
            "additionalProperties": False,
        },
    },
}


def test_a_killed_reinforcement_run_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    rows = [
        {"messages": [{"role": "user", "content": f"Is {n} even?"}], "reference_answer": "yes"}
        for n in range(4)
    ]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = LocalRFTConfig(
        grader=GRADER,
        response_format=FORMAT,
        n_epochs=3,
        batch_size=2,  # 2 steps an epoch
        group_size=2,
        max_completion_tokens=8,
        focus="all",
        constant_reward_patience=10,
        threads=1,
        lora_r=4,
        seed=5,
    )
    job = LocalBackend.write_job(tmp_path / "job", config, train)
    proc = LocalBackend.start_worker(job)
    wait_for(job, proc, lambda ev: any(e["type"] == "checkpoint" for e in ev))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    killed = LocalBackend.poll_folder(job)
    assert killed.status == "failed" and killed.resumable, log_of(job)
    last_epoch = killed.checkpoint_epochs[-1]
    offset = (job / "events.jsonl").stat().st_size

    proc = LocalBackend.start_worker(job)
    finish(job, proc)
    final = LocalBackend.poll_folder(job, offset)
    assert proc.returncode == 0 and final.status == "succeeded", log_of(job)
    resumed = [e for e in final.events if e["message"].startswith("Resumed from checkpoint")]
    assert resumed and resumed[0]["data"]["epoch"] == last_epoch
    steps = [e["data"]["step"] for e in final.events if e["type"] == "metrics"]
    assert steps == list(range(2 * last_epoch + 1, 7))  # the steps after the checkpoint only
    assert final.checkpoint_epochs == [1, 2, 3]
    assert final.result is not None and final.result["metrics"]["step"] == 6
    assert (job / "adapter" / "adapter_config.json").is_file()

"""A CUDA out-of-memory error during a step ends the job with a clear ``out_of_memory`` error
(naming the sizes to lower), in one process and on another rank of a data-parallel run."""

from __future__ import annotations

import json
import os
import signal
import textwrap
from pathlib import Path

import pytest

from distillery.training.local.backend import LocalBackend
from distillery.training.local.config import LocalSFTConfig

from .chat_files import QUESTIONS, chat_record, write_jsonl

TINY = {
    "max_length": 64,
    "lora_r": 4,
    "lora_alpha": 8,
    "threads": 1,
    "batch_size": 4,
    "seed": 7,
    "device": "cpu",
    "bf16": False,
}
CUDA_OOM = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.1 GiB "
    "of which 1.2 GiB is free."
)


def test_out_of_memory_errors_name_the_sizes_to_lower() -> None:
    import torch

    from distillery.training.local.worker import _error_of

    config = LocalSFTConfig(**TINY)
    error = _error_of(torch.cuda.OutOfMemoryError(CUDA_OOM), config)
    assert error["code"] == "out_of_memory"
    message = error["message"]
    assert message.startswith("training ran out of GPU memory; lower batch_size (now 4), ")
    assert "max_length (now 64)" in message and "max_tokens_per_pass (now 4096)" in message
    assert "gradient_accumulation_steps (now 1)" in message
    assert "Tried to allocate 2.00 GiB" in message and "Traceback" not in message
    host = _error_of(MemoryError(), None)
    assert host["code"] == "out_of_memory"
    assert "batch_size, max_length or max_tokens_per_pass" in host["message"]
    other = _error_of(RuntimeError("shape mismatch"), config)
    assert other == {"code": "training_error", "message": "RuntimeError: shape mismatch"}


@pytest.mark.training
@pytest.mark.usefixtures("training_home")
def test_a_step_out_of_cuda_memory_fails_the_job_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from distillery.training.local.trainer import LocalSFTTrainer
    from distillery.training.local.worker import run_job

    def out_of_memory(self: LocalSFTTrainer, examples: object) -> None:
        raise torch.cuda.OutOfMemoryError(CUDA_OOM)

    monkeypatch.setattr(LocalSFTTrainer, "_train_step", out_of_memory)
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS])
    job = LocalBackend.write_job(tmp_path / "job", LocalSFTConfig(**TINY), train)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        assert run_job(job) == 1
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "failed"
    assert result["error"]["code"] == "out_of_memory"
    assert "batch_size (now 4)" in result["error"]["message"]
    assert "max_length (now 64)" in result["error"]["message"]
    assert result["hyperparameters"]["batch_size"] == 4
    progress = LocalBackend.poll_folder(job)
    assert progress.status == "failed" and not progress.resumable
    errors = [e for e in progress.events if e["level"] == "error"]
    assert len(errors) == 1 and "ran out of GPU memory" in errors[0]["message"]
    # through the trainer seam: a failed job with that error, not a lost one to restart
    seen = LocalBackend().poll(str(job))
    assert seen.status == "failed" and seen.error is not None
    assert seen.error.code == "out_of_memory" and "max_length (now 64)" in seen.error.message


@pytest.mark.training
@pytest.mark.usefixtures("training_home")
def test_another_rank_out_of_memory_is_the_jobs_error(tmp_path: Path) -> None:
    """Rank 1 of two runs out of memory in its first step: rank 0 (whose collective breaks)
    reports rank 1's error, and the launcher ends both."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(
        textwrap.dedent(
            f"""
            import os

            if os.environ.get("RANK") == "1":
                import torch

                from distillery.training.local.trainer import LocalSFTTrainer

                def _out_of_memory(self, examples):
                    raise torch.cuda.OutOfMemoryError({CUDA_OOM!r})

                LocalSFTTrainer._train_step = _out_of_memory
            """
        )
    )
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS])
    config = LocalSFTConfig(**TINY, devices=2)
    job = LocalBackend.write_job(tmp_path / "job", config, train)
    path = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH")) if p)
    proc = LocalBackend.start_worker(job, env={"PYTHONPATH": path})
    proc.wait(timeout=600)
    log = (job / "worker.log").read_text()
    assert proc.returncode != 0, log
    progress = LocalBackend.poll_folder(job)
    assert progress.status == "failed" and progress.result is not None, log
    error = progress.result["error"]
    assert error["code"] == "out_of_memory", log
    assert error["message"].startswith("rank 1: training ran out of GPU memory; lower batch_size")
    assert [e for e in progress.events if e["level"] == "error"]
    assert not [e for e in progress.events if e["type"] == "metrics"]

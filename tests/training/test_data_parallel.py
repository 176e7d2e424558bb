"""Data-parallel local training (``devices`` > 1): a real two-process gloo run on CPU, checked
against one process over the same batches; the options' validation; the GPU runs (``gpu``)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from distillery.errors import InvalidRequestError
from distillery.settings import TrainingConfig
from distillery.training.local.backend import LocalBackend, worker_command
from distillery.training.local.config import LocalSFTConfig
from distillery.training.local.parallel import DataParallel

from .chat_files import QUESTIONS, chat_record, write_jsonl

# small on 2 CPU cores; fp32 so that the two runs differ only by the order of float sums
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
WAIT = 600.0


def _cuda_devices() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _run(tmp_path: Path, name: str, train: Path, **options: Any) -> tuple[Path, dict[str, Any]]:
    """Run a job to its end; returns its folder and its events."""
    config = LocalSFTConfig(**{**TINY, **options})
    job = LocalBackend.write_job(tmp_path / name, config, train)
    proc = LocalBackend.start_worker(job)
    proc.wait(timeout=WAIT)
    log = (job / "worker.log").read_text() if (job / "worker.log").exists() else ""
    assert proc.returncode == 0, log
    progress = LocalBackend.poll_folder(job)
    assert progress.status == "succeeded", (progress.result, log)
    assert int((job / "worker.pid").read_text()) == proc.pid
    return job, {"events": progress.events, "result": progress.result, "log": log}


def _adapter(job: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(job / "adapter" / "adapter_model.safetensors"))


# -- options ---------------------------------------------------------------------------------


def test_devices_must_be_at_least_one() -> None:
    assert LocalSFTConfig().devices == 1
    assert TrainingConfig().devices == 1
    assert TrainingConfig(devices=4).devices == 4
    with pytest.raises(ValidationError, match="devices"):
        LocalSFTConfig(devices=0)
    with pytest.raises(ValidationError, match="devices"):
        TrainingConfig(devices=0)


def test_training_devices_reach_the_jobs_config(tmp_path: Path) -> None:
    from distillery.providers.local_config import LocalProviderConfig
    from distillery.training.base import FineTuneSpec, Hyperparameters, TrainerContext
    from distillery.training.local.backend import LOCAL_TRAINER

    def spec(**extras: Any) -> FineTuneSpec:
        return FineTuneSpec(
            job_id="ftjob-1",
            model="student",
            provider="local",
            training_file="file-1",
            training_path=tmp_path / "train.jsonl",
            validation_file=None,
            validation_path=None,
            hyperparameters=Hyperparameters(),
            seed=1,
            suffix=None,
            job_dir=tmp_path / "job",
            training_examples=10,
            extras=extras,
        )

    context = TrainerContext(
        provider="local",
        provider_config=LocalProviderConfig(),
        options=None,
        training=TrainingConfig(device="cuda", devices=4),
        home=tmp_path,
    )
    backend = LOCAL_TRAINER.build(context)
    config = backend.config(spec())
    assert (config.device, config.devices) == ("cuda", 4)
    assert backend.config(spec(devices=2)).devices == 2  # the job's own option wins
    with pytest.raises(InvalidRequestError, match="devices"):
        backend.config(spec(devices=0))


def test_worker_command_uses_the_elastic_launcher_for_several_devices(tmp_path: Path) -> None:
    one = worker_command(tmp_path, 1)
    assert one == [sys.executable, "-m", "distillery.training.local.worker", str(tmp_path)]
    two = worker_command(tmp_path, 2)
    assert two[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in two and "--nproc_per_node=2" in two
    assert two[-3:] == ["-m", "distillery.training.local.worker", str(tmp_path)]


def test_shards_split_a_step_round_robin() -> None:
    items = list(range(7))
    shards = [DataParallel(rank=r, world_size=3).shard(items) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(x for s in shards for x in s) == items
    assert DataParallel().shard(items) == items
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}
    assert DataParallel.from_env(env) == DataParallel(rank=1, world_size=2, local_rank=1)
    assert not DataParallel.from_env({}).enabled
    assert DataParallel(world_size=2, local_rank=1).device_for("cuda") == "cuda:1"
    assert DataParallel(world_size=2, local_rank=1).device_for("cpu") == "cpu"


# -- a real two-process run on CPU -----------------------------------------------------------


@pytest.mark.training
@pytest.mark.usefixtures("training_home")
def test_two_cpu_processes_train_what_one_process_trains(tmp_path: Path) -> None:
    import torch

    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS])
    single, one = _run(tmp_path, "single", train, n_epochs=2)
    double, two = _run(tmp_path, "double", train, n_epochs=2, devices=2)

    # rank 0 alone writes: one start, one announcement, one metrics event per step,
    # one checkpoint per epoch, one finish; no rank reported an error
    events = two["events"]
    messages = [e["message"] for e in events]
    assert messages.count("Fine-tuning job started") == 1
    assert messages.count("The job has successfully completed") == 1
    announced = [
        e for e in events if e["message"].startswith("Training ") and "examples" in e["message"]
    ]
    assert len(announced) == 1 and announced[0]["data"]["devices"] == 2
    # 11 examples are left within 64 tokens: steps of 4, 4 and 3, the last split 2 + 1
    assert announced[0]["data"]["n_examples"] == 11
    assert "x 2 processes" in announced[0]["message"]
    steps = [e["data"]["step"] for e in events if e["type"] == "metrics"]
    assert steps == [1, 2, 3, 4, 5, 6]  # batch_size 4: 3 steps per epoch
    assert [e["data"]["epoch"] for e in events if e["type"] == "checkpoint"] == [1, 2]
    assert sorted(p.name for p in (double / "checkpoints").iterdir()) == ["epoch-1", "epoch-2"]
    assert not list(double.glob("rank-*.error.json"))
    assert two["result"]["hyperparameters"] == one["result"]["hyperparameters"]
    assert two["result"]["hyperparameters"]["batch_size"] == 4

    # the same steps: losses, tokens and the final adapter match one process over each batch
    def losses(run: dict[str, Any]) -> list[float]:
        return [e["data"]["train_loss"] for e in run["events"] if e["type"] == "metrics"]

    assert losses(two) == pytest.approx(losses(one), rel=1e-4)
    assert losses(two)[-1] < losses(two)[0]
    assert two["result"]["trained_tokens"] == one["result"]["trained_tokens"]
    a, b = _adapter(single), _adapter(double)
    assert a.keys() == b.keys() and a
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=2e-5)
    # the adapters did train (LoRA's B starts at zero), so the comparison is not vacuous
    moved = max(float(t.abs().max()) for k, t in a.items() if "lora_B" in k)
    assert moved > 1e-4


@pytest.mark.training
@pytest.mark.usefixtures("training_home")
def test_two_cpu_processes_resume_after_a_kill(tmp_path: Path) -> None:
    import torch

    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS[:8]])
    options = {"n_epochs": 6, "devices": 2}  # 2 steps per epoch, 12 steps
    whole, _ = _run(tmp_path, "whole", train, **options)

    config = LocalSFTConfig(**{**TINY, **options})
    job = LocalBackend.write_job(tmp_path / "job", config, train)
    proc = LocalBackend.start_worker(job)
    deadline = time.monotonic() + WAIT
    while not LocalBackend.poll_folder(job).checkpoint_epochs and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher; its ranks die with it
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while _ranks_of(job) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ranks_of(job)
    killed = LocalBackend.poll_folder(job)
    assert killed.status == "failed" and killed.resumable, (job / "worker.log").read_text()
    last_epoch = killed.checkpoint_epochs[-1]
    assert 1 <= last_epoch < 6
    offset = (job / "events.jsonl").stat().st_size

    proc = LocalBackend.start_worker(job)
    assert proc.wait(timeout=WAIT) == 0, (job / "worker.log").read_text()
    final = LocalBackend.poll_folder(job, offset)
    assert final.status == "succeeded"
    resumed = [e for e in final.events if e["message"].startswith("Resumed from checkpoint")]
    assert len(resumed) == 1
    assert resumed[0]["data"] == {"epoch": last_epoch, "step": 2 * last_epoch}
    steps = [e["data"]["step"] for e in final.events if e["type"] == "metrics"]
    assert steps == list(range(2 * last_epoch + 1, 13))
    # every rank resumed from the same state: the result is the uninterrupted run's
    a, b = _adapter(whole), _adapter(job)
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-3, atol=2e-5)


@pytest.mark.training
@pytest.mark.usefixtures("training_home")
def test_cancel_stops_every_rank_at_the_same_step(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS])
    config = LocalSFTConfig(**{**TINY, "n_epochs": 25, "devices": 2})
    job = LocalBackend.write_job(tmp_path / "job", config, train)
    proc = LocalBackend.start_worker(job)
    deadline = time.monotonic() + WAIT
    offset, events = 0, []
    while not any(e["type"] == "metrics" for e in events):
        assert proc.poll() is None and time.monotonic() < deadline, (job / "worker.log").read_text()
        progress = LocalBackend.poll_folder(job, offset)
        offset, events = progress.next_offset, events + progress.events
        time.sleep(0.05)
    LocalBackend.cancel_worker(job, proc.pid)
    proc.wait(timeout=120)
    final = LocalBackend.poll_folder(job)
    assert final.status == "cancelled", (final.result, (job / "worker.log").read_text())
    assert final.result is not None and final.result["error"] is None
    assert len([e for e in final.events if e["type"] == "metrics"]) < 75
    assert not list(job.glob("rank-*.error.json"))
    deadline = time.monotonic() + 60
    while _ranks_of(job) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _ranks_of(job)


def _ranks_of(job: Path) -> list[int]:
    """Live processes whose command line names ``job`` (the launcher and its ranks)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if str(job).encode() in cmdline and state not in ("Z", "X"):
            found.append(int(proc.name))
    return found


# -- GPUs (skipped without CUDA) -------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.training
@pytest.mark.usefixtures("training_home")
@pytest.mark.skipif(_cuda_devices() < 1, reason="needs CUDA")
def test_cuda_run_in_bf16(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS])
    options = {"device": "cuda", "bf16": "auto", "n_epochs": 1}
    _, run = _run(tmp_path, "job", train, **options)
    announced = [
        e
        for e in run["events"]
        if e["message"].startswith("Training ") and "examples" in e["message"]
    ]
    import torch

    assert announced[0]["data"]["device"].startswith("cuda")
    assert announced[0]["data"]["bf16"] is bool(torch.cuda.is_bf16_supported())


@pytest.mark.gpu
@pytest.mark.training
@pytest.mark.usefixtures("training_home")
@pytest.mark.skipif(_cuda_devices() < 2, reason="needs two CUDA devices")
def test_two_gpus_with_nccl(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", [chat_record(q, c) for q, c in QUESTIONS])
    options = {"device": "cuda", "bf16": "auto", "n_epochs": 1, "devices": 2}
    job, run = _run(tmp_path, "job", train, **options)
    metrics = [e for e in run["events"] if e["type"] == "metrics"]
    assert [e["data"]["step"] for e in metrics] == [1, 2, 3]
    assert (job / "adapter" / "adapter_model.safetensors").is_file()
    assert json.loads((job / "result.json").read_text())["status"] == "succeeded"


def test_launcher_module_is_runnable() -> None:
    """The launcher the backend names exists in the installed torch."""
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "--nproc_per_node" in out.stdout

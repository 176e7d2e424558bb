"""The worker subprocess end to end: real tiny trainings of the embedded student."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from distillery.training.local.backend import FolderProgress, LocalBackend
from distillery.training.local.config import LocalSFTConfig

from .chat_files import QUESTIONS, chat_record, write_jsonl

pytestmark = [pytest.mark.training, pytest.mark.usefixtures("training_home")]

TINY = {"max_length": 128, "threads": 1, "batch_size": 4, "seed": 7}
WAIT = 600.0  # generous upper bounds only: no timing assertions


def wait_for(
    job_dir: Path, proc: subprocess.Popen[bytes], predicate: Any, timeout: float = WAIT
) -> tuple[FolderProgress, list[dict[str, Any]]]:
    """Poll until ``predicate(events)`` holds or the worker exits; return the last poll."""
    events: list[dict[str, Any]] = []
    offset = 0
    deadline = time.monotonic() + timeout
    while True:
        progress = LocalBackend.poll_folder(job_dir, offset)
        offset = progress.next_offset
        events.extend(progress.events)
        if predicate(events) or proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is not None:  # collect the tail written just before exit
                progress = LocalBackend.poll_folder(job_dir, offset)
                events.extend(progress.events)
            return progress, events
        time.sleep(0.05)


def finish(
    job_dir: Path, proc: subprocess.Popen[bytes]
) -> tuple[FolderProgress, list[dict[str, Any]]]:
    _, events = wait_for(job_dir, proc, lambda _: False)
    assert proc.wait(timeout=60) is not None
    return LocalBackend.poll_folder(job_dir), events


def log_of(job_dir: Path) -> str:
    path = job_dir / "worker.log"
    return path.read_text() if path.exists() else ""


def test_real_training_run(tmp_path: Path, train_file: Path, valid_file: Path) -> None:
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from safetensors.torch import load_file

    from distillery import weights

    config = LocalSFTConfig(n_epochs=2, merge_adapter=True, early_stopping_patience=0, **TINY)
    job = LocalBackend.write_job(tmp_path / "job", config, train_file, valid_file)
    proc = LocalBackend.start_worker(job)
    progress, events = finish(job, proc)
    assert proc.returncode == 0, log_of(job)
    assert progress.status == "succeeded", progress.result
    result = json.loads((job / "result.json").read_text())
    assert result["status"] == "succeeded" and result["error"] is None
    assert result["hyperparameters"] == {
        "n_epochs": 2,
        "batch_size": 4,
        "learning_rate_multiplier": 1.77,  # LoRA's automatic rate at batch 4: 2.5 x sqrt(4 / 8)
    }
    assert int((job / "worker.pid").read_text()) == proc.pid

    for event in events:
        assert set(event) == {"type", "level", "message", "data", "created_at"}
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 7))  # 12 examples / 4 x 2 epochs
    for m in metrics:
        assert m["total_steps"] == 6 and m["train_loss"] > 0
        assert 0 <= m["train_mean_token_accuracy"] <= 1
        assert m["tokens_per_second"] > 0 and m["learning_rate"] > 0
    checkpoints = [e["data"] for e in events if e["type"] == "checkpoint"]
    assert [c["epoch"] for c in checkpoints] == [1, 2]
    assert [c["step"] for c in checkpoints] == [3, 6]
    for c in checkpoints:
        assert Path(c["path"]).is_dir()
        m = c["metrics"]
        assert m["valid_loss"] > 0 and 0 <= m["valid_mean_token_accuracy"] <= 1
        assert m["train_loss"] > 0 and m["step"] == c["step"]
    states = [
        torch.load(job / "checkpoints" / f"epoch-{n}" / "trainer_state.pt", weights_only=False)
        for n in (1, 2)
    ]
    assert [(s["epoch"], s["step"]) for s in states] == [(1, 3), (2, 6)]
    assert states[0]["optimizer"] is None  # only the latest checkpoint keeps it, for resuming
    assert states[1]["optimizer"]["state"] and states[1]["scheduler"] and states[1]["rng"]
    assert result["trained_tokens"] > 0 and result["metrics"]["valid_loss"] > 0

    # the task's measure, before training and after each epoch, chose the adapter kept
    before = next(e["data"] for e in events if (e["data"] or {}).get("epoch") == 0)
    assert before["measure"]["fields"] == ["reason", "category"]  # both repeat per label
    assert 0 <= before["metrics"]["valid_field_match"] <= 1
    selection = next(e["data"]["selection"] for e in events if "selection" in (e["data"] or {}))
    assert [p["epoch"] for p in selection["curve"]] == [0, 1, 2]
    kept = selection["chosen_epoch"]
    assert result["metrics"]["epoch"] == kept
    best = max(selection["curve"], key=lambda p: (p["score"], -p["valid_loss"], -p["epoch"]))
    assert kept == best["epoch"] and kept >= 1, selection  # it learns on its own questions
    chosen = load_file(str(job / "checkpoints" / f"epoch-{kept}" / "adapter_model.safetensors"))
    final = load_file(str(Path(result["adapter_path"]) / "adapter_model.safetensors"))
    assert all(torch.equal(chosen[k], final[k]) for k in chosen)

    # every LoRA parameter moved away from its (seeded) initialisation
    source = weights.resolve_source(weights.EMBEDDED_MODEL)
    base = weights.load_model(source, dtype="float32")
    torch.manual_seed(config.seed)
    initial = get_peft_model(
        base,
        LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            target_modules=config.target_modules,
            task_type="CAUSAL_LM",
        ),
    )
    init_state = {
        n.replace(".default", ""): p.detach().clone()
        for n, p in initial.named_parameters()
        if "lora_" in n
    }
    trained = load_file(str(Path(result["adapter_path"]) / "adapter_model.safetensors"))
    assert len(trained) == len(init_state) == 30 * 7 * 2
    for name, value in trained.items():
        before = init_state[name]
        assert not torch.equal(value.float(), before), f"{name} did not change"
        # close to the replayed init: proves the comparison is against the real starting point
        assert (value.float() - before).abs().max() < 0.01, name

    # the adapter loads with plain peft on the base and generates
    base = weights.load_model(source, dtype="float32")
    model = PeftModel.from_pretrained(base, result["adapter_path"])
    tok = weights.load_tokenizer(source)
    prompt = tok.apply_chat_template(
        chat_record(*QUESTIONS[0])["messages"][:-1], add_generation_prompt=True, tokenize=False
    )
    ids = tok(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]

    # merge_adapter: a plain transformers folder with the adapter folded in
    merged = weights.load_model(weights.resolve_source("merged", result["merged_path"]))
    with torch.no_grad():
        expected = model(**ids).logits
        got = merged(**ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)


def test_cancel_stops_the_worker(tmp_path: Path, train_file: Path) -> None:
    config = LocalSFTConfig(n_epochs=25, **TINY)
    job = LocalBackend.write_job(tmp_path / "job", config, train_file)
    proc = LocalBackend.start_worker(job)
    progress, _ = wait_for(job, proc, lambda ev: any(e["type"] == "metrics" for e in ev))
    assert progress.status == "running", log_of(job)
    LocalBackend.cancel_worker(job, proc.pid)
    assert proc.wait(timeout=120) == 0, log_of(job)
    final = LocalBackend.poll_folder(job)
    assert final.status == "cancelled"
    assert final.result is not None and final.result["error"] is None
    steps = [e for e in final.events if e["type"] == "metrics"]
    assert len(steps) < 75  # it did not run to the end


def test_resume_after_kill_continues_from_last_checkpoint(tmp_path: Path) -> None:
    records = [chat_record(q, c) for q, c in QUESTIONS[:8]]
    train = write_jsonl(tmp_path / "train.jsonl", records)
    config = LocalSFTConfig(n_epochs=6, **TINY)  # 2 steps per epoch, 12 steps
    job = LocalBackend.write_job(tmp_path / "job", config, train)
    proc = LocalBackend.start_worker(job)
    wait_for(job, proc, lambda ev: any(e["type"] == "checkpoint" for e in ev))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    killed = LocalBackend.poll_folder(job)
    assert killed.status == "failed" and killed.resumable, log_of(job)
    assert killed.result is not None and killed.result["error"]["code"] == "worker_exited"
    last_epoch = killed.checkpoint_epochs[-1]
    assert 1 <= last_epoch < 6
    offset = (job / "events.jsonl").stat().st_size

    proc = LocalBackend.start_worker(job)
    _, _ = finish(job, proc)
    final = LocalBackend.poll_folder(job, offset)
    assert proc.returncode == 0 and final.status == "succeeded", log_of(job)
    resumed = [e for e in final.events if e["message"].startswith("Resumed from checkpoint")]
    assert resumed and resumed[0]["data"]["epoch"] == last_epoch
    assert resumed[0]["data"]["step"] == 2 * last_epoch
    checkpoints = [e["data"] for e in final.events if e["type"] == "checkpoint"]
    assert [c["epoch"] for c in checkpoints] == list(range(last_epoch + 1, 7))
    steps = [e["data"]["step"] for e in final.events if e["type"] == "metrics"]
    assert steps == list(range(2 * last_epoch + 1, 13))
    assert final.checkpoint_epochs == [1, 2, 3, 4, 5, 6]
    assert final.result is not None and final.result["metrics"]["step"] == 12


def test_bad_training_file_fails_with_clear_error(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(chat_record(*QUESTIONS[0])) + "\n{not json\n")
    job = LocalBackend.write_job(tmp_path / "job", LocalSFTConfig(**TINY), train)
    proc = LocalBackend.start_worker(job)
    progress, events = finish(job, proc)
    assert proc.returncode == 1
    assert progress.status == "failed"
    assert progress.result is not None
    error = progress.result["error"]
    assert error["code"] == "invalid_training_file"
    assert "line 2" in error["message"] and "invalid JSON" in error["message"]
    assert any(e["level"] == "error" for e in events)


def test_start_refuses_a_finished_job(tmp_path: Path, train_file: Path) -> None:
    from distillery.errors import ConflictError

    job = LocalBackend.write_job(tmp_path / "job", LocalSFTConfig(**TINY), train_file)
    (job / "result.json").write_text('{"status": "succeeded"}')
    with pytest.raises(ConflictError):
        LocalBackend.start_worker(job)

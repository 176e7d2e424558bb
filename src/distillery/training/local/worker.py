"""Subprocess entry of a local fine-tuning job: ``python -m distillery.training.local.worker DIR``.

The job folder protocol (``backend.py`` is the parent's side of it):

- input ``DIR/job.json``: ``{"config": LocalSFTConfig dict, "training_file": path,
  "validation_file": path | null}``; with ``"method": "reinforcement"`` the config is a
  ``LocalRFTConfig`` and the run is reinforcement fine-tuning (``grpo.py``);
- ``DIR/worker.pid``: this process's id, written first;
- ``DIR/events.jsonl``: one JSON object per line, appended and flushed as they happen:
  ``{"type": "message"|"metrics"|"checkpoint", "level": "info"|"warn"|"error", "message": str,
  "data": {...}|null, "created_at": unix_seconds}``;
- ``DIR/checkpoints/epoch-<N>/``: PEFT adapter (or full model) + ``trainer_state.pt``;
- ``DIR/adapter/`` (final adapter + tokenizer), ``DIR/merged/`` with ``merge_adapter``;
- ``DIR/result.json`` written last (atomically): ``{"status": "succeeded"|"failed"|"cancelled",
  "error": {"code", "message"}|null, "trained_tokens": int, "adapter_path": str|null,
  "metrics": {...}, "hyperparameters": {"n_epochs", "batch_size", "learning_rate_multiplier"}
  |null}``, plus ``"merged_path"`` when the adapter was merged. Error codes include
  ``invalid_training_file``, ``invalid_hyperparameters``, ``invalid_job``, ``model_not_found``,
  ``model_load_failed``, ``out_of_memory``, ``training_error``.

Events: ``message`` (info/warn/error), ``metrics`` every ``logging_steps`` steps with data
``{"step", "total_steps", "epoch", "train_loss", "train_mean_token_accuracy",
"tokens_per_second", "learning_rate"}``, and ``checkpoint`` after each epoch with data
``{"epoch", "step", "path", "metrics": {"step", "train_loss", "train_mean_token_accuracy",
"valid_loss", "valid_mean_token_accuracy"[, "full_valid_loss", "full_valid_mean_token_accuracy"]}}``
(the valid_* values are null without a validation file).

Cancellation: SIGTERM/SIGINT, or a file ``DIR/cancel``. The loop checks before every decoder
layer (forward and backward), so it stops within about a second, writes ``cancelled`` and exits 0.
Any failure writes ``failed`` with a clear message and exits 1; the process never hangs.
Starting the worker again on a folder without ``result.json`` resumes from the last checkpoint.

With ``devices`` > 1 the backend starts this module under torch's elastic launcher, one process
per device (``parallel.py``). Rank 0 then does all the writing above (``worker.pid`` holds the
launcher's pid, which leads the process group); another rank that fails writes
``DIR/rank-<R>.error.json``, which rank 0 reports as the job's error instead of the broken
collective it sees. A stop is agreed on at step boundaries, so all ranks stop at the same step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from distillery.errors import DistilleryError
from distillery.memory import resident_memory
from distillery.training.local.backend import (
    CANCEL_FILE,
    EVENTS_FILE,
    JOB_FILE,
    PID_FILE,
    RESULT_FILE,
    write_json_atomic,
)
from distillery.training.local.parallel import DataParallel


class EventLog:
    """Appends events to ``events.jsonl``, one flushed line each."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(
        self, type_: str, level: str, message: str, data: dict[str, Any] | None = None
    ) -> None:
        event = {
            "type": type_,
            "level": level,
            "message": message,
            "data": data,
            "created_at": int(time.time()),
        }
        line = json.dumps(event, ensure_ascii=False, default=str) + "\n"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()


class StopFlag:
    """Set by SIGTERM/SIGINT or by the ``cancel`` file (checked at most every 0.2 s)."""

    def __init__(self, cancel_file: Path) -> None:
        self.cancel_file = cancel_file
        self.requested = False
        self._checked_at = 0.0

    def handle_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def __call__(self) -> bool:
        if self.requested:
            return True
        now = time.monotonic()
        if now - self._checked_at > 0.2:
            self._checked_at = now
            self.requested = self.cancel_file.exists()
        return self.requested


RANK_ERROR_GLOB = "rank-*.error.json"


def _limits_of(config: Any) -> str:
    """The sizes that set a step's memory, for the out-of-memory message."""
    if config is None:
        return "batch_size, max_length or max_tokens_per_pass"
    return (
        f"batch_size (now {config.batch_size}), max_length (now {config.max_length}) or "
        f"max_tokens_per_pass (now {config.max_tokens_per_pass}), or raise "
        f"gradient_accumulation_steps (now {config.gradient_accumulation_steps})"
    )


def _error_of(exc: BaseException, config: Any = None) -> dict[str, str]:
    """The job error for ``exc``; ``config`` (the run's resolved ``LocalSFTConfig``) names the
    values to lower when it is an out-of-memory error."""
    if isinstance(exc, DistilleryError):
        return {"code": exc.code or exc.type, "message": exc.message}
    if isinstance(exc, ValidationError):
        return {"code": "invalid_hyperparameters", "message": f"invalid job config: {exc}"}
    text = str(exc)
    if (
        isinstance(exc, MemoryError)
        or type(exc).__name__ == "OutOfMemoryError"
        or ("can't allocate memory" in text or "out of memory" in text.lower())
    ):
        where = "GPU" if type(exc).__name__ == "OutOfMemoryError" else "memory"
        return {
            "code": "out_of_memory",
            "message": f"training ran out of {where} memory; lower {_limits_of(config)} "
            f"({type(exc).__name__}: {text[:300]})",
        }
    return {"code": "training_error", "message": f"{type(exc).__name__}: {text[:1000]}"}


def _rank_error(job_dir: Path) -> dict[str, str] | None:
    """The error another rank wrote before it exited, if one did."""
    for path in sorted(job_dir.glob(RANK_ERROR_GLOB)):
        try:
            error = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(error, dict) and "code" in error:
            return {"code": str(error["code"]), "message": str(error.get("message", ""))}
    return None


def run_job(job_dir: Path, parallel: DataParallel | None = None) -> int:
    """Run the job in ``job_dir``; always writes ``result.json`` (rank 0 of several does);
    returns the exit code."""
    from distillery.training.local.config import LocalSFTConfig
    from distillery.training.local.grpo import LocalRFTTrainer
    from distillery.training.local.rft_config import LocalRFTConfig
    from distillery.training.local.trainer import LocalSFTTrainer, TrainingCancelled

    parallel = parallel or DataParallel()
    log = EventLog(job_dir / EVENTS_FILE)

    def events(type_: str, level: str, message: str, data: dict[str, Any] | None = None) -> None:
        if parallel.is_main:
            log(type_, level, message, data)

    stop = StopFlag(job_dir / CANCEL_FILE)
    signal.signal(signal.SIGTERM, stop.handle_signal)
    signal.signal(signal.SIGINT, stop.handle_signal)
    result: dict[str, Any] = {
        "status": "failed",
        "error": None,
        "trained_tokens": 0,
        "adapter_path": None,
        "metrics": {},
        "hyperparameters": None,
    }
    trainer: LocalSFTTrainer | None = None
    try:
        try:
            job = json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DistilleryError(f"cannot read {JOB_FILE}: {exc}", code="invalid_job") from exc
        if not job.get("training_file"):
            raise DistilleryError(f"{JOB_FILE} names no training_file", code="invalid_job")
        events("message", "info", "Fine-tuning job started", {"pid": os.getpid()})
        if job.get("method") == "reinforcement":
            trainer = LocalRFTTrainer(
                LocalRFTConfig.model_validate(job.get("config") or {}),
                job["training_file"],
                job.get("validation_file"),
                job_dir,
                emit=events,
                should_stop=stop,
            )
        else:
            trainer = LocalSFTTrainer(
                LocalSFTConfig.model_validate(job.get("config") or {}),
                job["training_file"],
                job.get("validation_file"),
                job_dir,
                emit=events,
                should_stop=stop,
                parallel=parallel,
            )
        outcome = trainer.run()
        result.update(
            status="succeeded",
            trained_tokens=outcome.trained_tokens,
            adapter_path=str(outcome.adapter_path),
            metrics=outcome.metrics,
            hyperparameters=outcome.hyperparameters,
        )
        if outcome.merged_path is not None:
            result["merged_path"] = str(outcome.merged_path)
        events("message", "info", "The job has successfully completed", resident_memory())
        code = 0
    except TrainingCancelled:
        result["status"] = "cancelled"
        events("message", "info", "The job was cancelled", resident_memory())
        code = 0
    except BaseException as exc:  # everything else is a failure with a message, never a hang
        error = _error_of(exc, trainer.config if trainer is not None else None)
        if not parallel.is_main:  # rank 0 reports it (its own collective just broke)
            error["message"] = f"rank {parallel.rank}: {error['message']}"
            write_json_atomic(job_dir / f"rank-{parallel.rank}.error.json", error)
        elif parallel.enabled:
            error = _rank_error(job_dir) or error
        result["error"] = error
        message = f"The job failed: {result['error']['message']}"
        events("message", "error", message, resident_memory())
        traceback.print_exc()
        code = 1
    if trainer is not None and result["hyperparameters"] is None:
        result["hyperparameters"] = trainer.config.hyperparameters()
    if parallel.is_main:
        write_json_atomic(job_dir / RESULT_FILE, result)
    parallel.close()
    return code


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m distillery.training.local.worker JOB_DIR\n")
        return 2
    job_dir = Path(args[0]).resolve()
    if not job_dir.is_dir():
        sys.stderr.write(f"job folder {job_dir} does not exist\n")
        return 2
    parallel = DataParallel.from_env()
    if not parallel.enabled:
        (job_dir / PID_FILE).write_text(f"{os.getpid()}\n")
    else:
        _die_with_launcher()
        if parallel.is_main:  # the launcher: it leads the process group the backend signals
            (job_dir / PID_FILE).write_text(f"{os.getppid()}\n")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # OpenMP's wait policy is left to the user (OMP_WAIT_POLICY): forcing PASSIVE, so that idle
    # threads sleep at once instead of spinning briefly, left the trainer's 2 threads at 137% CPU
    # and halved its tokens/s on an otherwise idle 2-core machine (measured in the demo's job).
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return run_job(job_dir, parallel)


def _die_with_launcher() -> None:
    """The launcher starts each rank in a session of its own: have the kernel kill the rank
    when the launcher dies (a killed job must not leave ranks behind). Linux only."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(name, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())

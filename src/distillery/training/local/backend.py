"""``LocalTrainingBackend``: run, watch and cancel the fine-tuning worker subprocess.

The gateway never imports torch: it writes ``job.json`` (:meth:`LocalTrainingBackend.write_job`),
starts ``python -m distillery.training.local.worker <job_dir>`` in its own process group
(:meth:`start`), reads new events and the result from the folder (:meth:`poll`) and cancels with
SIGTERM plus a ``cancel`` file (:meth:`cancel`). See ``worker.py`` for the folder protocol.
A job folder with checkpoints and no ``result.json`` (the worker was killed) resumes from its
last checkpoint when started again. A job whose config has ``devices`` > 1 is started under torch's
elastic launcher, one worker process per device (:func:`worker_command`, ``parallel.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from distillery.errors import ConflictError
from distillery.training.local.config import LocalSFTConfig

JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"
PID_FILE = "worker.pid"
CANCEL_FILE = "cancel"
LOG_FILE = "worker.log"

JobStatus = Literal["running", "succeeded", "failed", "cancelled"]
WORKER_MODULE = "distillery.training.local.worker"
LAUNCHER_MODULE = "torch.distributed.run"


def worker_command(job_dir: Path, devices: int = 1) -> list[str]:
    """The worker's command line: the module itself, or ``devices`` data-parallel processes
    under torch's elastic launcher (``--standalone`` picks a free local rendezvous port)."""
    worker = ["-m", WORKER_MODULE, str(job_dir)]
    if devices <= 1:
        return [sys.executable, *worker]
    launcher = ["-m", LAUNCHER_MODULE, "--standalone", f"--nproc_per_node={devices}"]
    return [sys.executable, *launcher, *worker]


def _job_devices(job_dir: Path) -> int:
    """``devices`` of the job's config (1 when ``job.json`` is unreadable: the worker reports)."""
    try:
        job = json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8"))
        return max(1, int((job.get("config") or {}).get("devices") or 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return 1


@dataclass(frozen=True)
class FolderProgress:
    """What a poll of a job folder found.

    ``events`` are those after byte ``offset`` of ``events.jsonl``; pass ``next_offset`` to the
    next poll. A worker that exited without writing ``result.json`` (killed) shows as ``failed``
    with ``error.code == "worker_exited"``; ``resumable`` tells whether starting it again
    continues from a checkpoint.
    """

    status: JobStatus
    events: list[dict[str, Any]] = field(default_factory=list)
    next_offset: int = 0
    result: dict[str, Any] | None = None
    pid: int | None = None
    checkpoint_epochs: list[int] = field(default_factory=list)
    resumable: bool = False


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, ensure_ascii=False, indent=2, default=str))
    os.replace(tmp, path)


def _read_pid(job_dir: Path) -> int | None:
    try:
        return int((job_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def worker_alive(pid: int | None) -> bool:
    """Whether ``pid`` is a live (not zombie) fine-tuning worker."""
    if pid is None or pid <= 0:
        return False
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            return False
        state = stat.rsplit(")", 1)[-1].split()[0]
        return state not in ("Z", "X") and WORKER_MODULE in cmdline
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def read_events(job_dir: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete event lines after byte ``offset``; returns them and the next offset."""
    path = job_dir / EVENTS_FILE
    try:
        with path.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
    except FileNotFoundError:
        return [], offset
    end = chunk.rfind(b"\n") + 1  # a line still being written waits for the next poll
    events = []
    for line in chunk[:end].splitlines():
        if line.strip():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))
    return events, offset + end


def _signal(pid: int, signum: int) -> None:
    """Signal the worker's process group (it leads one), or the process alone if it does not."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, signum)
        else:
            os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _checkpoint_epochs(job_dir: Path) -> list[int]:
    from distillery.training.local.checkpoints import checkpoint_epochs

    return checkpoint_epochs(job_dir)


class LocalTrainingBackend:
    """Local LoRA / full fine-tuning in a subprocess, one folder per job."""

    name: ClassVar[str] = "local"
    hyperparameters: ClassVar[type[LocalSFTConfig]] = LocalSFTConfig

    @staticmethod
    def write_job(
        job_dir: str | Path,
        config: LocalSFTConfig,
        training_file: str | Path,
        validation_file: str | Path | None = None,
    ) -> Path:
        """Create ``job_dir`` and its ``job.json``."""
        path = Path(job_dir)
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(
            path / JOB_FILE,
            {
                "config": config.model_dump(mode="json"),
                "training_file": str(Path(training_file).resolve()),
                "validation_file": str(Path(validation_file).resolve())
                if validation_file
                else None,
            },
        )
        return path

    @staticmethod
    def start(job_dir: str | Path, *, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start (or resume) the worker on ``job_dir``; stdout/stderr go to ``worker.log``."""
        path = Path(job_dir).resolve()
        if (path / RESULT_FILE).exists():
            raise ConflictError(f"job folder {path} already has a result", code="job_finished")
        if worker_alive(_read_pid(path)):
            raise ConflictError(f"a worker is already running on {path}", code="job_running")
        (path / CANCEL_FILE).unlink(missing_ok=True)
        (path / PID_FILE).unlink(missing_ok=True)
        for stale in path.glob("rank-*.error.json"):  # another rank's error of an earlier start
            stale.unlink(missing_ok=True)
        child_env = {**os.environ, **(env or {})}
        child_env.setdefault("HF_HUB_OFFLINE", "1")
        child_env.setdefault("PYTHONUNBUFFERED", "1")
        with (path / LOG_FILE).open("ab") as log:
            return subprocess.Popen(
                worker_command(path, _job_devices(path)),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=child_env,
                start_new_session=True,  # own process group: signals reach only the worker
            )

    @staticmethod
    def poll(job_dir: str | Path, offset: int = 0) -> FolderProgress:
        """Status, new events since ``offset`` and the result once there is one."""
        path = Path(job_dir)
        events, next_offset = read_events(path, offset)
        pid = _read_pid(path)
        epochs = _checkpoint_epochs(path)
        result: dict[str, Any] | None = None
        with contextlib.suppress(OSError, json.JSONDecodeError):
            result = json.loads((path / RESULT_FILE).read_text(encoding="utf-8"))
        if result is not None:
            status: JobStatus = result.get("status", "failed")
            return FolderProgress(status, events, next_offset, result, pid, epochs, False)
        if worker_alive(pid) or not (path / PID_FILE).exists():
            # running, or started but the worker has not written its pid yet
            return FolderProgress("running", events, next_offset, None, pid, epochs, False)
        last = f"epoch {epochs[-1]}" if epochs else "the beginning"
        died = {
            "status": "failed",
            "error": {
                "code": "worker_exited",
                "message": f"the training worker (pid {pid}) exited without a result; "
                f"start the job again to resume from {last}",
            },
            "trained_tokens": 0,
            "adapter_path": None,
            "metrics": {},
        }
        return FolderProgress("failed", events, next_offset, died, pid, epochs, True)

    @staticmethod
    def cancel(
        job_dir: str | Path, pid: int | None = None, *, timeout: float | None = None
    ) -> None:
        """Ask the worker to stop (``cancel`` file + SIGTERM to its process group).

        With ``timeout``, wait that long for ``result.json``; a worker still running then is
        killed and the result written here as ``cancelled``.
        """
        path = Path(job_dir)
        (path / CANCEL_FILE).touch()
        pid = pid if pid is not None else _read_pid(path)
        if pid is None or not worker_alive(pid):
            return
        _signal(pid, signal.SIGTERM)
        if timeout is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (path / RESULT_FILE).exists() or not worker_alive(pid):
                return
            time.sleep(0.1)
        _signal(pid, signal.SIGKILL)
        if not (path / RESULT_FILE).exists():
            write_json_atomic(
                path / RESULT_FILE,
                {
                    "status": "cancelled",
                    "error": None,
                    "trained_tokens": 0,
                    "adapter_path": None,
                    "metrics": {},
                },
            )

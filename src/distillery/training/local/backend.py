"""``LocalBackend``: the local trainer behind the ``TrainingBackend`` seam, one worker subprocess
per job.

The gateway never imports torch. A run is a job folder and the worker subprocess
``python -m distillery.training.local.worker <job_dir>`` (``worker.py`` has the folder protocol).
The class holds both sides of it:

- the folder and its worker, usable without a job service (the tests drive a run with these):
  :meth:`LocalBackend.write_job` writes ``job.json``, :meth:`~LocalBackend.start_worker` starts the
  worker in its own process group, :meth:`~LocalBackend.poll_folder` reads the new events and the
  result, :meth:`~LocalBackend.cancel_worker` cancels with a ``cancel`` file plus SIGTERM. A job
  folder with checkpoints and no ``result.json`` (the worker was killed) resumes from its last
  checkpoint when started again. A job whose config has ``devices`` > 1 is started under torch's
  elastic launcher, one worker process per device (:func:`worker_command`, ``parallel.py``);
- the seam (``validate``, ``start``, ``poll``, ``cancel``), which the job service drives: the handle
  is the job folder; OpenAI's hyperparameters and the ``distillery`` extension fields become a
  ``LocalSFTConfig``; ``"auto"`` is resolved with the trainer's own ``resolve_auto``; trainer
  events become job events (keyed by line number, so re-reading the file after a restart mirrors
  each once) and checkpoint events become checkpoints; a worker that died without a result is
  reported ``lost`` so the job service starts it again, which resumes from its last checkpoint.

``LOCAL_TRAINER`` is the ``local`` trainer kind (``plugins.BUILTIN``): it trains the models of a
``local`` provider, with that provider's paths and chat templates.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import ValidationError

from distillery.errors import ConflictError, InvalidRequestError
from distillery.providers.local_config import LocalProviderConfig
from distillery.settings import ProviderConfig
from distillery.training.base import (
    FineTuneSpec,
    Hyperparameters,
    JobError,
    JobProgress,
    TrainerContext,
    TrainerKind,
    TrainingCheckpoint,
    TrainingEvent,
    level_of,
)
from distillery.training.local.config import LocalSFTConfig
from distillery.wire.params import invalid_request

JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"
PID_FILE = "worker.pid"
CANCEL_FILE = "cancel"
LOG_FILE = "worker.log"

JobStatus = Literal["running", "succeeded", "failed", "cancelled"]
WORKER_MODULE = "distillery.training.local.worker"
LAUNCHER_MODULE = "torch.distributed.run"
# set through OpenAI's own parameters, not through the `distillery` extension
_RESERVED = frozenset(
    {
        "base_model", "base_model_path", "n_epochs", "batch_size", "learning_rate_multiplier",
        "seed", "chat_template",  # the provider's setting: trained as it is served
    }
)  # fmt: skip
_KILL_AFTER_S = 15.0


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


class LocalBackend:
    """LoRA (or full) fine-tuning of a local provider's model, one subprocess per job."""

    name: ClassVar[str] = "local"
    hyperparameters: ClassVar[type[LocalSFTConfig]] = LocalSFTConfig

    def __init__(
        self,
        *,
        defaults: Mapping[str, Any] | None = None,
        concurrency: int = 1,
        provider: LocalProviderConfig | None = None,
        providers: Mapping[str, ProviderConfig] | None = None,
    ) -> None:
        """``provider``: the local provider serving the base models (its ``chat_template``);
        ``providers``: every configured provider (a reinforcement job's judge models)."""
        self.defaults = {k: v for k, v in (defaults or {}).items() if v is not None}
        self.provider = provider
        self.providers = dict(providers or {})
        self.concurrency = concurrency
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._offsets: dict[str, tuple[int, int]] = {}  # handle -> (byte offset, lines read)
        self._cancelled_at: dict[str, float] = {}
        self._lock = threading.Lock()

    # -- configuration ---------------------------------------------------------------------------

    def config(self, spec: FineTuneSpec) -> LocalSFTConfig:
        """The run's config: a ``LocalSFTConfig``, or a ``LocalRFTConfig`` for the
        reinforcement method."""
        method = str(spec.method.get("type") or "supervised")
        if method not in ("supervised", "reinforcement"):
            raise InvalidRequestError(
                f"Method '{method}' is not available for local models; use 'supervised' or "
                "'reinforcement'.",
                param="method.type",
            )
        if method == "supervised" and spec.start_adapter:
            raise InvalidRequestError(
                f"A supervised job trains a base model; {spec.model} is a fine-tuned model. "
                "Fine-tune its base model, or continue from it with the 'reinforcement' method.",
                param="model",
            )
        reserved = sorted(set(spec.extras) & _RESERVED)
        if reserved:
            raise InvalidRequestError(
                f"'distillery.{reserved[0]}' is set through the job's own parameters.",
                param=f"distillery.{reserved[0]}",
            )
        hyper = spec.hyperparameters
        values: dict[str, Any] = {
            **self.defaults,
            **spec.extras,
            "base_model": spec.base_model or spec.model,
            "base_model_path": spec.model_path,
            "chat_template": self.provider.chat_template_for(spec.base_model or spec.model)
            if self.provider
            else None,
            "n_epochs": hyper.n_epochs,
            "batch_size": hyper.batch_size,
            "learning_rate_multiplier": hyper.learning_rate_multiplier,
            "seed": spec.seed,
        }
        try:
            if method == "reinforcement":
                return self._rft_config(spec, values)
            return LocalSFTConfig.model_validate(values)
        except ValidationError as exc:
            top = str(exc.errors()[0].get("loc", ("",))[0])
            prefix = "distillery" if top in spec.extras else None
            raise invalid_request(exc, prefix=prefix) from None

    @staticmethod
    def _rft_config(spec: FineTuneSpec, values: dict[str, Any]) -> LocalSFTConfig:
        from distillery.training.local.rft_config import LocalRFTConfig

        section = spec.method.get("reinforcement") or {}
        hyper = section.get("hyperparameters") or {}
        if int(values.get("devices") or 1) > 1:
            raise InvalidRequestError(
                "Reinforcement fine-tuning runs in one process; set 'distillery.devices' to 1.",
                param="distillery.devices",
            )
        if values.get("method", "lora") != "lora":
            raise InvalidRequestError(
                "Reinforcement fine-tuning trains a LoRA adapter (its KL reference is the "
                "adapter switched off); 'distillery.method' must be 'lora'.",
                param="distillery.method",
            )
        if spec.start_adapter:
            from distillery.serving.adapters import is_full_model

            if is_full_model(spec.start_adapter):
                raise InvalidRequestError(
                    f"{spec.model} was fully fine-tuned; reinforcement fine-tuning continues "
                    "from a LoRA student (its adapter is trained on, on the shared base).",
                    param="model",
                )
        rft = {
            "grader": section.get("grader"),
            "response_format": section.get("response_format"),
            "start_adapter": spec.start_adapter,
            **{
                k: hyper[k]
                for k in ("compute_multiplier", "eval_interval", "eval_samples")
                if k in hyper
            },
        }
        return LocalRFTConfig.model_validate({**values, **rft})

    def validate(self, spec: FineTuneSpec) -> Hyperparameters:
        config = self.config(spec)
        if str(spec.method.get("type")) == "reinforcement":
            return self._validate_rft(spec, config)
        resolved = config.resolve_auto(spec.training_examples)
        return Hyperparameters(
            n_epochs=int(resolved.n_epochs),
            batch_size=int(resolved.batch_size),
            learning_rate_multiplier=float(resolved.learning_rate_multiplier),
        )

    def _validate_rft(self, spec: FineTuneSpec, config: LocalSFTConfig) -> Hyperparameters:
        """The grader builds, the response format parses, and every row is a prompt that
        carries the fields the grader reads: a 400 naming the param before any training."""
        from distillery.evals.graders.registry import build_grader
        from distillery.evals.graders.templating import item_references
        from distillery.serving.constrained import parse_response_format
        from distillery.training.local.rewards import judge_models
        from distillery.training.local.rft_config import LocalRFTConfig
        from distillery.training.local.rft_data import check_prompts

        assert isinstance(config, LocalRFTConfig)
        param = "method.reinforcement.grader"
        build_grader(config.grader, param=param)
        for model in judge_models(config.grader):
            if not any(model in c.served_models() for c in self.providers.values()):
                raise InvalidRequestError(
                    f"The grader's judge model {model} is not served by any configured provider.",
                    param=param,
                    code="model_not_found",
                )
        try:
            parse_response_format(config.response_format)
        except InvalidRequestError as exc:
            where = exc.param or "response_format"
            raise InvalidRequestError(
                exc.message, param=f"method.reinforcement.{where}", code=exc.code
            ) from None
        references = item_references(config.grader)
        n_prompts = check_prompts(spec.training_path, references)
        if spec.validation_path is not None:
            check_prompts(
                spec.validation_path, references, what="validation file", param="validation_file"
            )
        resolved = config.resolve_rft(n_prompts)
        return Hyperparameters(
            n_epochs=int(resolved.n_epochs),
            batch_size=int(resolved.batch_size),
            learning_rate_multiplier=float(resolved.learning_rate_multiplier),
        )

    # -- runs ------------------------------------------------------------------------------------

    def start(self, spec: FineTuneSpec, *, resume: str | None = None) -> str:
        job_dir = Path(resume) if resume else spec.job_dir
        handle = str(job_dir)
        if worker_alive(_read_pid(job_dir)) or (job_dir / RESULT_FILE).exists():
            return handle  # still running (re-attach), or finished: poll reports it
        if not (job_dir / JOB_FILE).exists():
            # "auto" stays: the worker resolves it from the tokenized data (its DataShape)
            self.write_job(job_dir, self.config(spec), spec.training_path, spec.validation_path)
        try:
            proc = self.start_worker(job_dir, env=self._judge_env(job_dir))
        except ConflictError:
            return handle
        with self._lock:
            self._procs[handle] = proc
        return handle

    def _judge_env(self, job_dir: Path) -> dict[str, str] | None:
        """The providers a reinforcement job's model graders call, for its training process.

        They travel in the process's environment (``JUDGE_PROVIDERS_ENV``), never in a file:
        a provider's table may hold secret headers."""
        from distillery.training.local.rewards import JUDGE_PROVIDERS_ENV, judged_graders

        try:
            job = json.loads((job_dir / JOB_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        grader = (job.get("config") or {}).get("grader")
        if job.get("method") != "reinforcement" or not judged_graders(grader):
            return None
        tables = {name: cfg.model_dump(mode="json") for name, cfg in self.providers.items()}
        return {JUDGE_PROVIDERS_ENV: json.dumps(tables)}

    def poll(self, handle: str) -> JobProgress:
        job_dir = Path(handle)
        with self._lock:
            offset, lines = self._offsets.get(handle, (0, 0))
            found = self.poll_folder(job_dir, offset)
            self._offsets[handle] = (found.next_offset, lines + len(found.events))
            proc = self._procs.get(handle)
            if proc is not None and proc.poll() is not None:
                self._procs.pop(handle, None)  # reaped
        events, checkpoints, step, total = self._convert(found.events, lines)
        result = found.result or {}
        status = found.status
        if status == "running":
            self._kill_if_stuck(handle)
            announced = next(
                (
                    e["data"]["hyperparameters"]
                    for e in found.events
                    if isinstance(e.get("data"), dict)
                    and isinstance(e["data"].get("hyperparameters"), dict)
                ),
                None,
            )
            return JobProgress(
                status="running", events=events, checkpoints=checkpoints, step=step,
                total_steps=total,
                hyperparameters=Hyperparameters(**announced) if announced else None,
            )  # fmt: skip
        hyper = result.get("hyperparameters")
        common: dict[str, Any] = {
            "events": events,
            "checkpoints": checkpoints,
            "step": step,
            "total_steps": total,
            "trained_tokens": result.get("trained_tokens"),
            "metrics": result.get("metrics") or {},
            "hyperparameters": Hyperparameters(**hyper) if isinstance(hyper, dict) else None,
        }
        if status == "succeeded":
            return JobProgress(
                status="succeeded", adapter_path=result.get("adapter_path"), **common
            )
        if status == "cancelled" or handle in self._cancelled_at:
            return JobProgress(status="cancelled", **common)
        if found.resumable:
            return JobProgress(status="lost", **common)
        err = result.get("error") or {}
        error = JobError(
            code=str(err.get("code") or "training_error"),
            message=str(err.get("message") or "the training failed"),
        )
        return JobProgress(status="failed", error=error, **common)

    def cancel(self, handle: str) -> None:
        self._cancelled_at.setdefault(handle, time.monotonic())
        self.cancel_worker(Path(handle))

    def _kill_if_stuck(self, handle: str) -> None:
        asked = self._cancelled_at.get(handle)
        if asked is not None and time.monotonic() - asked > _KILL_AFTER_S:
            self.cancel_worker(Path(handle), timeout=1.0)

    # -- events ----------------------------------------------------------------------------------

    @staticmethod
    def _convert(
        raw: list[dict[str, Any]], first_line: int
    ) -> tuple[list[TrainingEvent], list[TrainingCheckpoint], int | None, int | None]:
        events: list[TrainingEvent] = []
        checkpoints: list[TrainingCheckpoint] = []
        step = total = None
        for i, e in enumerate(raw):
            data = e.get("data") if isinstance(e.get("data"), dict) else None
            created = e.get("created_at")
            created_at = int(created) if isinstance(created, int | float) else None
            if e.get("type") == "checkpoint" and data is not None:
                metrics = {
                    k: float(v)
                    for k, v in (data.get("metrics") or {}).items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                checkpoints.append(
                    TrainingCheckpoint(
                        step=int(data.get("step") or 0),
                        epoch=data.get("epoch"),
                        metrics=metrics,
                        adapter_path=str(data["path"]) if data.get("path") else None,
                        created_at=created_at,
                    )
                )
                continue
            is_metrics = e.get("type") == "metrics"
            if is_metrics and data is not None:
                step = data.get("step", step)
                total = data.get("total_steps", total)
            events.append(
                TrainingEvent(
                    key=f"line:{first_line + i}",
                    message=str(e.get("message") or ""),
                    level=level_of(e.get("level")),
                    type="metrics" if is_metrics else "message",
                    data=data,
                    created_at=created_at,
                )
            )
        return events, checkpoints, step, total

    # -- the job folder and its worker -----------------------------------------------------------

    @staticmethod
    def write_job(
        job_dir: str | Path,
        config: LocalSFTConfig,
        training_file: str | Path,
        validation_file: str | Path | None = None,
    ) -> Path:
        """Create ``job_dir`` and its ``job.json`` (a ``LocalRFTConfig`` makes it a
        reinforcement run)."""
        from distillery.training.local.rft_config import LocalRFTConfig

        path = Path(job_dir)
        path.mkdir(parents=True, exist_ok=True)
        method = "reinforcement" if isinstance(config, LocalRFTConfig) else "supervised"
        write_json_atomic(
            path / JOB_FILE,
            {
                "method": method,
                "config": config.model_dump(mode="json"),
                "training_file": str(Path(training_file).resolve()),
                "validation_file": str(Path(validation_file).resolve())
                if validation_file
                else None,
            },
        )
        return path

    @staticmethod
    def start_worker(
        job_dir: str | Path, *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
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
    def poll_folder(job_dir: str | Path, offset: int = 0) -> FolderProgress:
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
    def cancel_worker(
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


def _trains(config: ProviderConfig) -> bool:
    """Models whose weights are here: a ``local`` provider's (embedded or at a path)."""
    return isinstance(config, LocalProviderConfig)


def _build(context: TrainerContext) -> LocalBackend:
    config = context.provider_config
    assert isinstance(config, LocalProviderConfig)
    training = context.training
    defaults = {"device": training.device, "threads": training.threads, "devices": training.devices}
    return LocalBackend(defaults=defaults, provider=config, providers=context.providers)


LOCAL_TRAINER = TrainerKind(
    kind="local",
    trains=_trains,
    build=_build,
    summary="LoRA or full fine-tuning in a subprocess on this machine (transformers + PEFT), "
    "checkpointed and resumable.",
)

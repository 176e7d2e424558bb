"""Training through a provider's fine-tuning API (OpenAI, or Azure OpenAI), mirrored by polling.

``start`` uploads the training (and validation) file to the provider (``POST {base}/files``,
multipart, purpose ``fine-tune``) and creates the job (``POST {base}/fine_tuning/jobs``) with the
client's method, hyperparameters, suffix and seed; the remote job id is the handle. ``poll`` reads
the remote job, its new events and checkpoints; at the end the provider's ``fine_tuned_model`` is
the result, registered by the job service under this provider so that the gateway serves it through
the provider. The provider's key is sent in a header and is never logged or stored.

Before creating a remote job, ``start`` looks for one it created earlier for the same distillery
job (remote ``metadata.distillery_job``), so a worker that crashed between the two calls does not
start (and pay for) a second run.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, ClassVar

import httpx

from distillery.errors import InvalidRequestError, UpstreamError
from distillery.providers.openai_compatible import AzureProviderConfig, OpenAIProviderConfig
from distillery.settings import ProviderConfig
from distillery.training.base import (
    FineTuneSpec,
    Hyperparameters,
    JobError,
    JobProgress,
    RunStatus,
    TrainerContext,
    TrainerKind,
    TrainingCheckpoint,
    TrainingEvent,
    level_of,
)

log = logging.getLogger("distillery.training.openai")

_STATUS: dict[str, RunStatus] = {
    "validating_files": "queued",
    "queued": "queued",
    "running": "running",
    "succeeded": "succeeded",
    "failed": "failed",
    "cancelled": "cancelled",
}
_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
_PAGE = 100


def _hyper(value: Any) -> Hyperparameters | None:
    if not isinstance(value, dict):
        return None
    return Hyperparameters(
        n_epochs=value.get("n_epochs", "auto"),
        batch_size=value.get("batch_size", "auto"),
        learning_rate_multiplier=value.get("learning_rate_multiplier", "auto"),
    )


class OpenAITrainingBackend:
    name: ClassVar[str] = "openai"

    def __init__(
        self,
        provider: str,
        config: OpenAIProviderConfig | AzureProviderConfig,
        home: Path | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.config = config
        self.concurrency = 32  # remote runs cost this process only a poll each
        headers = dict(config.headers)
        key = config.api_key()
        if isinstance(config, AzureProviderConfig):
            self.base = config.endpoint.rstrip("/") + "/openai"
            self.params = {"api-version": config.api_version or "2024-10-21"}
            if key:
                headers["api-key"] = key
        else:
            self.base = config.base_url.rstrip("/")
            self.params = {}
            if key:
                headers["authorization"] = f"Bearer {key}"
        self._client = httpx.Client(headers=headers, timeout=_TIMEOUT, transport=transport)
        self._seen_events: dict[str, set[str]] = {}
        self._seen_checkpoints: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    # -- HTTP ------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        params = {**self.params, **kwargs.pop("params", {})}
        url = f"{self.base}/{path.lstrip('/')}"
        try:
            response = self._client.request(method, url, params=params, **kwargs)
        except httpx.HTTPError as exc:
            raise UpstreamError(
                f"provider {self.provider!r} fine-tuning API is unreachable: {type(exc).__name__}"
            ) from None
        if response.status_code >= 400:
            message = f"HTTP {response.status_code}"
            try:
                err = response.json().get("error")
                if isinstance(err, dict) and err.get("message"):
                    message = f"{message}: {err['message']}"
            except ValueError:
                pass
            raise UpstreamError(
                f"provider {self.provider!r} fine-tuning API answered {message} ({method} {path})",
            )
        data = response.json()
        if not isinstance(data, dict):
            raise UpstreamError(f"provider {self.provider!r} answered a non-object")
        return data

    def _upload(self, path: Path, name: str) -> str:
        with path.open("rb") as fh:
            data = self._request(
                "POST",
                "files",
                files={"file": (name, fh, "application/jsonl")},
                data={"purpose": "fine-tune"},
            )
        return str(data["id"])

    # -- the seam --------------------------------------------------------------------------------

    def validate(self, spec: FineTuneSpec) -> Hyperparameters:
        if spec.extras:
            first = sorted(spec.extras)[0]
            raise InvalidRequestError(
                f"'distillery.{first}' applies to local training only; model {spec.model} trains "
                f"through provider {self.provider!r}.",
                param=f"distillery.{first}",
            )
        return spec.hyperparameters  # "auto" stays "auto" until the provider reports its values

    def _existing(self, job_id: str) -> str | None:
        data = self._request(
            "GET", "fine_tuning/jobs", params={"metadata[distillery_job]": job_id, "limit": 1}
        )
        for job in data.get("data") or []:
            if (job.get("metadata") or {}).get("distillery_job") == job_id:
                return str(job["id"])
        return None

    def start(self, spec: FineTuneSpec, *, resume: str | None = None) -> str:
        if resume:
            return resume
        existing = self._existing(spec.job_id)
        if existing is not None:
            return existing
        body: dict[str, Any] = {
            "model": spec.model,
            "training_file": self._upload(spec.training_path, f"{spec.job_id}-train.jsonl"),
            "seed": spec.seed,
            "metadata": {"distillery_job": spec.job_id},
        }
        if spec.validation_path is not None:
            body["validation_file"] = self._upload(
                spec.validation_path, f"{spec.job_id}-validation.jsonl"
            )
        if spec.suffix:
            body["suffix"] = spec.suffix
        method_type = str(spec.method.get("type") or "supervised")
        section = dict(spec.method.get(method_type) or {})
        hyper = {**(section.get("hyperparameters") or {}), **spec.hyperparameters.to_dict()}
        section["hyperparameters"] = hyper
        body["method"] = {"type": method_type, method_type: section}
        data = self._request("POST", "fine_tuning/jobs", json=body)
        log.info("job %s: created remote job %s at %s", spec.job_id, data.get("id"), self.provider)
        return str(data["id"])

    def _new_events(self, handle: str) -> list[TrainingEvent]:
        seen = self._seen_events.setdefault(handle, set())
        fresh: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": _PAGE}
            if after:
                params["after"] = after
            page = self._request("GET", f"fine_tuning/jobs/{handle}/events", params=params)
            items = page.get("data") or []
            new = [e for e in items if e.get("id") not in seen]
            fresh.extend(new)
            if len(new) < len(items) or not page.get("has_more") or not items:
                break
            after = items[-1]["id"]
        fresh.reverse()  # the API lists newest first
        fresh.sort(key=lambda e: e.get("created_at") or 0)
        out = []
        for e in fresh:
            seen.add(e["id"])
            out.append(
                TrainingEvent(
                    key=str(e["id"]),
                    message=str(e.get("message") or ""),
                    level=level_of(e.get("level")),
                    type="metrics" if e.get("type") == "metrics" else "message",
                    data=e.get("data") if isinstance(e.get("data"), dict) else None,
                    created_at=e.get("created_at"),
                )
            )
        return out

    def _new_checkpoints(self, handle: str) -> list[TrainingCheckpoint]:
        seen = self._seen_checkpoints.setdefault(handle, set())
        page = self._request(
            "GET", f"fine_tuning/jobs/{handle}/checkpoints", params={"limit": _PAGE}
        )
        out = []
        for c in reversed(page.get("data") or []):
            if c.get("id") in seen or not c.get("fine_tuned_model_checkpoint"):
                continue
            seen.add(c["id"])
            metrics = {
                k: float(v)
                for k, v in (c.get("metrics") or {}).items()
                if isinstance(v, int | float)
            }
            out.append(
                TrainingCheckpoint(
                    step=int(c.get("step_number") or 0),
                    metrics=metrics,
                    remote_model=str(c["fine_tuned_model_checkpoint"]),
                    created_at=c.get("created_at"),
                )
            )
        return out

    def poll(self, handle: str) -> JobProgress:
        with self._lock:
            job = self._request("GET", f"fine_tuning/jobs/{handle}")
            status = _STATUS.get(str(job.get("status")), "running")
            events = self._new_events(handle)
            checkpoints = self._new_checkpoints(handle)
        step = total = None
        for event in events:
            if event.type == "metrics" and event.data:
                step = event.data.get("step", step)
                total = event.data.get("total_steps", total)
        error = None
        if status == "failed":
            err = job.get("error") or {}
            error = JobError(
                code=str(err.get("code") or "provider_failed"),
                message=str(err.get("message") or f"the job failed at {self.provider}"),
                param=err.get("param"),
            )
        return JobProgress(
            status=status,
            events=events,
            checkpoints=checkpoints,
            step=int(step) if isinstance(step, int | float) else None,
            total_steps=int(total) if isinstance(total, int | float) else None,
            trained_tokens=job.get("trained_tokens"),
            hyperparameters=_hyper(job.get("hyperparameters")),
            remote_model=job.get("fine_tuned_model") if status == "succeeded" else None,
            error=error,
            estimated_finish=job.get("estimated_finish"),
        )

    def cancel(self, handle: str) -> None:
        self._request("POST", f"fine_tuning/jobs/{handle}/cancel")

    def close(self) -> None:
        self._client.close()


def _trains(config: ProviderConfig) -> bool:
    """OpenAI's and Azure's own fine-tuning APIs (not a vllm server's, which has none)."""
    return type(config) in (OpenAIProviderConfig, AzureProviderConfig)


def _build(context: TrainerContext) -> OpenAITrainingBackend:
    config = context.provider_config
    assert isinstance(config, OpenAIProviderConfig | AzureProviderConfig)
    return OpenAITrainingBackend(context.provider, config, context.home)


OPENAI_TRAINER = TrainerKind(
    kind="openai",
    trains=_trains,
    build=_build,
    summary="The provider's own fine-tuning API (OpenAI, Azure OpenAI): files uploaded, the job "
    "mirrored here.",
)

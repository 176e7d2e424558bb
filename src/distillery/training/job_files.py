"""The files of a fine-tuning job: its inputs, checked twice, and its result file.

At create the training (and validation) file must exist in the Files API with purpose
``fine-tune`` and have content (a 400 naming the param otherwise); the examples are counted for
the backend. A worker then checks each file (``validating_files``): for ``supervised`` jobs every
line with the fine-tuning JSONL rules and the minimum number of examples (``MIN_EXAMPLES`` for
training, 1 for validation); a file that fails gives the ``JobError`` the job fails with. On
success the job's ``result_files`` is OpenAI's ``step_metrics.csv`` (purpose
``fine-tune-results``): step, training loss and accuracy, validation loss and accuracy of each
metrics event; a local run that chose its checkpoint on a validation split adds
``checkpoint_selection.csv``: the task's measure per epoch (epoch 0: before training) and which
epoch was kept.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

from distillery.errors import InvalidRequestError, NotFoundError
from distillery.store.jobs import JobsRepo
from distillery.training.base import JobError
from distillery.training.inputs import FileSource, InputFile
from distillery.wire.fine_tuning_jsonl import validate_jsonl

log = logging.getLogger("distillery.training")

FINE_TUNE_PURPOSE = "fine-tune"


def input_file(files: FileSource, file_id: str, param: str) -> InputFile:
    """The ``fine-tune`` file ``file_id`` (request param ``param``), or a 400 saying why not."""
    try:
        found = files.get(file_id)
    except NotFoundError:
        raise InvalidRequestError(
            f"invalid {param}: {file_id} (no such file)", param=param, code="invalid_file"
        ) from None
    if found.purpose != FINE_TUNE_PURPOSE:
        raise InvalidRequestError(
            f"invalid {param}: {file_id} has purpose '{found.purpose}'; fine-tuning files "
            f"must be uploaded with purpose '{FINE_TUNE_PURPOSE}'.",
            param=param,
            code="invalid_file_purpose",
        )
    if not found.path.is_file():
        raise InvalidRequestError(
            f"invalid {param}: the content of {file_id} is missing.", param=param
        )
    return found


def count_examples(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return 0


def check_file(path: Path, minimum: int, param: str, *, deep: bool) -> JobError | None:
    """Why the job cannot train on ``path`` (None: it can); ``deep``: check every line."""
    label = param.replace("_", " ")
    try:
        with path.open("rb") as fh:
            if not deep:
                return None
            result = validate_jsonl(fh, min_examples=minimum)
    except OSError as exc:
        return JobError("invalid_file", f"The {label} cannot be read: {exc}", param)
    if not result.ok:
        return JobError("invalid_file_format", f"Invalid {label}: {result.error_message()}", param)
    if result.n_examples < minimum:
        return JobError(
            "invalid_n_examples",
            f"The {label} has {result.n_examples} example(s), but must have at least {minimum}.",
            param,
        )
    return None


def result_file(jobs: JobsRepo, files: FileSource, job_id: str) -> list[str]:
    """OpenAI's result file: a CSV of the metrics per step (purpose fine-tune-results)."""
    data = [e.body.get("data") or {} for e in jobs.all_events(job_id)]
    if any("reward_mean" in d for d in data):
        return _store_results(files, job_id, [("step_metrics.csv", reward_csv(data))])
    rows = [d for d in data if "step" in d and "train_loss" in d]
    if not rows:
        return []
    out = io.StringIO()
    cols = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    writer = csv.writer(out)
    writer.writerow(cols)
    for d in rows:
        acc = d.get("train_mean_token_accuracy", d.get("train_accuracy"))
        writer.writerow(
            [
                d.get("step"),
                d.get("train_loss"),
                acc,
                d.get("valid_loss"),
                d.get("valid_mean_token_accuracy"),
            ]
        )
    outputs = [("step_metrics.csv", out.getvalue())]
    selection = next((d["selection"] for d in data if isinstance(d.get("selection"), dict)), None)
    if selection is not None:
        outputs.append(("checkpoint_selection.csv", selection_csv(selection)))
    return _store_results(files, job_id, outputs)


REWARD_COLUMNS = ("step", "reward_mean", "reward_std", "kl", "valid_reward_mean")


def reward_csv(data: list[dict[str, Any]]) -> str:
    """A reinforcement job's metrics per step: the rewards, the KL, the validation reward."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(REWARD_COLUMNS)
    for d in data:
        if d.get("step") and "reward_mean" in d:
            writer.writerow([d.get(c) for c in REWARD_COLUMNS])
    return out.getvalue()


def _store_results(files: FileSource, job_id: str, outputs: list[tuple[str, str]]) -> list[str]:
    ids: list[str] = []
    for name, text in outputs:
        try:
            ids.append(files.add(text.encode(), filename=name, purpose="fine-tune-results").id)
        except Exception:
            log.exception("could not write the result file %s of %s", name, job_id)
    return ids


def selection_csv(selection: dict[str, Any]) -> str:
    """The checkpoint choice as CSV: epoch, the measure, validation loss, kept (1 or 0)."""
    metric = str((selection.get("measure") or {}).get("metric") or "score")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["epoch", metric, "valid_loss", "kept"])
    for point in selection.get("curve") or []:
        epoch = point.get("epoch")
        writer.writerow(
            [
                epoch,
                point.get("score"),
                point.get("valid_loss"),
                int(epoch == selection.get("chosen_epoch")),
            ]
        )
    return out.getvalue()

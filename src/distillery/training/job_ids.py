"""The ids of fine-tuning jobs' artefacts and of the workers that run them.

- ``stable_id``: an id derived from its parts (base62 of a SHA-256), so that mirroring the same
  backend output twice (a resumed worker replays events and checkpoints) stores it once;
- ``fine_tuned_model_id``: ``ft:<base>:<suffix>:<short-id>`` as OpenAI names fine-tuned models,
  ``<short-id>`` being the first 8 characters of the job id after its prefix; a checkpoint's model
  is ``<model id>:ckpt-step-<N>``;
- ``new_worker_id``: ``<kind>-<host>-<pid>-<random>``, unique per process start.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import string

from distillery import ids

_B62 = string.digits + string.ascii_letters


def stable_id(prefix: str, *parts: str, length: int = 24) -> str:
    """An id derived from ``parts``: mirroring the same backend output twice gives the same id."""
    n = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest(), "big")
    chars = []
    for _ in range(length):
        n, r = divmod(n, 62)
        chars.append(_B62[r])
    return prefix + "".join(chars)


def short_id(job_id: str) -> str:
    return job_id.removeprefix(ids.FINE_TUNING_JOB)[:8]


def fine_tuned_model_id(base: str, suffix: str | None, job_id: str) -> str:
    return f"ft:{base}:{suffix or ''}:{short_id(job_id)}"


def checkpoint_model_id(model_id: str, step: int) -> str:
    return f"{model_id}:ckpt-step-{step}"


def new_worker_id(kind: str = "worker") -> str:
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"

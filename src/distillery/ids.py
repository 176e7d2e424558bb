"""Identifiers: OpenAI's prefixes where OpenAI defines them, short ones of our own elsewhere.

Ids are random (not guessable); ordering is by the store's sequence column, never by id.
"""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """``prefix`` + ``-``/``_`` separator as OpenAI uses it + random base62 characters."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(length))
    return f"{prefix}{body}"


# OpenAI's prefixes
CHAT_COMPLETION = "chatcmpl-"
FILE = "file-"
FINE_TUNING_JOB = "ftjob-"
FINE_TUNING_EVENT = "ftevent-"
FINE_TUNING_CHECKPOINT = "ftckpt-"
EVAL = "eval_"
EVAL_RUN = "evalrun_"
EVAL_OUTPUT_ITEM = "outputitem_"
# distillery's own
API_KEY = "key_"
DATASET = "ds_"
DATASET_VERSION = "dsv_"
ANNOTATION_QUEUE = "aq_"
ANNOTATION_ITEM = "aqi_"
DISTILLATION = "distill_"

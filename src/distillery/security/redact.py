"""Keep secrets out of logs: a logging filter that masks bearer tokens, API keys and the
configured provider keys, in messages, their arguments and the tracebacks of exceptions.

``install(secrets)`` attaches the filter to every handler configured at that moment (the root
logger's and each named logger's); the server calls it once logging is set up (uvicorn configures
its own handlers after the services are built), and again is harmless.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"(?i)(api[-_]?key[\"']?\s*[:=]\s*[\"']?)[A-Za-z0-9._\-]{8,}"),
    re.compile(r"()\b(?:sk|dk)-[A-Za-z0-9_\-]{8,}"),
]
MASK = "***"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the exact ``secrets`` and anything shaped like a token masked."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """Masks secrets in a record before any handler formats it: the message, its arguments
    (exceptions and other objects are formatted as text first; numbers are kept for ``%d``),
    and the exception's traceback (formatted once into ``exc_text``)."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def _clean(self, value: object) -> object:
        if isinstance(value, bool | int | float) or value is None:
            return value
        return redact(value if isinstance(value, str) else str(value), self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg, self.secrets)
        else:
            record.msg = self._clean(record.msg)
        if isinstance(record.args, dict):
            record.args = {k: self._clean(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(self._clean(a) for a in record.args)
        if record.exc_info and record.exc_info[1] is not None and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, self.secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, self.secrets)
        return True


_lock = threading.Lock()


def install(secrets: Iterable[str] = ()) -> int:
    """Attach one ``RedactingFilter`` (with ``secrets``) to every configured handler that has
    none; returns how many handlers carry one."""
    handlers: list[logging.Handler] = list(logging.getLogger().handlers)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if isinstance(logger, logging.Logger):
            handlers += logger.handlers
    secrets = tuple(secrets)
    carrying = 0
    with _lock:
        for handler in dict.fromkeys(handlers):
            mine = [f for f in handler.filters if isinstance(f, RedactingFilter)]
            if not mine:
                handler.addFilter(RedactingFilter(secrets))
            else:
                mine[0].secrets = tuple(dict.fromkeys([*mine[0].secrets, *secrets]))
            carrying += 1
    return carrying

"""Group commit: many concurrent requests, one transaction per batch, each ack after commit.

Requests ``await writer.write(record)``; a dedicated thread drains the queue, inserts everything
waiting in one transaction, then resolves each request's future. A response is sent only after
its record is committed, so an acknowledged exchange survives ``kill -9``, while throughput stays
high because the fsync cost is shared by the whole batch.

When the database cannot be reached (it is down, the disk is full...), the record goes to an
append-only spool file (fsynced) and the request still succeeds: capture never turns a successful
upstream answer into a failed request. ``replay_spool`` inserts the spooled records at start and,
through ``maintain`` (called every second by the server), as soon as the database is back.

No single record can stop the writer: a record the database refuses (``\\u0000`` in a text column,
nesting orjson cannot encode, an integer column overflowing) is stored in the form
``capture.storable`` gives it; one that still cannot be stored is refused (400) before it is
acknowledged, and on replay it moves to a dead-letter file (``dead-letter.jsonl`` beside the
spool) with a log line. ``supervise`` restarts a writer thread that died or is stuck on one batch
(the stuck batch is spooled, so its requests are answered); ``/health`` fails while it finds one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from distillery import ids
from distillery.capture.redaction import Redactor
from distillery.capture.storable import storable
from distillery.errors import InvalidRequestError, ServiceUnavailableError
from distillery.store.records import NewCompletion

log = logging.getLogger("distillery.capture")

_STOP = object()
_Item = tuple[NewCompletion, asyncio.AbstractEventLoop, "asyncio.Future[str]"]
_Outcome = str | BaseException


def is_outage(exc: BaseException) -> bool:
    """The database could not be reached (worth spooling and retrying), not a refused record."""
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError | ConnectionError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def _describe(exc: BaseException) -> str:
    """A short reason (SQLAlchemy's own text repeats the statement and every parameter)."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0][:200] if text else ''}"


class CompletionWriter:
    def __init__(
        self,
        insert_many: Callable[[Sequence[NewCompletion]], None],
        *,
        spool: Path | None = None,
        max_batch: int = 512,
        stuck_after_s: float = 30.0,
        exists: Callable[[str], bool] | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._insert_many = insert_many
        self.redactor = redactor
        self._exists = exists
        self._max_batch = max_batch
        self.stuck_after_s = stuck_after_s
        self.spool = spool
        self._spool_lock = threading.Lock()
        self._replay_lock = threading.Lock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._lock = threading.Lock()  # thread generation, busy state, claimed ids
        self._generation = 0
        self._busy_since: float | None = None
        self._current: list[_Item] | None = None
        self._claimed: set[str] = set()
        self._closed = False
        self.restarts = 0
        self.last_problem: str | None = None
        self._thread = self._start()

    # --- requests -------------------------------------------------------------------------------
    async def write(self, record: NewCompletion, *, claimed: bool = False) -> str:
        """Commit ``record``; returns its id (a fresh one if an upstream reused a stored id).

        ``claimed``: the id came from ``claim`` (a stream already showed it to the client).
        """
        if not claimed and record.id in self._claimed:  # a stream in flight showed this id
            record = replace(record, id=ids.new_id(ids.CHAT_COMPLETION))
        if not self._thread.is_alive():
            self.supervise()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        try:
            redactor = self.redactor
            if redactor is not None and redactor.applies(record.metadata):
                # before anything is queued: the spool and dead-letter files never see PII.
                # Names (an NER model, tens of ms) run on a thread; patterns are quick
                record = (
                    await asyncio.to_thread(redactor.redact, record)
                    if redactor.config.names
                    else redactor.redact(record)
                )
            self._queue.put((record, loop, future))
            return await future
        finally:
            if claimed:
                with self._lock:
                    self._claimed.discard(record.id)

    def claim(self, completion_id: object) -> str:
        """The id to store a stream under: the upstream's, unless stored or in flight already.

        Blocking (one primary-key read): call it on a thread. The caller passes the result to
        ``write(..., claimed=True)``, which releases it.
        """
        if isinstance(completion_id, str) and 0 < len(completion_id) <= 64:
            with self._lock:
                free = completion_id not in self._claimed
                if free:
                    self._claimed.add(completion_id)
            if free:
                try:
                    taken = self._exists is not None and self._exists(completion_id)
                except Exception:  # the database is unreachable: keep the id (insert decides)
                    taken = False
                if not taken:
                    return completion_id
                with self._lock:
                    self._claimed.discard(completion_id)
        return ids.new_id(ids.CHAT_COMPLETION)

    # --- the writer thread ----------------------------------------------------------------------
    def _start(self) -> threading.Thread:
        thread = threading.Thread(
            target=self._run, args=(self._generation,), name="completion-writer", daemon=True
        )
        thread.start()
        return thread

    def _run(self, generation: int) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch: list[_Item] = [first]  # type: ignore[list-item]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)  # type: ignore[arg-type]
            with self._lock:
                if generation != self._generation:  # replaced meanwhile: hand the batch over
                    for item in batch:
                        self._queue.put(item)
                    return
                self._busy_since = time.monotonic()
                self._current = batch
            try:
                self._commit(batch, generation)
            except BaseException as exc:  # never leave a request waiting
                failure = ServiceUnavailableError(f"The capture writer failed: {_describe(exc)}")
                for _, loop, future in batch:
                    _resolve_threadsafe(loop, future, failure)
                if not isinstance(exc, Exception):
                    raise
                log.exception("capture writer: a batch failed")
            finally:
                with self._lock:
                    if self._current is batch:
                        self._busy_since = None
                        self._current = None
            if stop:
                return
            with self._lock:
                if generation != self._generation:
                    return

    def _commit(self, batch: list[_Item], generation: int) -> None:
        records = [record for record, _, _ in batch]
        outcomes: Sequence[_Outcome]
        try:
            self._insert_many(records)
        except Exception as exc:
            if generation != self._generation:  # taken over as stuck: the spool has this batch
                log.info("a replaced writer's batch failed (%s); it was spooled", _describe(exc))
                return
            if is_outage(exc):
                outcomes = self._to_spool(records, exc)
            else:  # one by one, so one bad record cannot fail the others
                log.warning("batch insert failed (%s); retrying one by one", _describe(exc))
                outcomes = [self._insert_one(record) for record in records]
        else:
            outcomes = [record.id for record in records]
        for (_, loop, future), outcome in zip(batch, outcomes, strict=True):
            _resolve_threadsafe(loop, future, outcome)

    def _insert_one(self, record: NewCompletion) -> _Outcome:
        outcome = self._attempt(record)
        if not isinstance(outcome, _Refused):
            return outcome
        fixed = self._attempt(storable(record))
        if isinstance(fixed, _Refused):
            log.error("completion %s cannot be stored: %s", record.id, _describe(fixed.error))
            return InvalidRequestError(
                f"This exchange cannot be stored ({_describe(outcome.error)}); it was not recorded."
            )
        log.warning("completion %s stored normalised (%s)", record.id, _describe(outcome.error))
        return fixed

    def _attempt(
        self, record: NewCompletion, *, new_id_on_clash: bool = True
    ) -> _Outcome | _Refused:
        try:
            self._insert_many([record])
            return record.id
        except IntegrityError as exc:  # the id is taken: store under a fresh one
            if not new_id_on_clash:
                return _Refused(exc)
            fresh = replace(record, id=ids.new_id(ids.CHAT_COMPLETION))
            return self._attempt(fresh, new_id_on_clash=False)
        except Exception as exc:
            return self._to_spool([record], exc)[0] if is_outage(exc) else _Refused(exc)

    # --- the spool ------------------------------------------------------------------------------
    def _to_spool(self, records: Sequence[NewCompletion], error: BaseException) -> list[_Outcome]:
        """Append ``records`` to the spool with one fsync; their outcomes (ids or errors)."""
        unavailable = ServiceUnavailableError(
            f"The database is unavailable ({_describe(error)}) and the spool too."
        )
        if self.spool is None:
            return [unavailable] * len(records)
        lines = [_spool_line(record) for record in records]
        try:
            with self._spool_lock:
                _append(self.spool, lines)
        except Exception as exc:
            log.error("cannot spool completions (%s) after a database error (%s)", exc, error)
            return [unavailable] * len(records)
        log.warning(
            "database unavailable (%s): %d completion(s) spooled", _describe(error), len(records)
        )
        return [record.id for record in records]

    @property
    def _replaying(self) -> Path:
        assert self.spool is not None
        return self.spool.with_name(self.spool.stem + ".replaying" + self.spool.suffix)

    @property
    def dead_letter(self) -> Path | None:
        """Where records that fail on replay go (one JSON line each, with the reason)."""
        return None if self.spool is None else self.spool.with_name("dead-letter.jsonl")

    def spooled(self) -> int:
        """How many records wait in the spool."""
        if self.spool is None:
            return 0
        with self._spool_lock:
            return _count_lines(self.spool) + _count_lines(self._replaying)

    def dead_letters(self) -> int:
        """How many records were moved to the dead-letter file."""
        return 0 if self.dead_letter is None else _count_lines(self.dead_letter)

    def replay_spool(self) -> int:
        """Insert the spooled records; returns how many were stored.

        Ids already stored are skipped (an interrupted replay, or a stuck batch that committed
        after all). While the database is unreachable the records stay spooled; a record it
        refuses even normalised goes to the dead-letter file. Never raises for a record.
        """
        if self.spool is None:
            return 0
        with self._replay_lock:
            with self._spool_lock:  # new records spool to a fresh file while this one replays
                if self.spool.exists():
                    if self._replaying.exists():  # an earlier replay was interrupted
                        _append(self._replaying, self.spool.read_bytes().splitlines())
                        self.spool.unlink()
                    else:
                        os.replace(self.spool, self._replaying)
            if not self._replaying.exists():
                return 0
            lines = [line for line in self._replaying.read_bytes().splitlines() if line.strip()]
            replayed = dead = 0
            kept: list[bytes] = []
            for index, line in enumerate(lines):
                try:
                    stored = self._replay_line(line)
                except _Unreachable as exc:
                    kept = lines[index:]
                    log.info("database still unavailable (%s): %d stay spooled", exc, len(kept))
                    break
                if stored is None:
                    dead += 1
                elif stored:
                    replayed += 1
            with self._spool_lock:  # one step for spooled(): never counted twice
                if kept:
                    _append(self.spool, kept)
                self._replaying.unlink()
        if replayed:
            log.info("replayed %d spooled completions", replayed)
        if dead:
            log.error("%d spooled completions could not be stored: see %s", dead, self.dead_letter)
        return replayed

    def _replay_line(self, line: bytes) -> bool | None:
        """True stored, False already there, None dead-lettered; raises _Unreachable."""
        try:
            record = NewCompletion(**orjson.loads(line))
        except Exception as exc:
            self._to_dead_letter(line, exc)
            return None
        for attempt in (record, storable(record)):
            try:
                self._insert_many([attempt])
                return True
            except IntegrityError:
                return False
            except Exception as exc:
                if is_outage(exc):
                    raise _Unreachable(_describe(exc)) from exc
                error = exc
        self._to_dead_letter(_spool_line(record), error)
        return None

    def _to_dead_letter(self, line: bytes, error: BaseException) -> None:
        assert self.dead_letter is not None
        entry = orjson.dumps({"error": _describe(error), "at": int(time.time())})
        # the record's own line stays byte for byte: entry, then the record, on one line
        _append(self.dead_letter, [entry[:-1] + b',"record":' + line + b"}"])
        log.error("spooled completion moved to %s: %s", self.dead_letter, _describe(error))

    # --- supervision ----------------------------------------------------------------------------
    def supervise(self) -> str | None:
        """Restart a writer thread that died or is stuck; returns what was wrong, or None."""
        with self._lock:
            if self._closed:
                return None
            stuck: list[_Item] | None = None
            if not self._thread.is_alive():
                problem = "the capture writer thread had stopped"
            elif (
                self._busy_since is not None
                and (age := time.monotonic() - self._busy_since) > self.stuck_after_s
            ):
                problem = f"the capture writer was stuck on one batch for {age:.0f} s"
                stuck, self._current, self._busy_since = self._current, None, None
            else:
                return None
            self._generation += 1
            self.restarts += 1
            self.last_problem = problem
            self._thread = self._start()
        log.error("%s: restarted it", problem)
        if stuck:  # answer its requests from the spool (if the insert commits after all, the
            records = [record for record, _, _ in stuck]  # replay skips those ids)
            outcomes = self._to_spool(records, TimeoutError(problem))
            for (_, loop, future), outcome in zip(stuck, outcomes, strict=True):
                _resolve_threadsafe(loop, future, outcome)
        return problem

    def maintain(self) -> None:
        """Replay the spool if the database is back, restart a stuck writer (every second).

        A dead one is restarted here only when requests wait for it (``write`` and ``/health``
        restart it too), so ``/health`` still reports the death.
        """
        if self._thread.is_alive() or not self._queue.empty():
            self.supervise()
        if self.spooled():
            self.replay_spool()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            thread = self._thread
        self._queue.put(_STOP)
        thread.join(timeout=30)


class _Unreachable(Exception):
    pass


class _Refused:
    """The database refused a record (as opposed to being unreachable)."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _spool_line(record: NewCompletion) -> bytes:
    try:
        return orjson.dumps(_fields(record))
    except TypeError:  # nesting or integers orjson cannot encode
        return orjson.dumps(_fields(storable(record)))


def _fields(record: NewCompletion) -> dict[str, Any]:
    # not dataclasses.asdict: it deep-copies recursively (RecursionError on deep nesting)
    return {f.name: getattr(record, f.name) for f in fields(record)}


def _append(path: Path, lines: Sequence[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as fh:
        fh.write(b"".join(line + b"\n" for line in lines))
        fh.flush()
        os.fsync(fh.fileno())


def _count_lines(path: Path) -> int:
    try:
        with path.open("rb") as fh:
            return sum(1 for line in fh if line.strip())
    except FileNotFoundError:
        return 0


def _resolve_threadsafe(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[str], outcome: Any
) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this answer
        loop.call_soon_threadsafe(_resolve, future, outcome)


def _resolve(future: asyncio.Future[str], outcome: _Outcome) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

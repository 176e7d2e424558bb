"""Group commit: many concurrent requests, one transaction per batch, each ack after commit.

Requests ``await writer.write(record)``; a dedicated thread drains the queue, inserts everything
waiting in one transaction, then resolves each request's future. A response is sent only after
its record is committed, so an acknowledged exchange survives ``kill -9``, while throughput stays
high because the fsync cost is shared by the whole batch.

When the database cannot take a record (it is down, the disk is full...), the record goes to an
append-only spool file (fsynced) and the request still succeeds: capture never turns a successful
upstream answer into a failed request. ``replay_spool`` inserts the spooled records on the next
start; ``/health`` reports how many wait there.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError

from distillery import ids
from distillery.store.records import NewCompletion

log = logging.getLogger("distillery.capture")

_STOP = object()


class CompletionWriter:
    def __init__(
        self,
        insert_many: Callable[[Sequence[NewCompletion]], None],
        *,
        spool: Path | None = None,
        max_batch: int = 512,
    ) -> None:
        self._insert_many = insert_many
        self._max_batch = max_batch
        self.spool = spool
        self._spool_lock = threading.Lock()
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="completion-writer", daemon=True)
        self._thread.start()

    async def write(self, record: NewCompletion) -> str:
        """Commit ``record``; returns its id (a fresh one if an upstream reused a stored id)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._queue.put((record, loop, future))
        return await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            self._commit(batch)
            if stop:
                return

    def _commit(self, batch: list[Any]) -> None:
        try:
            self._insert_many([record for record, _, _ in batch])
        except Exception as exc:  # retry one by one so one bad record cannot fail the others
            log.warning("batch insert failed (%s); retrying records one by one", exc)
            for record, loop, future in batch:
                outcome = self._insert_one(record)
                loop.call_soon_threadsafe(_resolve, future, outcome)
            return
        for record, loop, future in batch:
            loop.call_soon_threadsafe(_resolve, future, record.id)

    def _insert_one(self, record: NewCompletion) -> str | BaseException:
        try:
            self._insert_many([record])
            return record.id
        except IntegrityError:  # the id is taken: store under a fresh one
            fresh = replace(record, id=ids.new_id(ids.CHAT_COMPLETION))
            try:
                self._insert_many([fresh])
                return fresh.id
            except Exception as exc:
                return self._to_spool(fresh, exc)
        except Exception as exc:
            return self._to_spool(record, exc)

    def _to_spool(self, record: NewCompletion, error: Exception) -> str | BaseException:
        if self.spool is None:
            return error
        try:
            line = orjson.dumps(asdict(record)) + b"\n"
            with self._spool_lock:
                self.spool.parent.mkdir(parents=True, exist_ok=True)
                with self.spool.open("ab") as fh:
                    fh.write(line)
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as exc:
            log.error("cannot spool a completion (%s) after a database error (%s)", exc, error)
            return error
        log.warning("database unavailable (%s): completion %s spooled", error, record.id)
        return record.id

    def spooled(self) -> int:
        """How many records wait in the spool."""
        if self.spool is None or not self.spool.exists():
            return 0
        with self.spool.open("rb") as fh:
            return sum(1 for line in fh if line.strip())

    def replay_spool(self) -> int:
        """Insert the spooled records (ids already stored are skipped); empty the spool."""
        if self.spool is None or not self.spool.exists():
            return 0
        with self._spool_lock:
            records = [
                NewCompletion(**orjson.loads(line))
                for line in self.spool.read_bytes().splitlines()
                if line.strip()
            ]
            replayed = 0
            for record in records:
                try:
                    self._insert_many([record])
                    replayed += 1
                except IntegrityError:
                    pass  # already stored by an earlier, interrupted replay
            self.spool.unlink()
        if replayed:
            log.info("replayed %d spooled completions", replayed)
        return replayed

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=30)


def _resolve(future: asyncio.Future[str], outcome: str | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

"""Uploaded files (``/v1/files``): stored by id under ``$DISTILLERY_HOME/files/``, checked first.

An upload is streamed to a temporary file beside its final place while its size is limited, its
SHA-256 taken and its bytes sniffed (archives, binary data and text that is not UTF-8 are refused
for the JSONL purposes); a ``fine-tune`` file is then validated as OpenAI's chat fine-tuning
JSONL (:mod:`distillery.wire.fine_tuning_jsonl`) and an ``evals`` file must hold one JSON object
per line. Only a file that passes is renamed (atomically) to ``files/<id>`` and recorded, so a
failed or interrupted upload leaves nothing behind. The client's file name is kept only as
metadata, without any path.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import os
import re
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

from distillery import ids
from distillery.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from distillery.settings import FilesConfig
from distillery.store.files import FilesRepo, StoredFile
from distillery.store.records import Page
from distillery.wire.fine_tuning_jsonl import (
    Issue,
    TokenCounter,
    read_lines,
    token_counter,
    validate_jsonl,
)

PURPOSES = ("fine-tune", "evals")
JSONL_PURPOSES = frozenset(PURPOSES)
MAX_FILENAME = 255
DEFAULT_FILENAME = "upload.jsonl"
_CHUNK = 1 << 20
_SEPARATORS = re.compile(r"[\\/]")
# magic numbers of formats that are certainly not JSONL text
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),
    (b"\x1f\x8b", "a gzip archive"),
    (b"BZh", "a bzip2 archive"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive"),
    (b"%PDF-", "a PDF document"),
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"\x7fELF", "an executable"),
    (b"SQLite format 3\x00", "an SQLite database"),
)


def sanitize_filename(name: str | None) -> str:
    """The last path component, without control characters or leading dots, at most 255 chars."""
    if not name:
        return DEFAULT_FILENAME
    base = _SEPARATORS.split(name)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C")
    base = base.strip().lstrip(".").strip()
    if not base:
        return DEFAULT_FILENAME
    if len(base) > MAX_FILENAME:
        stem, ext = os.path.splitext(base)
        keep_ext = 0 < len(ext) <= 16
        base = stem[: MAX_FILENAME - len(ext)] + ext if keep_ext else base[:MAX_FILENAME]
    return base


def _sniff(head: bytes) -> str | None:
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    return None


class _Sink:
    """Writes an upload to a temporary file: size limit, hash, NUL bytes, UTF-8 check."""

    def __init__(self, path: Path, limit: int) -> None:
        self.path = path
        self.limit = limit
        self.size = 0
        self.sha = hashlib.sha256()
        self.head = b""
        self.has_nul = False
        self.bad_utf8_at: int | None = None
        self._decoder = codecs.getincrementaldecoder("utf-8")()

    def _check_text(self, chunk: bytes, final: bool) -> None:
        if self.bad_utf8_at is not None:
            return
        try:
            self._decoder.decode(chunk, final)
        except UnicodeDecodeError as exc:
            self.bad_utf8_at = self.size - len(chunk) + max(exc.start, 0)

    def copy(self, source: IO[bytes]) -> None:
        with self.path.open("xb") as out:
            while True:
                chunk = source.read(_CHUNK)
                if not chunk:
                    break
                self.size += len(chunk)
                if self.size > self.limit:
                    raise PayloadTooLargeError(
                        f"The file is larger than the limit of {self.limit} bytes "
                        "(files.max_file_bytes).",
                        param="file",
                        code="file_too_large",
                    )
                if len(self.head) < 64:
                    self.head += chunk[: 64 - len(self.head)]
                self.has_nul = self.has_nul or b"\x00" in chunk
                self._check_text(chunk, final=False)
                self.sha.update(chunk)
                out.write(chunk)
            self._check_text(b"", final=True)
            out.flush()
            os.fsync(out.fileno())


class FilesService:
    def __init__(
        self,
        repo: FilesRepo,
        root: Path,
        config: FilesConfig,
        *,
        counter: TokenCounter | None = None,
        home: Path | None = None,
    ) -> None:
        self.repo = repo
        self.root = root
        self.config = config
        self._counter = counter
        self._home = home

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            self._counter = token_counter(self._home)
        return self._counter

    # --- create ---------------------------------------------------------------------------------

    def create(self, source: IO[bytes], *, filename: str | None, purpose: str) -> StoredFile:
        """Store an upload after its checks; raises a 400/413 error and stores nothing otherwise."""
        if purpose not in PURPOSES:
            raise InvalidRequestError(
                f"Invalid value for 'purpose': {purpose!r}. Supported values are "
                f"{', '.join(repr(p) for p in PURPOSES)}.",
                param="purpose",
                code="invalid_value",
            )
        name = sanitize_filename(filename)
        file_id = ids.new_id(ids.FILE)
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{file_id}.part"
        final = self.root / file_id
        try:
            sink = _Sink(tmp, self.config.max_file_bytes)
            sink.copy(source)
            details = self._check(tmp, sink, purpose)
            os.replace(tmp, final)
            record = StoredFile(
                id=file_id,
                created_at=int(time.time()),
                filename=name,
                purpose=purpose,
                bytes=sink.size,
                sha256=sink.sha.hexdigest(),
                status="processed",
                status_details=details,
            )
            try:
                self.repo.insert(record)
            except BaseException:
                final.unlink(missing_ok=True)
                raise
            return record
        finally:
            tmp.unlink(missing_ok=True)

    def _check(self, path: Path, sink: _Sink, purpose: str) -> str | None:
        if sink.size == 0:
            raise InvalidRequestError("The file is empty.", param="file", code="invalid_file")
        if purpose not in JSONL_PURPOSES:
            return None
        what = _sniff(sink.head)
        if what is not None:
            raise InvalidRequestError(
                f"The file is {what}, not JSONL: upload a .jsonl text file for purpose "
                f"{purpose!r}.",
                param="file",
                code="invalid_file_format",
            )
        if sink.has_nul:
            raise InvalidRequestError(
                f"The file contains binary data (NUL bytes), not JSONL text for purpose "
                f"{purpose!r}.",
                param="file",
                code="invalid_file_format",
            )
        if sink.bad_utf8_at is not None:
            raise InvalidRequestError(
                f"The file is not valid UTF-8 (first invalid byte at offset {sink.bad_utf8_at}); "
                "JSONL files must be UTF-8.",
                param="file",
                code="invalid_file_format",
            )
        if purpose == "fine-tune":
            return self._check_fine_tune(path)
        self._check_evals(path)
        return None

    def _check_fine_tune(self, path: Path) -> str | None:
        with path.open("rb") as stream:
            report = validate_jsonl(
                stream,
                counter=self.counter,
                max_tokens=self.config.max_tokens_per_example,
                max_line_bytes=self.config.max_line_bytes,
            )
        if not report.ok:
            missing = report.error_counts.get("example_missing_assistant_message", 0)
            if set(report.error_counts) == {"example_missing_assistant_message"} and (
                missing == report.n_lines
            ):
                # no line has an answer: OpenAI's reinforcement rows (prompts plus the fields
                # a grader reads), checked against the grader when a job is created
                return (
                    "Warnings: no line has an assistant message; the file can train "
                    "reinforcement jobs (method 'reinforcement') only."
                )
            raise InvalidRequestError(
                report.error_message(), param="file", code="invalid_file_format"
            )
        if report.warning_counts:
            return "Warnings: " + report.summary(warnings=True)
        return None

    def _check_evals(self, path: Path) -> None:
        problems: list[Issue] = []
        count = 0
        with path.open("rb") as stream:
            for number, value in read_lines(stream, max_line_bytes=self.config.max_line_bytes):
                count += 1
                if isinstance(value, Issue):
                    problems.append(value)
                elif not isinstance(value, dict):
                    problems.append(Issue(number, "data_type", "the line is not a JSON object"))
        if problems:
            shown = "; ".join(str(p) for p in problems[:5])
            raise InvalidRequestError(
                f"Invalid evals file: {len(problems)} invalid line(s) of {count}: {shown}",
                param="file",
                code="invalid_file_format",
            )
        if count == 0:
            raise InvalidRequestError("The file has no lines.", param="file", code="invalid_file")

    # --- read and delete ------------------------------------------------------------------------

    def get(self, file_id: str) -> StoredFile:
        return self.repo.get(file_id)

    def list(
        self,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 10_000,
        order: Literal["asc", "desc"] = "desc",
    ) -> Page[StoredFile]:
        return self.repo.list(purpose=purpose, after=after, limit=limit, order=order)

    def path(self, file_id: str) -> Path:
        """Where the bytes of a stored file are (never derived from client input)."""
        record = self.repo.get(file_id)
        path = self.root / record.id
        if not path.is_file():
            raise NotFoundError(f"The content of file {file_id} is missing.", param="id")
        return path

    @contextlib.contextmanager
    def open(self, file_id: str) -> Iterator[IO[bytes]]:
        with self.path(file_id).open("rb") as stream:
            yield stream

    def delete(self, file_id: str) -> StoredFile:
        record = self.repo.delete(file_id)
        (self.root / record.id).unlink(missing_ok=True)
        return record

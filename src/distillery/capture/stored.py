"""The stored completions as the edges read and edit them: OpenAI's stored-completions API
(``GET``/``POST``/``DELETE /v1/chat/completions``), the dashboard's completion pages and
``distillery completions``. What capture writes (``capture.writer``), these read back."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from distillery.capture.importer import ImportReport, import_jsonl
from distillery.costs.prices import PriceTable
from distillery.progress import ProgressCallback
from distillery.store.completions import CompletionsRepo, Order
from distillery.store.records import Page, StoredCompletion


class StoredCompletions:
    def __init__(self, repo: CompletionsRepo) -> None:
        self.repo = repo

    def list(
        self,
        *,
        model: str | None = None,
        metadata: Mapping[str, str] | None = None,
        after: str | None = None,
        limit: int = 20,
        order: Order = "asc",
        created_after: int | None = None,
        created_before: int | None = None,
        status: str | None = None,
        search: str | None = None,
    ) -> Page[StoredCompletion]:
        """A page of the completions that match every filter given."""
        return self.repo.list(
            model=model,
            metadata=metadata,
            after=after,
            limit=limit,
            order=order,
            created_after=created_after,
            created_before=created_before,
            status=status,
            search=search,
        )

    def iterate(
        self, *, model: str | None = None, metadata: Mapping[str, str] | None = None
    ) -> Iterator[StoredCompletion]:
        """Every matching completion, oldest first (read in batches)."""
        items: Iterator[StoredCompletion] = self.repo.iterate(model=model, metadata=metadata)
        return items

    def count(self, *, metadata: Mapping[str, str] | None = None) -> int:
        return self.repo.count(metadata=metadata)

    def get(self, completion_id: str) -> StoredCompletion:
        """A stored completion (404 when unknown)."""
        return self.repo.get(completion_id)

    def update_metadata(self, completion_id: str, metadata: Mapping[str, str]) -> StoredCompletion:
        """Replace a completion's metadata; the completion as it is now."""
        return self.repo.update_metadata(completion_id, metadata)

    def delete(self, completion_id: str) -> None:
        self.repo.delete(completion_id)

    def import_jsonl(
        self,
        lines: Iterable[bytes | str],
        *,
        default_model: str | None = None,
        metadata: dict[str, str] | None = None,
        prices: PriceTable | None = None,
        progress: ProgressCallback | None = None,
        skip_invalid: bool = False,
    ) -> ImportReport:
        """Import JSONL as stored completions (``capture.importer.import_jsonl``)."""
        return import_jsonl(
            self.repo,
            lines,
            default_model=default_model,
            metadata=metadata,
            prices=prices,
            progress=progress,
            skip_invalid=skip_invalid,
        )


# StoredCompletion: the record these methods return, for the edges
__all__ = ["StoredCompletion", "StoredCompletions"]

"""Fine-tuned models: servable ids (``ft:<base>:<suffix>:<short>``) and what serves them.

A local model is a LoRA adapter folder on a base model served by a ``local`` provider; a remote one
is a model the provider itself trained (OpenAI's ``fine_tuned_model``), served through that
provider.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, select

from distillery.store.base import Store
from distillery.store.tables import FineTunedModelRow


@dataclass(frozen=True)
class FineTunedModel:
    id: str
    created_at: int
    base_model: str
    provider: str
    adapter_path: str | None
    job_id: str | None
    metadata: dict[str, Any] = field(default_factory=dict)


def _record(row: FineTunedModelRow) -> FineTunedModel:
    return FineTunedModel(
        id=row.id,
        created_at=row.created_at,
        base_model=row.base_model,
        provider=row.provider,
        adapter_path=row.adapter_path,
        job_id=row.job_id,
        metadata=dict(row.meta or {}),
    )


class FineTunedModelsRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def register(
        self,
        model_id: str,
        *,
        base_model: str,
        provider: str,
        adapter_path: str | None = None,
        job_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> FineTunedModel:
        """Add a model (idempotent: an id registered before is returned as it is)."""
        with self.store.write() as session:
            row = session.scalar(select(FineTunedModelRow).where(FineTunedModelRow.id == model_id))
            if row is None:
                row = FineTunedModelRow(
                    id=model_id,
                    created_at=int(time.time()),
                    base_model=base_model,
                    provider=provider,
                    adapter_path=adapter_path,
                    job_id=job_id,
                    meta=metadata,
                )
                session.add(row)
                session.flush()
            return _record(row)

    def get(self, model_id: str) -> FineTunedModel | None:
        with self.store.read() as session:
            row = session.scalar(select(FineTunedModelRow).where(FineTunedModelRow.id == model_id))
            return None if row is None else _record(row)

    def list(
        self, *, provider: str | None = None, job_id: str | None = None
    ) -> list[FineTunedModel]:
        stmt = select(FineTunedModelRow).order_by(FineTunedModelRow.seq)
        if provider is not None:
            stmt = stmt.where(FineTunedModelRow.provider == provider)
        if job_id is not None:
            stmt = stmt.where(FineTunedModelRow.job_id == job_id)
        with self.store.read() as session:
            return [_record(r) for r in session.scalars(stmt)]

    def delete(self, model_id: str) -> bool:
        """Remove a fine-tuned model; whether it was there."""
        with self.store.write() as session:
            result = session.execute(
                delete(FineTunedModelRow).where(FineTunedModelRow.id == model_id)
            )
            return bool(getattr(result, "rowcount", 0))

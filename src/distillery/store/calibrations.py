"""Judge calibrations (``distillery.evals.calibration``): the latest one per grader config."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import insert, select

from distillery.store.base import Store
from distillery.store.tables import JudgeCalibrationRow


class CalibrationsRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    def add(self, calibration_id: str, grader_key: str, body: dict[str, Any]) -> int:
        created_at = int(time.time())
        with self.store.write() as session:
            session.execute(
                insert(JudgeCalibrationRow).values(
                    id=calibration_id, created_at=created_at, grader_key=grader_key, body=body
                )
            )
        return created_at

    def latest(self, grader_key: str) -> dict[str, Any] | None:
        """The newest calibration of the grader config ``grader_key`` names."""
        with self.store.read() as session:
            row = session.scalar(
                select(JudgeCalibrationRow)
                .where(JudgeCalibrationRow.grader_key == grader_key)
                .order_by(JudgeCalibrationRow.seq.desc())
                .limit(1)
            )
            return dict(row.body) if row is not None else None

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest calibrations of any grader, newest first."""
        with self.store.read() as session:
            rows = session.scalars(
                select(JudgeCalibrationRow).order_by(JudgeCalibrationRow.seq.desc()).limit(limit)
            )
            return [dict(row.body) for row in rows]

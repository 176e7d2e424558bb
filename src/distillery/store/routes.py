"""Routes, their events, the outcome of every routed request, and the response cache."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, case, delete, desc, func, select, update
from sqlalchemy.exc import IntegrityError

from distillery import ids
from distillery.errors import ConflictError, NotFoundError
from distillery.store.base import Store
from distillery.store.records import Page
from distillery.store.tables import ResponseCacheRow, RouteEventRow, RouteOutcomeRow, RouteRow
from distillery.wire.route_modes import RouteMode

ROUTE = "route_"
ROUTE_EVENT = "revt_"


@dataclass(frozen=True)
class RouteRecord:
    id: str
    name: str
    created_at: int
    updated_at: int
    mode: RouteMode
    version: int
    body: dict[str, Any]  # the route's spec (``RouteSpec`` as JSON)


@dataclass(frozen=True)
class RouteEvent:
    id: str
    route_id: str
    created_at: int
    type: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """One routed request (see ``RouteOutcomeRow``)."""

    route_id: str
    created_at: int
    mode: RouteMode
    served_by: str  # teacher | student | fallback | cache
    model: str
    completion_id: str | None = None
    student_completion_id: str | None = None
    passed: bool | None = None
    shadow: bool = False
    reason: str | None = None
    cost_usd: float | None = None
    saved_usd: float | None = None
    grades: list[dict[str, Any]] | None = None


@dataclass(frozen=True)
class CachedResponse:
    key: str
    model: str
    response: dict[str, Any]
    cost_usd: float | None
    expires_at: int


def _route(row: RouteRow) -> RouteRecord:
    return RouteRecord(
        id=row.id,
        name=row.name,
        created_at=row.created_at,
        updated_at=row.updated_at,
        mode=RouteMode(row.mode),
        version=row.version,
        body=dict(row.body),
    )


def _event(row: RouteEventRow) -> RouteEvent:
    return RouteEvent(row.id, row.route_id, row.created_at, row.type, dict(row.body))


_OUTCOMES: Table = RouteOutcomeRow.__table__  # type: ignore[assignment]


class RoutesRepo:
    def __init__(self, store: Store) -> None:
        self.store = store

    # --- routes ----------------------------------------------------------------------------------
    def create(
        self, name: str, mode: RouteMode, body: dict[str, Any], event: dict[str, Any]
    ) -> str:
        now = int(time.time())
        route_id = ids.new_id(ROUTE)
        try:
            with self.store.write() as session:
                session.add(
                    RouteRow(
                        id=route_id,
                        name=name,
                        created_at=now,
                        updated_at=now,
                        mode=mode,
                        version=1,
                        body=body,
                    )
                )
                session.flush()
                self._add_event(session, route_id, now, event)
        except IntegrityError:
            raise ConflictError(
                f"A route named {name!r} already exists.", param="name", code="route_exists"
            ) from None
        return route_id

    def get(self, route_id: str) -> RouteRecord:
        with self.store.read() as session:
            row = session.scalar(select(RouteRow).where(RouteRow.id == route_id))
            if row is None:
                raise NotFoundError(f"No route found with id '{route_id}'.", param="route_id")
            return _route(row)

    def all(self) -> list[RouteRecord]:
        with self.store.read() as session:
            return [_route(r) for r in session.scalars(select(RouteRow).order_by(RouteRow.seq))]

    def versions(self) -> dict[str, int]:
        """``{route id: version}``: what a process compares to know its routes are current."""
        with self.store.read() as session:
            return dict(session.execute(select(RouteRow.id, RouteRow.version)).all())

    def page(self, *, after: str | None, limit: int, order: str) -> Page[RouteRecord]:
        with self.store.read() as session:
            query = select(RouteRow)
            if after is not None:
                seq = session.scalar(select(RouteRow.seq).where(RouteRow.id == after))
                if seq is None:
                    raise NotFoundError(f"No route found with id '{after}'.", param="after")
                query = query.where(RouteRow.seq > seq if order == "asc" else RouteRow.seq < seq)
            query = query.order_by(RouteRow.seq if order == "asc" else desc(RouteRow.seq))
            rows = list(session.scalars(query.limit(limit + 1)))
            return Page([_route(r) for r in rows[:limit]], len(rows) > limit)

    def update(
        self,
        route_id: str,
        *,
        body: dict[str, Any],
        mode: RouteMode,
        event: dict[str, Any] | None,
        expected_version: int | None = None,
    ) -> RouteRecord:
        """Replace the spec (version + 1) and record ``event`` in one transaction.

        ``expected_version``: refuse (409) when another change landed first.
        """
        now = int(time.time())
        with self.store.write() as session:
            row = session.scalar(select(RouteRow).where(RouteRow.id == route_id))
            if row is None:
                raise NotFoundError(f"No route found with id '{route_id}'.", param="route_id")
            if expected_version is not None and row.version != expected_version:
                raise ConflictError(
                    "The route changed while this change was decided; retry.",
                    code="route_changed",
                )
            row.body, row.mode, row.version, row.updated_at = body, mode, row.version + 1, now
            if event is not None:
                self._add_event(session, route_id, now, event)
            session.flush()
            return _route(row)

    def delete(self, route_id: str) -> None:
        with self.store.write() as session:
            found = session.execute(delete(RouteRow).where(RouteRow.id == route_id))
            if not getattr(found, "rowcount", 0):
                raise NotFoundError(f"No route found with id '{route_id}'.", param="route_id")
            session.execute(delete(ResponseCacheRow).where(ResponseCacheRow.route_id == route_id))

    # --- events ----------------------------------------------------------------------------------
    @staticmethod
    def _add_event(session: Any, route_id: str, now: int, event: dict[str, Any]) -> None:
        session.add(
            RouteEventRow(
                id=ids.new_id(ROUTE_EVENT),
                route_id=route_id,
                created_at=now,
                type=str(event.get("type", "updated")),
                body=event,
            )
        )

    def add_event(self, route_id: str, event: dict[str, Any]) -> None:
        with self.store.write() as session:
            self._add_event(session, route_id, int(time.time()), event)

    def events(self, route_id: str, *, after: str | None, limit: int) -> Page[RouteEvent]:
        """Newest first, as fine-tuning events are listed."""
        with self.store.read() as session:
            query = select(RouteEventRow).where(RouteEventRow.route_id == route_id)
            if after is not None:
                seq = session.scalar(select(RouteEventRow.seq).where(RouteEventRow.id == after))
                if seq is None:
                    raise NotFoundError(f"No route event found with id '{after}'.", param="after")
                query = query.where(RouteEventRow.seq < seq)
            rows = list(session.scalars(query.order_by(desc(RouteEventRow.seq)).limit(limit + 1)))
            return Page([_event(r) for r in rows[:limit]], len(rows) > limit)

    def history(self, route_id: str, *, limit: int = 10_000) -> list[RouteEvent]:
        """The route's newest ``limit`` events, oldest first."""
        with self.store.read() as session:
            query = select(RouteEventRow).where(RouteEventRow.route_id == route_id)
            rows = list(session.scalars(query.order_by(desc(RouteEventRow.seq)).limit(limit)))
            return [_event(r) for r in reversed(rows)]

    # --- outcomes --------------------------------------------------------------------------------
    def add_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        rows = [{f: getattr(o, f) for f in Outcome.__dataclass_fields__} for o in outcomes]
        with self.store.write() as session:
            # a route deleted meanwhile takes its outcomes with it
            live = set(
                session.scalars(
                    select(RouteRow.id).where(RouteRow.id.in_({o.route_id for o in outcomes}))
                )
            )
            rows = [r for r in rows if r["route_id"] in live]
            if rows:
                session.connection().execute(_OUTCOMES.insert(), rows)

    def graded(self, route_id: str, *, limit: int, shadow: bool | None = None) -> list[bool]:
        """The newest ``limit`` verdicts on the student's answers, oldest first."""
        with self.store.read() as session:
            query = select(RouteOutcomeRow.passed).where(
                RouteOutcomeRow.route_id == route_id, RouteOutcomeRow.passed.is_not(None)
            )
            if shadow is not None:
                query = query.where(RouteOutcomeRow.shadow.is_(shadow))
            found = session.scalars(query.order_by(desc(RouteOutcomeRow.seq)).limit(limit))
            return [bool(v) for v in reversed(list(found))]

    def outcomes(self, route_id: str, *, limit: int) -> list[dict[str, Any]]:
        """The newest ``limit`` outcomes in the order they were written: when, in which mode,
        who answered, the student's verdict, the reason of a fallback, cost and saving."""
        c = RouteOutcomeRow
        columns = (c.created_at, c.mode, c.served_by, c.shadow, c.passed, c.reason)
        with self.store.read() as session:
            rows = session.execute(
                select(*columns, c.cost_usd, c.saved_usd)
                .where(c.route_id == route_id)
                .order_by(desc(c.seq))
                .limit(limit)
            ).all()
        keys = ("created_at", "mode", "served_by", "shadow", "passed", "reason")
        return [
            dict(zip((*keys, "cost_usd", "saved_usd"), row, strict=True)) for row in reversed(rows)
        ]

    def outcome_totals(self, route_id: str, since: int = 0) -> list[dict[str, Any]]:
        """Per (served_by, model, shadow): requests, graded, passed, cost and savings."""
        c = RouteOutcomeRow
        with self.store.read() as session:
            rows = session.execute(
                select(
                    c.served_by,
                    c.model,
                    c.shadow,
                    func.count(),
                    func.count(c.passed),
                    func.sum(case((c.passed.is_(True), 1), else_=0)),
                    func.sum(c.cost_usd),
                    func.count(c.cost_usd),
                    func.sum(c.saved_usd),
                    func.min(c.created_at),
                )
                .where(c.route_id == route_id, c.created_at >= since)
                .group_by(c.served_by, c.model, c.shadow)
            ).all()
        keys = (
            *("served_by", "model", "shadow", "requests", "graded", "passed"),
            *("cost_usd", "costed", "saved_usd", "first_at"),
        )
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def reasons(self, route_id: str) -> dict[str, int]:
        """Fallback reasons and their counts."""
        c = RouteOutcomeRow
        with self.store.read() as session:
            rows = session.execute(
                select(c.reason, func.count())
                .where(c.route_id == route_id, c.served_by == "fallback")
                .group_by(c.reason)
            ).all()
        return {str(reason): int(n) for reason, n in rows}

    # --- response cache --------------------------------------------------------------------------
    def cache_get(self, key: str, now: int) -> CachedResponse | None:
        with self.store.read() as session:
            row = session.get(ResponseCacheRow, key)
            if row is None or row.expires_at <= now:
                return None
            return CachedResponse(
                row.key, row.model, dict(row.response), row.cost_usd, row.expires_at
            )

    def cache_put(
        self,
        key: str,
        *,
        route_id: str | None,
        model: str,
        response: dict[str, Any],
        cost_usd: float | None,
        ttl_s: int,
    ) -> None:
        now = int(time.time())
        with self.store.write() as session:
            row = session.get(ResponseCacheRow, key)
            if row is None:
                row = ResponseCacheRow(key=key, hits=0)
                session.add(row)
            row.route_id, row.model, row.response, row.cost_usd = (
                route_id,
                model,
                response,
                cost_usd,
            )
            row.created_at, row.expires_at = now, now + ttl_s

    def cache_hit(self, key: str) -> None:
        with self.store.write() as session:
            session.execute(
                update(ResponseCacheRow)
                .where(ResponseCacheRow.key == key)
                .values(hits=ResponseCacheRow.hits + 1)
            )

    def cache_totals(self) -> dict[str, Any]:
        """Entries, hits and the cost the hits avoided (each hit priced as its entry's answer)."""
        c = ResponseCacheRow
        with self.store.read() as session:
            entries, hits, saved = session.execute(
                select(
                    func.count(),
                    func.sum(c.hits),
                    func.sum(c.hits * func.coalesce(c.cost_usd, 0.0)),
                )
            ).one()
        return {"entries": int(entries), "hits": int(hits or 0), "saved_usd": float(saved or 0.0)}

    def cache_clear(self, *, route_id: str | None = None, expired_before: int | None = None) -> int:
        with self.store.write() as session:
            query = delete(ResponseCacheRow)
            if route_id is not None:
                query = query.where(ResponseCacheRow.route_id == route_id)
            if expired_before is not None:
                query = query.where(ResponseCacheRow.expires_at <= expired_before)
            return int(getattr(session.execute(query), "rowcount", 0) or 0)

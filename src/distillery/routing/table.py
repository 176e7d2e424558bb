"""The routes a process serves, indexed for the gateway's hot path, and who answers a request.

``RouteTable.match`` is a dict lookup by the requested model, then a check of a handful of
metadata pairs: a request no route names costs one failed dict lookup. The table is rebuilt from
the store when a route changes (here or in another process: ``refresh`` compares versions).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from distillery.evals.graders.base import Grader
from distillery.routing.spec import RouteSpec, route_fields
from distillery.store.routes import RouteRecord
from distillery.wire.route_modes import RouteMode

GraderFactory = Callable[[dict[str, Any], str], Grader]
BUCKETS = 10_000  # canary percentages resolve to 0.01 %


@dataclass(frozen=True)
class RouteGrader:
    name: str
    type: str
    grader: Grader
    blocking: bool
    sample_rate: float
    block_on_error: bool
    # reads ``{{item.teacher}}``/``{{item.teacher_json}}``: grades only answers the teacher also
    # answered (shadow pairs, fallbacks), never a student's answer with nothing to compare to
    needs_teacher: bool = False


@dataclass(frozen=True)
class Route:
    id: str
    name: str
    version: int
    spec: RouteSpec
    pairs: tuple[tuple[str, str], ...]
    graders: tuple[RouteGrader, ...] = field(default=())

    @property
    def mode(self) -> RouteMode:
        return self.spec.mode

    @property
    def teacher(self) -> str:
        return self.spec.match.model

    @property
    def student(self) -> str:
        return self.spec.student

    @property
    def blocking(self) -> bool:
        return any(g.blocking for g in self.graders)

    def matches(self, metadata: Mapping[str, str] | None) -> bool:
        if not self.pairs:
            return True
        if not metadata:
            return False
        return all(metadata.get(k) == v for k, v in self.pairs)

    def to_student(self, metadata: Mapping[str, str] | None, upstream: Mapping[str, Any]) -> bool:
        """Whether the student answers this request (canary: sticky by key or request)."""
        if not self.mode.student_answers:
            return False
        if not self.mode.splits_traffic:
            return True
        if self.spec.percent <= 0:
            return False
        if self.spec.percent >= 100:
            return True
        return bucket(self.id, sticky_value(self.spec, metadata, upstream)) < self.spec.percent * (
            BUCKETS // 100
        )


def sticky_value(
    spec: RouteSpec, metadata: Mapping[str, str] | None, upstream: Mapping[str, Any]
) -> bytes:
    """What a canary assignment is sticky to: the ``sticky_key`` metadata value when the
    request has it, else the request's messages (the same question lands on the same side)."""
    if spec.sticky_key and metadata and spec.sticky_key in metadata:
        return b"k:" + metadata[spec.sticky_key].encode()
    return b"m:" + orjson.dumps(upstream.get("messages"), option=orjson.OPT_SORT_KEYS)


def bucket(route_id: str, value: bytes) -> int:
    digest = hashlib.blake2b(value, digest_size=8, key=route_id.encode()[:64]).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def build_route(record: RouteRecord, grader_factory: GraderFactory) -> Route:
    spec = RouteSpec.model_validate(record.body)
    graders = []
    for i, raw in enumerate(spec.graders):
        config, blocking, rate = route_fields(raw)
        grader = grader_factory(config, f"graders[{i}]")
        graders.append(
            RouteGrader(
                name=str(config.get("name") or f"grader_{i}"),
                type=str(config.get("type")),
                grader=grader,
                blocking=blocking,
                sample_rate=rate,
                block_on_error=bool(raw.get("block_on_error", False)),
                needs_teacher=_reads_teacher(config),
            )
        )
    return Route(
        id=record.id,
        name=record.name,
        version=record.version,
        spec=spec,
        pairs=tuple(sorted(spec.match.pairs().items())),
        graders=tuple(graders),
    )


_TEACHER_FIELD = re.compile(r"\{\{\s*item\.teacher(_json)?\b")


def _reads_teacher(config: Any) -> bool:
    """Whether a grader config's templates read the teacher's answer."""
    if isinstance(config, str):
        return _TEACHER_FIELD.search(config) is not None
    if isinstance(config, dict):
        return any(_reads_teacher(v) for v in config.values())
    if isinstance(config, list):
        return any(_reads_teacher(v) for v in config)
    return False


class _ModelRoutes:
    """The routes of one requested model, indexed by a metadata key they all name (usually
    ``prompt``), so a match checks the few routes of that value rather than all of them."""

    def __init__(self, routes: list[Route]) -> None:
        # the most specific route first (overlaps are refused, this is only a tie-break)
        self.routes = tuple(sorted(routes, key=lambda r: -len(r.pairs)))
        common = set.intersection(*(set(dict(r.pairs)) for r in routes)) if routes else set()
        self.key = max(
            sorted(common), key=lambda k: len({dict(r.pairs)[k] for r in routes}), default=None
        )
        self.by_value: dict[str, tuple[Route, ...]] = {}
        if self.key is not None:
            for route in self.routes:
                value = dict(route.pairs)[self.key]
                self.by_value[value] = (*self.by_value.get(value, ()), route)

    def match(self, metadata: Mapping[str, str] | None) -> Route | None:
        candidates = self.routes
        if self.key is not None:
            if not metadata:
                return None
            value = metadata.get(self.key)
            if value is None:
                return None
            candidates = self.by_value.get(value, ())
        for route in candidates:
            if route.matches(metadata):
                return route
        return None


class RouteTable:
    """The live routes, by requested model."""

    def __init__(self) -> None:
        self._by_model: dict[str, _ModelRoutes] = {}
        self._by_id: dict[str, Route] = {}

    def match(self, model: str, metadata: Mapping[str, str] | None) -> Route | None:
        routes = self._by_model.get(model)
        return None if routes is None else routes.match(metadata)

    def get(self, route_id: str) -> Route | None:
        return self._by_id.get(route_id)

    def versions(self) -> dict[str, int]:
        return {r.id: r.version for r in self._by_id.values()}

    def replace(self, routes: list[Route]) -> None:
        by_model: dict[str, list[Route]] = {}
        for route in routes:
            by_model.setdefault(route.teacher, []).append(route)
        self._by_model = {m: _ModelRoutes(rs) for m, rs in by_model.items()}
        self._by_id = {r.id: r for r in routes}

    def __len__(self) -> int:
        return len(self._by_id)

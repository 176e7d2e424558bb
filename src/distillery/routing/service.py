"""Routes: create, change, promote behind the parity gate, roll back; events; live stats.

The parity gate (``check_gate``) allows a route into ``canary`` or ``full`` only when

1. an eval comparison of two completed runs on the same frozen held-out items, the teacher's
   (``gate.teacher_run``, the baseline) and the route's student's (``gate.student_run``), puts
   the student at or above ``gate.min_percent_of_teacher`` percent of the teacher *at the lower
   end of the bootstrap confidence interval* of that ratio, and
2. when the route has at least ``gate.min_shadow_pairs`` graded shadow pairs, their agreement
   (the share of the student's shadow answers that passed the route's graders against the
   teacher's) is at or above ``gate.min_shadow_agreement`` percent (unset: the same percentage).
   Fewer pairs are reported, not counted.

A refusal is a 409 whose message and ``error.gate`` carry the numbers; ``force`` (recorded as an
event) bypasses the gate. Every change is an event naming who or what made it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any

from distillery.errors import ConflictError, DistilleryError, InvalidRequestError
from distillery.evals.compare import pass_rate_interval
from distillery.evals.graders.base import Grader
from distillery.providers.registry import ProviderRegistry
from distillery.routing import timeline
from distillery.routing.spec import RouteSpec, route_fields
from distillery.routing.table import Route, RouteTable, build_route
from distillery.store.routes import RouteEvent, RouteRecord, RoutesRepo
from distillery.wire.params import parse_params
from distillery.wire.route_modes import PROMOTE_TARGETS, ROLLBACK_TARGETS, RouteMode, either

Compare = Callable[[list[str], str], dict[str, Any]]
GraderFactory = Callable[[dict[str, Any], str], Grader]
MAX_VERDICTS = 100_000  # verdicts read for online pass rates and shadow agreement
TIMELINE_LIMIT = 5_000  # requests a timeline shows, the newest


class GateRefused(ConflictError):
    default_code = "gate_refused"

    def __init__(self, message: str, decision: dict[str, Any]) -> None:
        super().__init__(message, param="mode")
        self.decision = decision

    def to_dict(self) -> dict[str, Any]:
        body = super().to_dict()
        body["error"]["gate"] = self.decision
        return body


def _overlaps(a: Mapping[str, str], b: Mapping[str, str]) -> bool:
    """Two routes on the same model overlap unless some key demands different values."""
    return all(a[k] == b[k] for k in a.keys() & b.keys())


class RoutesService:
    def __init__(
        self,
        *,
        repo: RoutesRepo,
        table: RouteTable,
        providers: ProviderRegistry,
        compare: Compare,
        grader_factory: GraderFactory,
        training_costs: Callable[[], dict[str, float]] | None = None,
        judge_check: Callable[[dict[str, Any], str], None] | None = None,
    ) -> None:
        self.repo = repo
        self.table = table
        self.providers = providers
        self.compare = compare
        self.grader_factory = grader_factory
        self.training_costs = training_costs or dict
        self.judge_check = judge_check  # a blocking judge must be calibrated (evals.calibration)
        # writes what this process has not written yet (the gateway's outcome log) before a read
        self.before_read: Callable[[], None] = lambda: None
        self.reload()

    # --- the live table --------------------------------------------------------------------------
    def reload(self) -> None:
        self.table.replace([self._build(r) for r in self.repo.all()])

    def _build(self, record: RouteRecord) -> Route:
        return build_route(record, self.grader_factory)

    def refresh(self) -> bool:
        """Reload when a route changed in the store (another process); True when it did."""
        if self.repo.versions() == self.table.versions():
            return False
        self.reload()
        return True

    # --- reading ---------------------------------------------------------------------------------
    def get(self, route_id: str) -> dict[str, Any]:
        return self.to_object(self.repo.get(route_id))

    def page(
        self, *, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool]:
        page = self.repo.page(after=after, limit=limit, order=order)
        return [self.to_object(r) for r in page.data], page.has_more

    def events(
        self, route_id: str, *, after: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        self.repo.get(route_id)
        page = self.repo.events(route_id, after=after, limit=limit)
        return [_event_object(e) for e in page.data], page.has_more

    @staticmethod
    def to_object(record: RouteRecord) -> dict[str, Any]:
        extra = {"updated_at": record.updated_at, "version": record.version}
        return {
            **_api_object("distillery.route", record.id, record.created_at),
            **extra,
            **record.body,
        }

    # --- changing --------------------------------------------------------------------------------
    def create(self, body: Any, *, actor: str) -> dict[str, Any]:
        body = dict(body) if isinstance(body, dict) else body
        force = _pop_force(body)
        spec = parse_params(RouteSpec, body)
        self._validate(spec, route_id=None)
        events: list[dict[str, Any]] = []
        if spec.mode.student_answers:
            events.append(self._gate_event(spec, None, force=force, actor=actor))
        created: dict[str, Any] = {
            "type": "created",
            "actor": actor,
            "mode": spec.mode,
            "student": spec.student,
        }
        if spec.mode.splits_traffic:
            created["percent"] = spec.percent
        route_id = self.repo.create(spec.name, spec.mode, _dump(spec), created)
        for event in events:
            self.repo.add_event(route_id, event)
        self.reload()
        return self.get(route_id)

    def update(self, route_id: str, body: Any, *, actor: str) -> dict[str, Any]:
        current = self.repo.get(route_id)
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.")
        body = dict(body)
        force = _pop_force(body)
        if "name" in body and body["name"] != current.name:
            raise InvalidRequestError("A route's name cannot change.", param="name")
        spec = parse_params(RouteSpec, {**current.body, **body})
        self._validate(spec, route_id=route_id)
        before = RouteSpec.model_validate(current.body)
        entering = spec.mode.student_answers and (
            not before.mode.student_answers or spec.student != before.student
        )
        if entering:
            self.repo.add_event(
                route_id, self._gate_event(spec, route_id, force=force, actor=actor)
            )
        changed = sorted(k for k in body if body[k] != current.body.get(k))
        event: dict[str, Any] = {"type": "updated", "actor": actor, "changed": changed}
        if spec.mode != before.mode:
            event |= {"type": "mode_changed", "from": before.mode, "to": spec.mode}
            if spec.mode.splits_traffic:
                event["percent"] = spec.percent
        self.repo.update(
            route_id,
            body=_dump(spec),
            mode=spec.mode,
            event=event,
            expected_version=current.version,
        )
        if spec.student != before.student or spec.match != before.match:
            self.repo.cache_clear(route_id=route_id)
        self.reload()
        return self.get(route_id)

    def promote(
        self,
        route_id: str,
        *,
        mode: str,
        percent: float | None = None,
        force: bool = False,
        actor: str,
    ) -> dict[str, Any]:
        target = _target(mode, PROMOTE_TARGETS, "Promote")
        change: dict[str, Any] = {"mode": target, "force": force}
        if percent is not None:
            change["percent"] = percent
        elif not target.splits_traffic:
            change["percent"] = 100.0
        return self.update(route_id, change, actor=actor)

    def rollback(
        self, route_id: str, *, mode: str, reason: str | None, actor: str
    ) -> dict[str, Any]:
        target = _target(mode, ROLLBACK_TARGETS, "Rollback")
        current = self.repo.get(route_id)
        spec = RouteSpec.model_validate({**current.body, "mode": target})
        event = {
            "type": "rolled_back",
            "actor": actor,
            "from": current.body.get("mode"),
            "to": target,
            "reason": reason,
        }
        self.repo.update(route_id, body=_dump(spec), mode=target, event=event)
        self.reload()
        return self.get(route_id)

    async def auto_rollback(self, route_id: str, version: int, breach: dict[str, Any]) -> None:
        """The gateway saw the online pass rate fall below the floor: back to a safe mode."""
        await asyncio.to_thread(self._auto_rollback, route_id, version, breach)

    def _auto_rollback(self, route_id: str, version: int, breach: dict[str, Any]) -> None:
        try:
            current = self.repo.get(route_id)
        except DistilleryError:
            return  # deleted meanwhile
        spec = RouteSpec.model_validate(current.body)
        if not spec.mode.student_answers:
            return
        target = spec.rollback.to
        reason = (
            f"online pass rate {breach['pass_rate']:.1%} over the last {breach['window']} graded "
            f"answers is below the floor {breach['floor']:.1%}"
        )
        event = {
            "type": "rolled_back",
            "actor": "system:rollback",
            "from": spec.mode,
            "to": target,
            "reason": reason,
            **{k: breach[k] for k in ("pass_rate", "floor", "window")},
        }
        new = RouteSpec.model_validate({**current.body, "mode": target})
        try:
            self.repo.update(
                route_id, body=_dump(new), mode=target, event=event, expected_version=version
            )
        except ConflictError:
            return  # someone changed it first: their change stands
        self.reload()

    def delete(self, route_id: str) -> dict[str, Any]:
        self.repo.delete(route_id)
        self.reload()
        return {"id": route_id, "object": "distillery.route.deleted", "deleted": True}

    # --- validation ------------------------------------------------------------------------------
    def _validate(self, spec: RouteSpec, *, route_id: str | None) -> None:
        for param, model in (("match.model", spec.match.model), ("student", spec.student)):
            try:
                self.providers.route(model)
            except DistilleryError:
                raise InvalidRequestError(
                    f"No provider serves the model {model!r}.", param=param, code="model_not_found"
                ) from None
        for i, raw in enumerate(spec.graders):
            config, blocking, rate = route_fields(raw)
            if not 0 <= rate <= 1:
                raise InvalidRequestError(
                    "sample_rate must be within 0..1.", param=f"graders[{i}].sample_rate"
                )
            self.grader_factory(config, f"graders[{i}]")
            if blocking and self.judge_check is not None:
                self.judge_check(config, f"graders[{i}]")
        pairs = spec.match.pairs()
        for other in self.repo.all():
            if other.id == route_id:
                continue
            theirs = RouteSpec.model_validate(other.body).match
            if theirs.model == spec.match.model and _overlaps(pairs, theirs.pairs()):
                raise ConflictError(
                    f"Route {other.name!r} ({other.id}) already matches this traffic.",
                    param="match",
                    code="route_overlap",
                )

    # --- the parity gate -------------------------------------------------------------------------
    def check_gate(self, spec: RouteSpec, route_id: str | None) -> dict[str, Any]:
        """The gate's decision and its numbers (nothing is changed)."""
        gate = spec.gate
        threshold = gate.min_percent_of_teacher
        decision: dict[str, Any] = {
            "allowed": False,
            "threshold_percent_of_teacher": threshold,
            "offline": None,
            "shadow": None,
            "reasons": [],
        }
        if not gate.teacher_run or not gate.student_run:
            decision["reasons"].append(
                "no comparison: set gate.teacher_run and gate.student_run (completed eval runs "
                "of the teacher and of the student on the same held-out items)"
            )
            return decision
        decision["offline"] = offline = self._offline(spec, gate.teacher_run, gate.student_run)
        if offline.get("problem"):
            decision["reasons"].append(offline["problem"])
        else:
            lower = (
                offline["percent_of_teacher_ci"][0] if offline["percent_of_teacher_ci"] else None
            )
            if lower is None or lower < threshold:
                decision["reasons"].append(
                    f"student at {_pct(offline['percent_of_teacher'])} of the teacher, lower "
                    f"bound {_pct(lower)} < {threshold:g}%"
                )
        if route_id is not None:
            verdicts = self.repo.graded(route_id, limit=MAX_VERDICTS, shadow=True)
            agreement = sum(verdicts) / len(verdicts) if verdicts else 0.0
            counted = len(verdicts) >= gate.min_shadow_pairs
            required = (
                gate.min_shadow_agreement if gate.min_shadow_agreement is not None else threshold
            )
            decision["shadow"] = {
                "pairs": len(verdicts),
                "agreed": sum(verdicts),
                "agreement": agreement if verdicts else None,
                "required_pairs": gate.min_shadow_pairs,
                "required_agreement_percent": required,
                "counted": counted,
            }
            if counted and 100 * agreement < required:
                decision["reasons"].append(
                    f"shadow agreement {agreement:.1%} over {len(verdicts)} pairs < {required:g}%"
                )
        decision["allowed"] = not decision["reasons"]
        return decision

    def _offline(self, spec: RouteSpec, teacher_run: str, student_run: str) -> dict[str, Any]:
        comparison = self.compare([teacher_run, student_run], teacher_run)
        runs = {r["id"]: r for r in comparison["runs"]}
        found: dict[str, Any] = {"teacher_run": teacher_run, "student_run": student_run}
        for role, run_id in (("teacher", teacher_run), ("student", student_run)):
            if runs[run_id].get("status") != "completed":
                found["problem"] = f"the {role} run {run_id} is {runs[run_id].get('status')}"
                return found
        model = runs[student_run].get("model")
        if model is not None and model != spec.student:
            found["problem"] = f"the student run evaluates {model}, not {spec.student}"
            return found
        side = next(s for s in comparison["overall"]["runs"] if s["run_id"] == student_run)
        base = next(s for s in comparison["overall"]["runs"] if s["run_id"] == teacher_run)
        found |= {
            "items": side["items"],
            "matched_items": runs[student_run].get("matched_items"),
            "teacher_pass_rate": base["pass_rate"],
            "student_pass_rate": side["pass_rate"],
            "percent_of_teacher": side["percent_of_baseline"],
            "percent_of_teacher_ci": side["percent_of_baseline_ci"],
        }
        return found

    def _gate_event(
        self, spec: RouteSpec, route_id: str | None, *, force: bool, actor: str
    ) -> dict[str, Any]:
        """Decide the gate; a refusal (unless forced) is recorded and raised as a 409."""
        decision = self.check_gate(spec, route_id)
        event = {"type": "gate_passed", "actor": actor, "to": spec.mode, "decision": decision}
        if decision["allowed"]:
            return event
        if force:
            return event | {"type": "gate_bypassed"}
        if route_id is not None:
            self.repo.add_event(route_id, event | {"type": "gate_refused"})
        raise GateRefused(
            f"The parity gate refuses mode '{spec.mode}': " + "; ".join(decision["reasons"]),
            decision,
        )

    # --- live stats ------------------------------------------------------------------------------
    def gate(self, route_id: str) -> dict[str, Any]:
        """What the gate decides for the route now, as if it were promoted (changes nothing)."""
        spec = RouteSpec.model_validate(self.repo.get(route_id).body)
        return {"object": "distillery.route_gate", "route_id": route_id} | self.check_gate(
            spec, route_id
        )

    def timeline(self, route_id: str, *, limit: int = TIMELINE_LIMIT) -> dict[str, Any]:
        """The route's phases (who answered in each mode, fallbacks, online pass rates with
        intervals, realised cost and savings) and its newest ``limit`` requests in order, with
        the events a chart marks (``routing.timeline``)."""
        self.before_read()
        self.repo.get(route_id)
        events = [_event_object(e) for e in self.repo.history(route_id)]
        outcomes = self.repo.outcomes(route_id, limit=limit)
        phases, requests = timeline.history(events, outcomes)
        return {
            "object": "distillery.route_timeline",
            "route_id": route_id,
            "phases": [p.to_dict() for p in phases],
            "requests": requests,
            "marks": timeline.marks(events, requests, phases),
            "truncated": len(outcomes) == limit,
        }

    def stats(self, route_id: str) -> dict[str, Any]:
        self.before_read()
        record = self.repo.get(route_id)
        spec = RouteSpec.model_validate(record.body)
        totals = self.repo.outcome_totals(route_id)
        by_served: dict[str, int] = {}
        by_model: dict[str, int] = {}
        spent = {"teacher": [0.0, 0], "student": [0.0, 0]}
        saved = 0.0
        for row in totals:
            if row["shadow"] and row["served_by"] == "teacher":
                by_served["teacher"] = by_served.get("teacher", 0) + row["requests"]
            else:
                by_served[row["served_by"]] = by_served.get(row["served_by"], 0) + row["requests"]
            by_model[row["model"]] = by_model.get(row["model"], 0) + row["requests"]
            side = "student" if row["served_by"] == "student" else "teacher"
            if row["served_by"] in ("teacher", "student") and row["costed"]:
                spent[side][0] += float(row["cost_usd"] or 0.0)
                spent[side][1] += int(row["costed"])
            saved += float(row["saved_usd"] or 0.0)
        student_answers = by_served.get("student", 0) + by_served.get("fallback", 0)
        online = self.repo.graded(route_id, limit=MAX_VERDICTS, shadow=False)
        shadow = self.repo.graded(route_id, limit=MAX_VERDICTS, shadow=True)
        window = online[-spec.rollback.window :]
        training = self.training_costs().get(spec.student, 0.0)
        per_1k = {side: 1000 * total / n if n else None for side, (total, n) in spent.items()}
        first = min((r["first_at"] for r in totals if r["first_at"]), default=None)
        days = max((time.time() - first) / 86400, 1 / 24) if first is not None else None
        daily = saved / days if days else 0.0
        return {
            "object": "distillery.route_stats",
            "route_id": route_id,
            "mode": spec.mode,
            "requests": sum(by_served.values()),
            "by_served": by_served,
            "by_model": by_model,
            "fallback_rate": by_served.get("fallback", 0) / student_answers
            if student_answers
            else None,
            "fallback_reasons": self.repo.reasons(route_id),
            "online": _rate_block(online),
            "shadow": _rate_block(shadow),
            "window": {
                "size": spec.rollback.window,
                "graded": len(window),
                "pass_rate": sum(window) / len(window) if window else None,
                "floor": spec.rollback.floor,
            },
            "costs": {
                "teacher_cost_per_1k": per_1k["teacher"],
                "student_cost_per_1k": per_1k["student"],
                "saved_usd": round(saved, 9),
                "training_cost_usd": training,
                "saved_per_day_usd": round(daily, 9),
                "paid_back": saved >= training if training else None,
                "payback_days": round(training / daily, 3) if training and daily > 0 else None,
                "since": first,
            },
        }


def _rate_block(verdicts: list[bool]) -> dict[str, Any]:
    return {
        "graded": len(verdicts),
        "passed": sum(verdicts),
        "pass_rate": sum(verdicts) / len(verdicts) if verdicts else None,
        "pass_rate_ci": pass_rate_interval(verdicts) if verdicts else None,
    }


def _api_object(kind: str, object_id: str, created_at: int) -> dict[str, Any]:
    """The fields every object of the API begins with."""
    return {"id": object_id, "object": kind, "created_at": created_at}


def _event_object(event: RouteEvent) -> dict[str, Any]:
    head = _api_object("distillery.route.event", event.id, event.created_at)
    return {**head, "route_id": event.route_id, **event.body, "type": event.type}


def _target(mode: str, allowed: tuple[RouteMode, ...], move: str) -> RouteMode:
    """``mode`` (from a request) as the mode a promotion or rollback moves a route to."""
    if mode not in allowed:
        raise InvalidRequestError(
            f"{move} moves a route to {either(allowed)}.", param="mode", code="invalid_value"
        )
    return RouteMode(mode)


def _pop_force(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    force = body.pop("force", False)
    if not isinstance(force, bool):
        raise InvalidRequestError("'force' must be a boolean.", param="force")
    return force


def _dump(spec: RouteSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}%"

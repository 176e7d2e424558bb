"""Route pages: every route with its live numbers, and one route's timeline (who answered each
request through its phases), traffic, grades, costs and events, with a rollback button (the
emergency stop: it needs no gate)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from distillery.routing.timeline import chart as timeline_chart
from distillery.routing.timeline import phase_label
from distillery.web.auth import LOGIN
from distillery.web.contexts import (
    PhaseLine,
    RateLine,
    RouteEventLine,
    RouteLine,
    RoutePage,
    RoutesPage,
)
from distillery.web.render import PageRoute, redirect, render, services_of, url_with
from distillery.wire.route_modes import RouteMode

router = APIRouter(route_class=PageRoute, dependencies=[LOGIN], include_in_schema=False)


def _match(route: dict[str, Any]) -> str:
    pairs = dict(route["match"].get("metadata") or {})
    if route["match"].get("prompt_version"):
        pairs["prompt_version"] = route["match"]["prompt_version"]
    return ", ".join(f"{k}={v}" for k, v in sorted(pairs.items())) or "all traffic"


def route_line(route: dict[str, Any], stats: dict[str, Any]) -> RouteLine:
    return RouteLine(
        id=route["id"],
        name=route["name"],
        teacher=route["match"]["model"],
        match=_match(route),
        student=route["student"],
        mode=RouteMode(route["mode"]),
        percent=float(route["percent"]),
        requests=int(stats["requests"]),
        fallback_rate=stats["fallback_rate"],
        online_pass_rate=stats["online"]["pass_rate"],
        saved_usd=float(stats["costs"]["saved_usd"]),
    )


@router.get("/routes")
def routes_page(request: Request, after: str | None = None) -> Response:
    svc = services_of(request).routes
    data, has_more = svc.page(after=after, limit=50, order="asc")
    lines = [route_line(r, svc.stats(r["id"])) for r in data]
    next_url = url_with("/routes", {"after": data[-1]["id"]}) if has_more and data else None
    return render(request, "routes.html", RoutesPage(lines, next_url), title="Routes", nav="routes")


def _rate(label: str, block: dict[str, Any]) -> RateLine:
    low, high = block["pass_rate_ci"] or (None, None)
    return RateLine(label, block["graded"], block["pass_rate"], low, high)


def _event_line(e: dict[str, Any]) -> RouteEventLine:
    change = f"{e['from']} → {e['to']}" if e.get("from") and e.get("to") else e.get("to") or ""
    reason = e.get("reason") or "; ".join((e.get("decision") or {}).get("reasons") or [])
    return RouteEventLine(e["created_at"], e["type"], str(e.get("actor") or ""), change, reason)


def _gate_sentence(route: dict[str, Any]) -> str:
    gate = route["gate"]
    if not gate.get("teacher_run") or not gate.get("student_run"):
        return "No comparison set: canary and full are refused until one is."
    return (
        f"Student run {gate['student_run']} against teacher run {gate['teacher_run']}: at least "
        f"{gate['min_percent_of_teacher']:g}% of the teacher at the lower end of the 95% "
        f"interval, and a shadow agreement of "
        f"{gate.get('min_shadow_agreement') or gate['min_percent_of_teacher']:g}% over "
        f"{gate['min_shadow_pairs']}+ pairs."
    )


def _phase_line(phase: dict[str, Any]) -> PhaseLine:
    shadow = phase["mode"] == "shadow"
    graded, passed = (
        (phase["shadow_graded"], phase["shadow_passed"])
        if shadow
        else (phase["online_graded"], phase["online_passed"])
    )
    ci = phase["shadow_agreement_ci" if shadow else "online_pass_rate_ci"]
    served = phase["served"]
    label = "agrees with the teacher" if shadow else "passes"
    return PhaseLine(
        label=phase_label(phase),
        cause=phase["cause"],
        started_at=phase["started_at"],
        requests=phase["requests"],
        teacher=served.get("teacher", 0),
        student=served.get("student", 0),
        fallback=served.get("fallback", 0),
        rate=RateLine(
            label,
            graded,
            passed / graded if graded else None,
            ci[0] if ci else None,
            ci[1] if ci else None,
        ),
        cost_per_1k=phase["cost_per_1k"],
        saved_usd=float(phase["saved_usd"]),
    )


@router.get("/routes/{route_id}")
def route_page(request: Request, route_id: str) -> Response:
    svc = services_of(request).routes
    route = svc.get(route_id)
    stats = svc.stats(route_id)
    events, _ = svc.events(route_id, after=None, limit=100)
    timeline = svc.timeline(route_id)
    costs = stats["costs"]
    page = RoutePage(
        route=route_line(route, stats),
        served=sorted(stats["by_served"].items()),
        models=sorted(stats["by_model"].items()),
        rates=[
            _rate("Student answers to users", stats["online"]),
            _rate("Shadow answers against the teacher", stats["shadow"]),
        ],
        fallback_reasons=sorted(stats["fallback_reasons"].items()),
        graders=[
            (str(g.get("name") or g.get("type")), str(g.get("type")), bool(g.get("blocking")))
            for g in route["graders"]
        ],
        gate=_gate_sentence(route),
        floor=route["rollback"]["floor"],
        window=int(route["rollback"]["window"]),
        teacher_cost_per_1k=costs["teacher_cost_per_1k"],
        student_cost_per_1k=costs["student_cost_per_1k"],
        training_cost_usd=float(costs["training_cost_usd"]),
        payback_days=costs["payback_days"],
        events=[_event_line(e) for e in events],
        spec_json=json.dumps(
            {k: route[k] for k in ("match", "student", "graders", "gate", "rollback", "shadow")},
            ensure_ascii=False,
            indent=2,
        ),
        phases=[_phase_line(p) for p in timeline["phases"]],
        timeline_chart=timeline_chart(timeline),
    )
    return render(request, "route.html", page, title=f"Route {route['name']}", nav="routes")


@router.post("/routes/{route_id}/rollback")
async def rollback_action(
    request: Request, route_id: str, mode: Annotated[str, Form()] = RouteMode.SHADOW
) -> Response:
    svc = services_of(request).routes
    await run_in_threadpool(
        svc.rollback, route_id, mode=mode, reason="from the dashboard", actor="dashboard"
    )
    return redirect(f"/routes/{route_id}", flash=f"Rolled back to {mode}.")

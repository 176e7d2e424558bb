"""A route's history as phases: who answered the users while the route was in each mode.

A route moves through modes (``shadow`` → ``canary`` → ``full``, and back by a rollback); each
move is an event. ``phases`` cuts the route's outcomes (one per routed request, written with the
mode the request was served in) into those stretches and counts, per phase, the requests the
teacher, the student, a fallback and the cache answered, the shadow pairs and the online verdicts
with their intervals, and what the answers cost and saved: realised figures of routed traffic,
not projections; the same history a request at a time feeds the timeline chart of the demo's
report and of the dashboard's route page.

An outcome belongs to the latest phase of its own mode that had begun when it was written (a
shadow pair graded after the route moved on still counts for the shadow phase it was served in).
Times are whole seconds: when two phases of its mode began by that second (a route moved through
its modes within one), the order the outcomes were written decides (the phase reached so far).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from distillery.charts import timeline_chart
from distillery.evals.compare import pass_rate_interval

# the events that start a phase, and the mode they move to
_MOVES = ("created", "mode_changed", "rolled_back")
# the events the timeline marks (a move, or the gate's decision)
MARKED = frozenset({"gate_passed", "gate_refused", "gate_bypassed", "rolled_back"})


@dataclass
class Phase:
    mode: str
    started_at: int
    cause: str  # the event that began it: created, mode_changed or rolled_back
    actor: str | None = None
    percent: float | None = None  # canary: the student's share
    ended_at: int | None = None
    requests: int = 0
    served: dict[str, int] = field(default_factory=dict)  # teacher/student/fallback/cache
    fallback_reasons: dict[str, int] = field(default_factory=dict)
    shadow_graded: int = 0
    shadow_passed: int = 0
    online_graded: int = 0
    online_passed: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        student = self.served.get("student", 0) + self.served.get("fallback", 0)
        online = [True] * self.online_passed + [False] * (self.online_graded - self.online_passed)
        shadow = [True] * self.shadow_passed + [False] * (self.shadow_graded - self.shadow_passed)
        return asdict(self) | {
            "fallback_rate": self.served.get("fallback", 0) / student if student else None,
            "online_pass_rate": _rate(online),
            "online_pass_rate_ci": pass_rate_interval(online) if online else None,
            "shadow_agreement": _rate(shadow),
            "shadow_agreement_ci": pass_rate_interval(shadow) if shadow else None,
            "cost_per_1k": 1000 * self.cost_usd / self.requests if self.requests else None,
        }


def history(
    events: Sequence[Mapping[str, Any]], outcomes: Sequence[Mapping[str, Any]]
) -> tuple[list[Phase], list[dict[str, Any]]]:
    """The route's phases from its events (oldest first) and outcomes (in the order written),
    and each outcome as a request of the timeline: when, who answered, the student's verdict and
    the index of its phase."""
    found: list[Phase] = []
    for event in events:
        if event["type"] not in _MOVES:
            continue
        mode = event.get("to") or event.get("mode")
        if mode is None or (found and found[-1].mode == mode and event["type"] != "created"):
            continue
        if found:
            found[-1].ended_at = int(event["created_at"])
        found.append(
            Phase(
                mode=str(mode),
                started_at=int(event["created_at"]),
                cause=str(event["type"]),
                actor=event.get("actor"),
                percent=event.get("percent"),
            )
        )
    requests: list[dict[str, Any]] = []
    reached = 0  # the latest phase an outcome was assigned to, in the order they were written
    for outcome in outcomes:
        index = _phase_of(found, outcome, reached)
        reached = max(reached, index or 0)
        served = "teacher" if outcome["shadow"] else str(outcome["served_by"])
        requests.append(
            {
                "at": int(outcome["created_at"]),
                "mode": outcome["mode"],
                "served_by": served,
                "shadow": bool(outcome["shadow"]),
                "passed": outcome.get("passed"),
                "phase": index,
            }
        )
        if index is None:
            continue
        phase = found[index]
        phase.requests += 1
        phase.served[served] = phase.served.get(served, 0) + 1
        if served == "fallback" and outcome.get("reason"):
            reason = str(outcome["reason"])
            phase.fallback_reasons[reason] = phase.fallback_reasons.get(reason, 0) + 1
        if outcome.get("passed") is not None:
            if outcome["shadow"]:
                phase.shadow_graded += 1
                phase.shadow_passed += bool(outcome["passed"])
            else:
                phase.online_graded += 1
                phase.online_passed += bool(outcome["passed"])
        phase.cost_usd += float(outcome.get("cost_usd") or 0.0)
        phase.saved_usd += float(outcome.get("saved_usd") or 0.0)
    return found, requests


def _phase_of(found: Sequence[Phase], outcome: Mapping[str, Any], reached: int) -> int | None:
    """The latest phase of the outcome's mode begun when it was written (else the first of its
    mode, else the first phase). Phases begun in the very second it was written may have begun
    after it: of those and the latest begun before that second, the first not behind the phase
    ``reached`` so far (else the latest: a late outcome)."""
    at = int(outcome["created_at"])
    same = [i for i, p in enumerate(found) if p.mode == outcome["mode"]]
    begun = [i for i in same if found[i].started_at <= at]
    if begun:
        before = [i for i in begun if found[i].started_at < at]
        maybe = begun[begun.index(before[-1]) :] if before else begun
        return next((i for i in maybe if i >= reached), maybe[-1])
    if same:
        return same[0]
    return 0 if found else None


def marks(
    events: Sequence[Mapping[str, Any]],
    requests: Sequence[Mapping[str, Any]],
    found: Sequence[Phase] = (),
) -> list[dict[str, Any]]:
    """The events the chart marks, each placed where it took effect: a gate that let the route
    move, or a rollback, at the first request of the phase it opened; any other (a refusal) at
    the first request written at or after it."""
    out = []
    for event in events:
        if event["type"] not in MARKED:
            continue
        at = int(event["created_at"])
        moved = "rolled_back" if event["type"] == "rolled_back" else "mode_changed"
        opened = next(
            (k for k, p in enumerate(found) if p.cause == moved and p.started_at >= at),
            None,
        )
        if event["type"] == "gate_refused":
            opened = None
        index = next((i for i, r in enumerate(requests) if _after(r, opened, at)), len(requests))
        out.append({"type": event["type"], "at": at, "index": index, "to": event.get("to")})
    return out


def _after(request: Mapping[str, Any], phase: int | None, at: int) -> bool:
    """Whether ``request`` belongs to ``phase`` or a later one (with no phase: written at or
    after ``at``)."""
    if phase is None:
        return bool(request["at"] >= at)
    return request["phase"] is not None and request["phase"] >= phase


def _rate(verdicts: list[bool]) -> float | None:
    return sum(verdicts) / len(verdicts) if verdicts else None


_MARK_LABELS = {
    "gate_passed": "gate passed",
    "gate_refused": "gate refused",
    "gate_bypassed": "gate bypassed",
    "rolled_back": "rolled back",
}


def phase_label(phase: Mapping[str, Any]) -> str:
    """``canary 50%``, ``full``, ``shadow``."""
    percent = phase.get("percent")
    if phase["mode"] == "canary" and percent is not None:
        return f"canary {percent:g}%"
    return str(phase["mode"])


def chart(timeline: Mapping[str, Any], *, title: str = "Who answered each request") -> str:
    """The timeline chart (an SVG string) of a route's ``timeline`` object: a lane per side,
    the phases shaded, the gate's decisions and rollbacks marked."""
    requests = timeline["requests"]
    lanes = ["teacher", "student", "fallback"]
    if any(r["served_by"] == "cache" for r in requests):
        lanes.append("cache")
    bands = []
    for index, phase in enumerate(timeline["phases"]):
        first = next((i for i, r in enumerate(requests) if r["phase"] == index), None)
        if first is not None:
            bands.append((first, phase_label(phase)))
    marks = [(m["index"], _MARK_LABELS.get(m["type"], m["type"])) for m in timeline["marks"]]
    return timeline_chart(
        lanes, [r["served_by"] for r in requests], title=title, bands=bands, marks=marks
    )

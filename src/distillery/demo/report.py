"""The demo's report: a Rich table in the terminal and an HTML page with SVG charts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from rich import box
from rich.console import Console
from rich.table import Table

from distillery.charts import bar_chart, line_chart
from distillery.demo.rollout import RolloutReport
from distillery.demo.run import RFT_LABEL, SFT_LABEL, DemoReport, RftSummary, RunResult
from distillery.routing.timeline import chart as timeline_chart
from distillery.routing.timeline import phase_label


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _money(x: float) -> str:
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def percent_of_teacher(report: DemoReport, result: RunResult) -> float | None:
    teacher = report.results[0].accuracy
    return result.accuracy / teacher if teacher else None


def payback_text(report: DemoReport) -> str:
    if report.payback_days is None:
        return "never (no saving)"
    minutes = report.payback_days * 24 * 60
    if minutes < 120:
        return f"{minutes:.1f} minutes"
    if report.payback_days < 2:
        return f"{report.payback_days * 24:.1f} hours"
    return f"{report.payback_days:.1f} days"


def rft_text(rft: RftSummary) -> str:
    """One line on the reinforcement stage: how long, on what, and the reward's course."""
    reward = "category, schema" + (", the reason's language" if rft.language_reward else "")
    course = ""
    if rft.reward_before is not None and rft.reward_last is not None:
        course = f"; mean reward {rft.reward_before:.3f} before, {rft.reward_last:.3f} at the end"
    prompts = f" on {rft.prompts} prompts" if rft.prompts else ""
    kept = ""
    if rft.kept_step is not None and rft.validation:
        scores = dict(rft.validation)
        which = "the supervised student" if rft.kept_step == 0 else f"step {rft.kept_step}"
        kept = (
            f" Kept {which}: validation reward {scores[0]:.3f} before, "
            f"{scores.get(rft.kept_step, float('nan')):.3f} kept."
        )
    return (
        f"Reinforcement stage ({reward} as the reward): {rft.steps} steps{prompts} in "
        f"{rft.seconds / 60:.1f} min{course}.{kept}"
    )


def _short(label: str) -> str:
    return label.split(" (")[0]


def print_report(report: DemoReport, console: Console) -> None:
    """The results table and a few lines of figures; fits an 80-column terminal."""
    table = Table(
        title="distillery demo: inquiry routing, held-out test split",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("", "accuracy", "ja", "en", "JSON ok", "% teacher", "$/1k req"):
        table.add_column(col, justify="right" if col else "left", no_wrap=True)
    checkpoints = [r for _, r in report.checkpoints]  # between the base and the final student
    for r in [*report.results[:2], *checkpoints, *report.results[2:]]:
        share = percent_of_teacher(report, r)
        student = r.label in (SFT_LABEL, RFT_LABEL)  # one served student, before and after RFT
        cost = (
            report.teacher_cost_per_1k
            if r is report.results[0]
            else (report.student_cost_per_1k if student else None)
        )
        style = "bold" if r is report.results[-1] else None
        table.add_row(
            _short(r.label),
            _pct(r.accuracy),
            _pct(r.per_lang.get("ja", 0.0)),
            _pct(r.per_lang.get("en", 0.0)),
            _pct(r.valid_json),
            "-" if share is None else _pct(share),
            "-" if cost is None else _money(cost),
            style=style,
        )
    console.print(table)
    for r in report.results:
        console.print(f"  {_short(r.label)}: [dim]{r.model}[/dim]", overflow="fold")
    tokens = [
        f"{_short(r.label)} {r.prompt_tokens_per_request + r.completion_tokens_per_request:.0f}"
        for r in report.results
    ]
    console.print("  tokens/request: " + ", ".join(tokens), overflow="fold")
    schema = [f"{_short(r.label)} {_pct(r.schema)}" for r in report.results]
    console.print("  matches the schema: " + ", ".join(schema), overflow="fold")
    corrected = (
        f"{report.corrected_examples} teacher answers corrected by review"
        if report.corrected_examples
        else "teacher answers used as they are (no corrections)"
    )
    console.print(
        f"Trained on {report.train_examples} examples ({report.validation_examples} validation; "
        f"{corrected}), {report.trained_tokens:,} tokens in "
        f"{report.training_seconds / 60:.1f} min; training cost {_money(report.training_cost_usd)}.",
    )
    if report.hyperparameters:
        h = report.hyperparameters
        console.print(
            f"Recipe: {h['n_epochs']} epoch(s) at most, batch {h['batch_size']}, learning-rate "
            f"multiplier {h['learning_rate_multiplier']}"
            + (" (automatic)" if report.options.n_epochs == "auto" else "")
            + (f". {report.selection}" if report.selection else "."),
            overflow="fold",
        )
    if report.rft is not None:
        console.print(rft_text(report.rft), overflow="fold")
    console.print(
        f"Payback at {report.options.requests_per_day:,.0f} requests/day: "
        f"[bold]{payback_text(report)}[/bold] (saves {_money(report.daily_saving)}/day)."
    )
    if report.rollout is not None:
        print_rollout(report.rollout, console)
    if report.html_path:
        console.print(f"HTML report: {report.html_path}", overflow="fold")


# -- the rollout -------------------------------------------------------------------------------


def interval(rate: float | None, ci: list[float] | None) -> str:
    """``96.7% [88.6-99.1]``; ``-`` when nothing was graded."""
    if rate is None:
        return "-"
    if not ci:
        return _pct(rate)
    return f"{100 * rate:.1f}% [{100 * ci[0]:.0f}-{100 * ci[1]:.0f}]"


def gate_sentence(gate: dict[str, Any]) -> str:
    """The gate's decision and its numbers, in one sentence."""
    offline = gate.get("offline") or {}
    parts = []
    if offline.get("percent_of_teacher") is not None:
        low = (offline.get("percent_of_teacher_ci") or [None])[0]
        parts.append(
            f"held-out: student at {offline['percent_of_teacher']:.1f}% of the teacher"
            + (f" (lower bound {low:.1f}%)" if low is not None else "")
        )
    shadow = gate.get("shadow") or {}
    if shadow.get("agreement") is not None:
        parts.append(f"shadow agreement {_pct(shadow['agreement'])} over {shadow['pairs']} pairs")
    verdict = "passed" if gate.get("allowed") else "refused"
    need = f"needs {gate.get('threshold_percent_of_teacher', 0):g}%"
    text = f"gate {verdict} ({need}): " + "; ".join(parts)
    if not gate.get("allowed") and gate.get("reasons"):
        text += ". Refused because " + "; ".join(gate["reasons"])
    return text


def event_sentence(event: dict[str, Any]) -> str:
    kind = event["type"]
    if kind == "created":
        return f"created in {event.get('mode')}"
    if kind == "mode_changed":
        to = phase_label({"mode": event.get("to"), "percent": event.get("percent")})
        return f"{event.get('from')} -> {to}"
    if kind == "rolled_back":
        why = f": {event['reason']}" if event.get("reason") else ""
        return f"rolled back {event.get('from')} -> {event.get('to')} by {event.get('actor')}{why}"
    return str(kind).replace("_", " ")


def rollout_summary(rollout: RolloutReport) -> dict[str, Any]:
    """The rollout as JSON (``distillery demo --json``)."""
    return {
        "route_id": rollout.route_id,
        "student": rollout.student,
        "recorded_teacher": rollout.recorded_teacher,
        "promoted": rollout.promoted,
        "final_mode": rollout.final_mode,
        "seconds": rollout.seconds,
        "capacity": rollout.capacity,
        "gate": rollout.gate,
        "sent": [s.__dict__ for s in rollout.sent],
        "phases": rollout.timeline["phases"],
        "stats": rollout.stats,
        "events": [e["type"] for e in rollout.events],
    }


def print_rollout(rollout: RolloutReport, console: Console) -> None:
    """Who answered the routed requests in each phase; the gate; the incident; the savings."""
    teacher = f"the recorded {rollout.teacher}" if rollout.recorded_teacher else rollout.teacher
    console.print(
        f"\n[bold]Rollout[/bold]: {sum(s.requests for s in rollout.sent)} requests sent to "
        f"{rollout.teacher} through the gateway ({teacher} answers as the teacher); route "
        f"{rollout.route_name}, {rollout.seconds:.0f} s.",
        overflow="fold",
    )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for col in ("phase", "requests", "teacher", "student", "fallback", "pass rate", "$/1k req"):
        table.add_column(col, justify="left" if col == "phase" else "right", no_wrap=True)
    for phase in rollout.timeline["phases"]:
        served = phase["served"]
        shadow = phase["mode"] == "shadow"
        rate, ci = (
            (phase["shadow_agreement"], phase["shadow_agreement_ci"])
            if shadow
            else (phase["online_pass_rate"], phase["online_pass_rate_ci"])
        )
        cost = phase["cost_per_1k"]
        table.add_row(
            phase_label(phase),
            str(phase["requests"]),
            str(served.get("teacher", 0)),
            str(served.get("student", 0)),
            str(served.get("fallback", 0)),
            interval(rate, ci),
            "-" if cost is None else _money(cost),
        )
    console.print(table)
    console.print("  pass rate: the student's answers graded (in shadow: against the teacher's)")
    console.print("  " + gate_sentence(rollout.gate), overflow="fold")
    burst = next((s for s in rollout.sent if s.stage == "burst"), None)
    if burst is not None:
        served = ", ".join(f"{k} {v}" for k, v in sorted(burst.served.items()))
        console.print(
            f"  incident: {burst.requests} requests at once ({rollout.capacity} fit the student's "
            f"server): {served}; {burst.errors} errors",
            overflow="fold",
        )
    stats = rollout.stats
    online = stats["online"]
    costs = stats["costs"]
    fallback = stats.get("fallback_rate")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(stats["fallback_reasons"].items()))
    console.print(
        f"  fallback rate {'-' if fallback is None else _pct(fallback)}"
        + (f" ({reasons})" if reasons else "")
        + f"; online pass rate {interval(online['pass_rate'], online['pass_rate_ci'])} over "
        f"{online['graded']} answers",
        overflow="fold",
    )
    teacher_1k, student_1k = costs["teacher_cost_per_1k"], costs["student_cost_per_1k"]
    console.print(
        "  realised: teacher "
        + ("-" if teacher_1k is None else _money(teacher_1k))
        + " / 1k requests, student "
        + ("-" if student_1k is None else _money(student_1k))
        + f"; saved {_money(costs['saved_usd'])} on these requests",
        overflow="fold",
    )
    for event in rollout.events:
        if event["type"] in ("created", "mode_changed", "rolled_back", "gate_refused"):
            console.print(f"  - {event_sentence(event)}", overflow="fold")
    ending = {
        "full": "the student answers every request",
        "canary": "the student answers part of the users",
        "shadow": "the teacher answers the users; the student is graded beside it",
    }.get(rollout.final_mode, "the teacher answers the users")
    console.print(f"Route now: [bold]{rollout.final_mode}[/bold] ({ending}).")


def write_html(report: DemoReport, path: Path) -> Path:
    env = Environment(
        loader=PackageLoader("distillery.demo", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    labels = [r.label for r in report.results]
    quality = bar_chart(
        {
            "category accuracy": {r.label: 100 * r.accuracy for r in report.results},
            "valid JSON": {r.label: 100 * r.valid_json for r in report.results},
        },
        title="Quality on the held-out test split (%)",
        y_label="%",
        y_max=100,
        value_format=lambda v: f"{v:.0f}%",
    )
    langs = bar_chart(
        {
            lang: {r.label: 100 * r.per_lang.get(lang, 0.0) for r in report.results}
            for lang in ("ja", "en")
        },
        title="Category accuracy by language (%)",
        y_label="%",
        y_max=100,
        value_format=lambda v: f"{v:.0f}%",
    )
    costs = bar_chart(
        {
            "$ per 1,000 requests": {
                labels[0]: report.teacher_cost_per_1k,
                "distilled student": report.student_cost_per_1k,
            }
        },
        title="Cost per 1,000 requests (USD)",
        y_label="USD",
        value_format=lambda v: f"${v:.4f}",
    )
    loss = line_chart(
        {"train loss": report.loss_curve}, title="Training loss", x_label="step", y_label="loss"
    )
    rollout = report.rollout
    timeline = (
        timeline_chart(rollout.timeline, title="Who answered each routed request")
        if rollout is not None
        else ""
    )
    html = env.get_template("report.html.j2").render(
        report=report,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        charts={
            "quality": Markup(quality),
            "langs": Markup(langs),
            "costs": Markup(costs),
            "loss": Markup(loss),
            "timeline": Markup(timeline),
        },
        rollout=rollout,
        rft_sentence=rft_text(report.rft) if report.rft is not None else None,
        interval=interval,
        gate_sentence=gate_sentence,
        event_sentence=event_sentence,
        phase_label=phase_label,
        clock=lambda t: time.strftime("%H:%M:%S", time.localtime(t)),
        pct=_pct,
        money=_money,
        share=lambda r: percent_of_teacher(report, r),
        payback=payback_text(report),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    report.html_path = path
    return path

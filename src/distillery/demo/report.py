"""The demo's report: a Rich table in the terminal and an HTML page with SVG charts."""

from __future__ import annotations

import time
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from rich import box
from rich.console import Console
from rich.table import Table

from distillery.charts import bar_chart, line_chart
from distillery.demo.run import DemoReport, RunResult


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
        cost = (
            report.teacher_cost_per_1k
            if r is report.results[0]
            else (report.student_cost_per_1k if r.label == "distilled student" else None)
        )
        style = "bold" if r.label == "distilled student" else None
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
    console.print(
        f"Payback at {report.options.requests_per_day:,.0f} requests/day: "
        f"[bold]{payback_text(report)}[/bold] (saves {_money(report.daily_saving)}/day)."
    )
    if report.html_path:
        console.print(f"HTML report: {report.html_path}", overflow="fold")


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
    html = env.get_template("report.html.j2").render(
        report=report,
        generated=time.strftime("%Y-%m-%d %H:%M:%S"),
        charts={
            "quality": Markup(quality),
            "langs": Markup(langs),
            "costs": Markup(costs),
            "loss": Markup(loss),
        },
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

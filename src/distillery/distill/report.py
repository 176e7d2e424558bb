"""The account of one distillation: the data, the three runs side by side, the job, the gate.

:class:`DistillReport` is what ``distillery distill --json`` prints and the API returns;
:meth:`DistillReport.markdown` is the same for a person (written beside it as ``report.md``).
:meth:`DistillReport.verdict` says whether the student is ready for its gate and, when it is far
from the teacher, which criteria fall short and on which examples.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

NEAR_POINTS = 5.0  # a criterion this many points under the teacher is named in the verdict


@dataclass
class RunSummary:
    label: str
    model: str
    run_id: str
    pass_rate: float  # items passing every criterion
    pass_rate_ci: list[float] | None
    percent_of_teacher: float | None
    percent_of_teacher_ci: list[float] | None
    criteria: dict[str, float]  # pass rate per criterion
    items: int
    errored: int
    prompt_tokens_per_request: float
    completion_tokens_per_request: float
    seconds_per_request: float


@dataclass
class CriterionRow:
    name: str
    teacher: float | None
    base: float | None
    student: float | None


@dataclass
class RftStage:
    """The reinforcement stage after the distilled student (``rft``)."""

    job_id: str
    fine_tuned_model: str
    hyperparameters: dict[str, Any]
    selection: str | None  # the step it kept, and why
    training_seconds: float
    routed: bool  # whether the route gates the RFT student (it scored higher on the test split)


@dataclass
class Miss:
    completion_id: str
    question: str
    reference: str
    student: str
    criteria: list[str]


@dataclass
class DistillReport:
    prompt: str
    fingerprint: str
    inventory: dict[str, Any]
    splits: dict[str, int]
    dataset: str
    graders: list[dict[str, Any]]
    runs: list[RunSummary]  # teacher, base student, distilled student (, RFT student)
    criteria: list[CriterionRow]
    misses: list[Miss]
    job_id: str
    fine_tuned_model: str
    hyperparameters: dict[str, Any]
    selection: str | None
    trained_tokens: int
    training_seconds: float
    training_cost_usd: float
    teacher_cost_per_1k: float
    student_cost_per_1k: float
    requests_per_day: float
    daily_saving: float
    payback_days: float | None
    route_id: str | None  # None: the prompt's route serves users already and was left alone
    route_name: str | None
    gate: dict[str, Any]
    min_percent_of_teacher: float
    seconds: float
    notes: list[str] = field(default_factory=list)  # the route's teacher, a route left alone
    files: dict[str, str] = field(default_factory=dict)  # report.json / report.md paths
    rft: RftStage | None = None

    @property
    def student(self) -> RunSummary:
        """The student the route gates: the RFT student when it scored higher, else the
        distilled one."""
        return self.runs[3] if self.rft is not None and self.rft.routed else self.runs[2]

    @property
    def kept_base(self) -> bool:
        """The trainer kept the base weights: no epoch beat the model before training."""
        return (self.selection or "").startswith("No epoch beat the base model")

    @property
    def gate_open(self) -> bool:
        return bool(self.gate.get("allowed"))

    def verdict(self) -> str:
        student = self.student
        share = student.percent_of_teacher
        ci = student.percent_of_teacher_ci
        where = f"{_pct(share)} of the teacher" + (
            f" (95% interval {_pct(ci[0])} to {_pct(ci[1])})" if ci else ""
        )
        if self.gate_open:
            return (
                f"The student reaches {where}: the gate ({self.min_percent_of_teacher:g}% at the "
                f"lower bound) lets route {self.route_name} leave shadow."
            )
        if (
            self.route_id is None
            and share is not None
            and ci
            and ci[0] >= self.min_percent_of_teacher
        ):
            return f"The student reaches {where}, enough for the gate; its route is left alone."
        short = [
            f"{row.name} {_rate(row.student)} vs {_rate(row.teacher)}"
            for row in self.criteria
            if row.teacher is not None
            and row.student is not None
            and 100 * (row.teacher - row.student) >= NEAR_POINTS
        ]
        text = f"The student reaches {where}; the gate needs {self.min_percent_of_teacher:g}% at the lower bound."
        if short:
            text += " Short of the teacher on: " + "; ".join(short) + "."
        if self.misses:
            text += f" {len(self.misses)} example(s) below show where."
        base = self.runs[1]
        if self.kept_base or student.pass_rate < base.pass_rate:
            text += (
                f" The student did not learn the task: {_rate(student.pass_rate)} against "
                f"{_rate(base.pass_rate)} for the base model."
            )
        if self.inventory.get("usable", 0) < 8 * max(int(self.inventory.get("labels") or 0), 1):
            text += (
                " More examples per label would help (the public benchmarks gain most up to 32)."
            )
        return text

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["object"] = "distillery.distillation_report"
        out["verdict"] = self.verdict()
        out["gate_open"] = self.gate_open
        return out

    def markdown(self) -> str:
        inv = self.inventory
        lines = [
            f"# Distillation of prompt `{self.prompt}`",
            "",
            self.verdict(),
            "",
            "## Data",
            "",
            f"- {inv['usable']} usable answers of `{inv['teacher']}`"
            + (f" (prompt version `{inv['prompt_version']}`)" if inv.get("prompt_version") else "")
            + f", {inv['corrected']} of them reviewers' corrections",
            f"- split: {', '.join(f'{k} {v}' for k, v in self.splits.items())} "
            f"(dataset `{self.dataset}`, the test split frozen)",
        ]
        if inv.get("unusable"):
            lines.append(
                f"- {inv['unusable']} answers do not parse as the response format and were left "
                "out: "
                + ", ".join(
                    f"`{u['completion_id']}` ({u['problem']})" for u in inv["unusable_items"][:5]
                )
            )
        lines += [
            f"- graders: {', '.join(g['name'] for g in self.graders)}",
            "",
            "## Held-out test split",
            "",
            "| | model | passes every grader | % of teacher | "
            + " | ".join(row.name for row in self.criteria)
            + " |",
            "|---|---|---|---|" + "---|" * len(self.criteria),
        ]
        for run in self.runs:
            ci = run.pass_rate_ci
            rate = _rate(run.pass_rate) + (f" ({_rate(ci[0])}-{_rate(ci[1])})" if ci else "")
            share = _pct(run.percent_of_teacher) if run.percent_of_teacher is not None else "-"
            cells = " | ".join(_rate(run.criteria.get(row.name)) for row in self.criteria)
            lines.append(f"| {run.label} | `{run.model}` | {rate} | {share} | {cells} |")
        lines += [
            "",
            "## Training",
            "",
            f"- job `{self.job_id}`: {', '.join(f'{k} {v}' for k, v in self.hyperparameters.items())}; "
            f"{self.trained_tokens:,} tokens in {self.training_seconds / 60:.1f} min",
        ]
        if self.selection:
            lines.append(f"- {self.selection}")
        if self.rft is not None:
            rft = self.rft
            lines.append(
                f"- reinforcement job `{rft.job_id}` from the distilled student, the graders as "
                f"the reward: {', '.join(f'{k} {v}' for k, v in rft.hyperparameters.items())}; "
                f"{rft.training_seconds / 60:.1f} min"
            )
            if rft.selection:
                lines.append(f"- {rft.selection}")
            lines.append(
                "- the route gates the RFT student (higher on the test split)"
                if rft.routed
                else "- the route gates the distilled student (the RFT student did not score "
                "higher on the test split)"
            )
        lines += [
            "",
            "## Cost",
            "",
            f"- teacher ${self.teacher_cost_per_1k:.4f} per 1,000 requests, student "
            f"${self.student_cost_per_1k:.4f}; training ${self.training_cost_usd:.2f}",
            f"- at {self.requests_per_day:,.0f} requests a day: ${self.daily_saving:.2f} saved a day"
            + (
                f", payback in {self.payback_days:.1f} days"
                if self.payback_days is not None
                else ""
            ),
            "",
            "## Route",
            "",
        ]
        if self.route_id is not None:
            gate = (
                "open" if self.gate_open else "closed: " + "; ".join(self.gate.get("reasons") or [])
            )
            lines.append(f"- `{self.route_name}` ({self.route_id}) in shadow; gate {gate}")
        if self.misses:
            lines += ["", "## Where the student falls short", ""]
            for miss in self.misses:
                lines.append(
                    f"- `{miss.completion_id}` ({', '.join(miss.criteria)}): "
                    f"{_one_line(miss.question)} → expected {_one_line(miss.reference)}, "
                    f"got {_one_line(miss.student)}"
                )
        return "\n".join(lines) + "\n"

    def write(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.files = {"json": str(folder / "report.json"), "markdown": str(folder / "report.md")}
        (folder / "report.md").write_text(self.markdown(), encoding="utf-8")
        (folder / "report.json").write_text(
            json.dumps(self.to_json(), ensure_ascii=False, indent=2), encoding="utf-8"
        )


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}%"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:120]

"""The demo's printed report stays readable in an 80-column terminal."""

from __future__ import annotations

from rich.console import Console

from distillery.demo.report import print_report
from distillery.demo.run import DemoOptions, DemoReport, RftSummary, RunResult


def _result(label: str, model: str, accuracy: float) -> RunResult:
    return RunResult(
        label=label,
        model=model,
        run_id="evalrun_x",
        accuracy=accuracy,
        valid_json=1.0,
        schema=0.99,
        errored=0,
        total=100,
        prompt_tokens_per_request=402.3,
        completion_tokens_per_request=31.8,
        per_lang={"ja": accuracy - 0.02, "en": accuracy + 0.02},
    )


def test_the_printed_report_fits_80_columns() -> None:
    student = "ft:gemma-3-270m:router:ftjob-0123456789abcdef01234567"
    report = DemoReport(
        options=DemoOptions(),
        teacher_label="teacher (gpt-4o)",
        results=[
            _result("teacher (gpt-4o)", "gpt-4o", 0.93),
            _result("base student", "gemma-3-270m", 0.12),
            _result("distilled student", student, 0.92),
        ],
        train_examples=535,
        validation_examples=43,
        test_examples=100,
        corrected_examples=49,
        fine_tuned_model=student,
        job_id="ftjob-0123456789abcdef01234567",
        trained_tokens=453_264,
        training_seconds=290.0,
        training_cost_usd=0.0123,
        teacher_cost_per_1k=1.54,
        student_cost_per_1k=0.012,
        payback_days=0.001,
        daily_saving=15.28,
        loss_curve=[(1, 1.2), (2, 0.9)],
    )
    console = Console(width=80, record=True, color_system=None)
    print_report(report, console)
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    # every row of the table is whole on one line: label, accuracy, languages, % of teacher
    distilled = next(line for line in lines if line.lstrip().startswith("distilled student "))
    assert "92.0%" in distilled and "98.9%" in distilled and "$0.0120" in distilled
    assert any(line.lstrip().startswith("teacher ") and "93.0%" in line for line in lines)
    assert any(student in line for line in lines)  # the legend names each model in full
    assert any("49 teacher answers corrected" in line for line in lines)


def test_the_report_shows_the_reinforcement_stage() -> None:
    student = "ft:gemma-3-270m:router:ftjob-0123456789abcdef01234567"
    rft_model = "ft:gemma-3-270m:router-rft:ftjob-abcdefabcdefabcdefabcdef"
    report = DemoReport(
        options=DemoOptions(rft=True),
        teacher_label="teacher (gpt-4o)",
        results=[
            _result("teacher (gpt-4o)", "gpt-4o", 0.93),
            _result("base student", "gemma-3-270m", 0.12),
            _result("distilled student", student, 0.92),
            _result("RFT student", rft_model, 0.95),
        ],
        train_examples=535,
        validation_examples=43,
        test_examples=100,
        corrected_examples=49,
        fine_tuned_model=student,
        job_id="ftjob-0123456789abcdef01234567",
        trained_tokens=453_264,
        training_seconds=290.0,
        training_cost_usd=0.0123,
        teacher_cost_per_1k=1.54,
        student_cost_per_1k=0.012,
        payback_days=0.001,
        daily_saving=15.28,
        loss_curve=[(1, 1.2)],
        rft=RftSummary(
            job_id="ftjob-abcdefabcdefabcdefabcdef",
            model=rft_model,
            seconds=840.0,
            steps=30,
            prompts=120,
            reward_before=0.81,
            reward_last=0.93,
            language_reward=True,
            validation=[(0, 0.9), (15, 0.95), (30, 0.94)],
            kept_step=15,
        ),
    )
    console = Console(width=80, record=True, color_system=None)
    print_report(report, console)
    lines = console.export_text().splitlines()
    assert all(len(line) <= 80 for line in lines)
    row = next(line for line in lines if line.lstrip().startswith("RFT student "))
    assert "95.0%" in row and "102.2%" in row and "$0.0120" in row  # above the teacher
    text = " ".join(" ".join(lines).split())
    assert "30 steps on 120 prompts in 14.0 min" in text
    assert "0.810 before, 0.930 at the end" in text and "the reason's language" in text
    assert "Kept step 15: validation reward 0.900 before, 0.950 kept." in text

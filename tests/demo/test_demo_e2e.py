"""The main job end to end at a tiny scale through the CLI, then its HTML report in Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DISTILLERY = str(Path(sys.executable).parent / "distillery")
CHROMIUM = "/usr/bin/chromium"


def _teacher_figures(*, train: int, test: int) -> tuple[float, int]:
    """The shipped teacher's accuracy on the first ``test`` test items (against the gold
    labels; a malformed answer counts as wrong) and its corrected mistakes in the first
    ``train`` train items."""
    from distillery.demo.dataset import corrections, load_inquiries, teacher_output

    right = 0
    for inquiry in load_inquiries("test")[:test]:
        try:
            category = json.loads(teacher_output(inquiry)).get("category")
        except ValueError:
            category = None
        right += category == inquiry.category
    fixes = corrections()
    corrected = sum(i.id in fixes for i in load_inquiries("train")[:train])
    return right / test, corrected


# the whole main job three times over (about 5 minutes alone on 2 cores): the limits guard
# against a hang, not a slow or shared machine
HANG = 1500


@pytest.mark.training
@pytest.mark.browser
@pytest.mark.timeout(3600)
def test_demo_runs_end_to_end_and_its_report_renders(home: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DISTILLERY_HOME": str(home)}
    report = tmp_path / "report.html"
    args = [
        DISTILLERY,
        "demo",
        "--student",
        "smollm2-135m-instruct",  # the small student keeps the suite fast; the demo's is Gemma
        "--train-limit",
        "24",
        "--test-limit",
        "6",
        "--epochs",
        "2",
        "--every-epoch",
        "--rft",
        "--rft-epochs",  # one pass of 4 answers to at most 8 prompts: the stage, not its recipe
        "1",
        "--rft-group-size",
        "4",
        "--rft-max-prompts",
        "8",
        "--lora-r",
        "4",
        "--report",
        str(report),
        "--json",
    ]
    proc = subprocess.run(args, env=env, capture_output=True, timeout=HANG)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    out = json.loads(proc.stdout)
    labels = [r["label"] for r in out["results"]]
    assert labels == ["teacher (gpt-4o)", "base student", "distilled student", "RFT student"]
    teacher, base, distilled, rft = out["results"]
    expected_teacher, expected_corrections = _teacher_figures(train=24, test=6)
    assert teacher["accuracy"] == pytest.approx(expected_teacher)
    # the reviewers' corrections of the teacher's mistakes went through the annotation queue
    assert out["corrected_examples"] == expected_corrections > 0
    assert base["total"] == distilled["total"] == 6
    assert distilled["model"].startswith("ft:smollm2-135m-instruct:router:")
    # the reinforcement stage started from the distilled student, and its model is evaluated
    assert rft["total"] == 6 and rft["model"] == out["rft"]["model"]
    assert rft["model"].startswith("ft:smollm2-135m-instruct:router-rft:")
    assert out["rft"]["steps"] >= 1 and out["rft"]["reward_last"] is not None
    (epoch_1,) = out["checkpoints"]  # the last epoch's checkpoint is the distilled student
    assert epoch_1["model"].startswith(distilled["model"] + ":ckpt-step-")
    assert epoch_1["total"] == 6
    assert out["trained_tokens"] > 0 and out["teacher_cost_per_1k"] > 0
    assert report.is_file()

    # the rollout: the 6 held-out questions sent to the recorded teacher through the gateway,
    # the route's phases counted from the routed requests, the gate's numbers shown
    rollout = out["rollout"]
    best = rft if rft["accuracy"] >= distilled["accuracy"] else distilled
    assert rollout["recorded_teacher"] and rollout["student"] == best["model"]
    sent = sum(s["requests"] for s in rollout["sent"])
    assert sum(p["requests"] for p in rollout["phases"]) == sent >= 6
    first = rollout["phases"][0]  # every request of the shadow phase was shadowed and graded
    assert first["mode"] == "shadow" and first["shadow_graded"] == first["requests"] >= 2
    assert rollout["gate"]["offline"]["items"] == 6
    assert rollout["gate"]["shadow"]["pairs"] == 2
    if not rollout["promoted"]:  # a refusal keeps the student in shadow; the demo goes on
        assert rollout["final_mode"] == "shadow" and sent == 6
        assert rollout["events"] == ["created", "gate_refused"]

    # a second run reuses every artifact: same job, same fine-tuned model (the rollout is
    # checked above: this time it is left out)
    rerun = [tmp_path / "again.html" if a == str(report) else a for a in args]
    again = subprocess.run(
        [*map(str, rerun), "--no-rollout"], env=env, capture_output=True, timeout=HANG
    )
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    assert json.loads(again.stdout)["job_id"] == out["job_id"]
    assert json.loads(again.stdout)["rft"]["job_id"] == out["rft"]["job_id"]

    # one command from the captured traffic to a gated student, none of the demo's own steps:
    # the teacher's answers with the reviewers' corrections, baselines, a job, the comparison
    # and the prompt's route (the demo's, in shadow, or left alone if the rollout promoted it)
    distill = [DISTILLERY, "distill", "--prompt", "inquiry-router"]
    small = ["--student", "smollm2-135m-instruct", "--n-epochs", "1", "--lora-r", "4", "--json"]
    done = subprocess.run([*distill, *small], env=env, capture_output=True, timeout=HANG)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    result = json.loads(done.stdout)
    assert result["inventory"]["teacher"] == "gpt-4o"
    assert result["inventory"]["corrected"] == expected_corrections
    assert result["graders"][0]["type"] == "json_schema"
    assert [g["name"] for g in result["graders"]] == ["schema", "field_category"]
    runs = {r["label"]: r for r in result["runs"]}
    assert (
        runs["teacher"]["items"] == runs["distilled student"]["items"] == result["splits"]["test"]
    )
    assert result["fine_tuned_model"].startswith("ft:smollm2-135m-instruct:inquiry-router:")
    assert result["verdict"] and Path(result["files"]["markdown"]).is_file()
    if result["route_id"] is not None:
        gate = result["gate"]["offline"]
        assert gate["student_run"] == runs["distilled student"]["run_id"]
    else:
        assert "already serves this prompt's traffic" in " ".join(result["notes"])
    # bad input: an unknown prompt lists the prompts that have traffic
    unknown = subprocess.run(
        [*distill[:2], "--prompt", "inquiry-ruoter"], env=env, capture_output=True, timeout=300
    )
    assert unknown.returncode == 2
    assert "Prompts with traffic: inquiry-router" in " ".join(unknown.stderr.decode().split())

    if not shutil.which(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (make system-deps installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(report.as_uri())
        assert page.locator("svg[role=img]").count() == 5  # 4 charts and the rollout's timeline
        phases = page.locator("#rollout-phases tbody tr")
        assert phases.count() == len(rollout["phases"])
        assert phases.nth(0).inner_text().startswith("shadow")
        assert "gate" in page.locator("#rollout-gate").inner_text()
        assert page.locator("#rollout-mode").inner_text() == rollout["final_mode"]
        rows = page.locator("#results tbody tr")
        assert rows.count() == 4
        assert "distilled student" in rows.nth(2).inner_text()
        assert "RFT student" in rows.nth(3).inner_text()
        assert "Reinforcement stage" in page.locator("#rft-stage").inner_text()
        assert page.locator("#kpi-payback b").inner_text().strip() != ""
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000

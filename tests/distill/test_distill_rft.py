"""``rft: true`` on a distillation: after the supervised student, a reinforcement job from its
``ft:`` model with the inferred graders as the reward, its own eval run, and the route for the
better of the two students; the embedded SmolLM2 student trains for real (tiny settings)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.distill.test_distillations_api import traffic, until_ended
from tests.support.live import LiveServer
from tests.support.stored import insert

pytestmark = pytest.mark.training

LOCAL = "smollm2-135m-instruct"
BODY: dict[str, Any] = {
    "prompt": "router",
    "student": LOCAL,
    "n_epochs": 1,
    "lora_r": 4,
    "max_tokens": 32,
    "rft": True,
    # one pass, 2 answers a prompt: the smallest run that still learns from each group
    "rft_hyperparameters": {"n_epochs": 1, "batch_size": 8, "compute_multiplier": 0.5},
}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_distillation_with_rft_gates_the_better_student(gateway: LiveServer) -> None:
    http = httpx.Client(base_url=gateway.url, timeout=60)
    insert(gateway.services, *traffic(40))
    created = http.post("/v1/distillery/distillations", json=BODY)
    assert created.status_code == 200, created.text
    done = until_ended(http, created.json()["id"], timeout=900)
    assert done["status"] == "succeeded", done.get("error")
    report = done["report"]
    labels = [r["label"] for r in report["runs"]]
    assert labels == ["teacher", "base student", "distilled student", "RFT student"]
    distilled, reinforced = report["runs"][2:]
    rft = report["rft"]
    assert rft["fine_tuned_model"] == reinforced["model"]
    assert reinforced["model"].startswith(f"ft:{LOCAL}:router-rft:")
    assert reinforced["items"] == distilled["items"] == report["splits"]["test"]

    # the job: reinforcement from the distilled student, the graders as one reward
    job = http.get(f"/v1/fine_tuning/jobs/{rft['job_id']}").json()
    assert job["model"] == report["fine_tuned_model"] == distilled["model"]
    method = job["method"]
    assert method["type"] == "reinforcement"
    grader = method["reinforcement"]["grader"]
    assert grader["type"] == "multi" and set(grader["graders"]) == {"valid_json", "field_category"}
    assert grader["calculate_output"] == "(valid_json + field_category) / 2"
    assert job["hyperparameters"]["n_epochs"] == 1 and job["validation_file"]
    assert rft["selection"]  # the step kept on the validation split, and why

    # the route gates the better student on the test split (the distilled one on a tie)
    better = reinforced["pass_rate"] > distilled["pass_rate"]
    assert rft["routed"] is better
    routed = reinforced if better else distilled
    route = http.get(f"/v1/distillery/routes/{report['route_id']}").json()
    assert route["student"] == routed["model"] and route["gate"]["student_run"] == routed["run_id"]
    assert route["mode"] == "shadow"

    # again: the dataset, both jobs and every run are reused
    again = http.post("/v1/distillery/distillations", json=BODY)
    redone = until_ended(http, again.json()["id"], timeout=300)["report"]
    assert redone["rft"]["job_id"] == rft["job_id"] and redone["job_id"] == report["job_id"]
    assert [r["run_id"] for r in redone["runs"]] == [r["run_id"] for r in report["runs"]]

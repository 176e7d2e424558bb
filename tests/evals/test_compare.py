"""Run comparison: per-criterion pass rates, % of the baseline with bootstrap intervals, flips,
and teacher self-consistency, through the HTTP API (SQLite + PostgreSQL) and the core."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from distillery.evals.compare import RunItems, compare, pass_rate_interval, ratio_interval

from .runs_support import raw, wait_run

SCHEMA = {"type": "object", "properties": {"q": {"type": "string"}, "a": {"type": "string"}}}
CRITERIA = [
    {
        "type": "string_check",
        "name": "exact",
        "input": "{{sample.output_text}}",
        "reference": "{{item.a}}",
        "operation": "eq",
    },
    {
        "type": "text_similarity",
        "name": "close",
        "input": "{{sample.output_text}}",
        "reference": "{{item.a}}",
        "evaluation_metric": "fuzzy_match",
        "pass_threshold": 0.5,
    },
]


def _run(client: openai.OpenAI, eval_id: str, name: str, answers: list[str]) -> Any:
    content = [
        {"item": {"q": f"q{i}", "a": f"answer {i}"}, "sample": {"output_text": out}}
        for i, out in enumerate(answers)
    ]
    run = client.evals.runs.create(
        eval_id,
        name=name,
        data_source={"type": "jsonl", "source": {"type": "file_content", "content": content}},
    )
    return wait_run(client, eval_id, run.id)


def test_compare_runs_with_flips_and_percent_of_baseline(
    client: openai.OpenAI, gateway: Any
) -> None:
    ev = client.evals.create(
        data_source_config={"type": "custom", "item_schema": SCHEMA},
        testing_criteria=CRITERIA,  # type: ignore[arg-type]
    )
    right = [f"answer {i}" for i in range(8)]
    teacher = _run(client, ev.id, "teacher", right)
    # student: item 1 wrong (pass -> fail), items 2 and 5 slightly off (exact fails, close passes)
    student_answers = list(right)
    student_answers[1] = "zzz"
    student_answers[2] = "answer  2"
    student_answers[5] = "Answer 5"
    student = _run(client, ev.id, "student", student_answers)

    result = raw(
        gateway.url,
        "/v1/distillery/eval_comparisons",
        run_ids=f"{teacher.id},{student.id}",
        baseline=teacher.id,
    )
    assert result["object"] == "distillery.eval_comparison"
    assert result["baseline_run_id"] == teacher.id
    assert [r["id"] for r in result["runs"]] == [teacher.id, student.id]
    rows = {row["name"]: row["runs"] for row in result["criteria"]}
    assert list(rows) == ["exact", "close"]
    base, stu = rows["exact"]
    assert (base["pass_rate"], stu["pass_rate"]) == (1.0, 5 / 8)
    assert base["percent_of_baseline"] == 100.0
    assert stu["percent_of_baseline"] == pytest.approx(62.5)
    lo, hi = stu["pass_rate_ci"]
    assert lo <= 5 / 8 <= hi and 0 <= lo < hi <= 1
    rlo, rhi = stu["percent_of_baseline_ci"]
    assert rlo <= 62.5 <= rhi
    assert base["pass_rate_ci"] == [1.0, 1.0]
    assert stu["mean_score"] == pytest.approx(5 / 8)
    _, close_stu = rows["close"]
    assert close_stu["pass_rate"] == 7 / 8 and close_stu["mean_score"] < 1.0
    overall = result["overall"]["runs"][1]
    assert overall["pass_rate"] == 5 / 8

    (flips,) = result["flips"]
    assert flips["run_id"] == student.id
    assert sorted(f["datasource_item_id"] for f in flips["pass_to_fail"]) == [1, 2, 5]
    by_item = {f["datasource_item_id"]: f for f in flips["pass_to_fail"]}
    assert by_item[1]["criteria"] == ["exact", "close"]
    assert by_item[2]["criteria"] == ["exact"]
    assert flips["fail_to_pass"] == []
    close_flips = flips["by_criterion"]["close"]
    assert [f["datasource_item_id"] for f in close_flips["pass_to_fail"]] == [1]
    assert result["runs"][1]["agreement"] == 5 / 8

    # reversed: the student as baseline sees fail -> pass flips; same seed, same intervals
    again = raw(
        gateway.url,
        "/v1/distillery/eval_comparisons",
        run_ids=[teacher.id, student.id],
        baseline=student.id,
    )
    assert sorted(f["datasource_item_id"] for f in again["flips"][0]["fail_to_pass"]) == [1, 2, 5]
    assert again["criteria"][0]["runs"][1]["pass_rate_ci"] == stu["pass_rate_ci"]
    repeat = raw(
        gateway.url,
        "/v1/distillery/eval_comparisons",
        run_ids=f"{teacher.id},{student.id}",
        baseline=teacher.id,
    )
    assert repeat == result

    missing = httpx.get(gateway.url + "/v1/distillery/eval_comparisons", timeout=10)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "run_ids"
    unknown = httpx.get(
        gateway.url + "/v1/distillery/eval_comparisons", params={"run_ids": "evalrun_x"}
    )
    assert unknown.status_code == 404


def test_teacher_self_consistency(client: openai.OpenAI, gateway: Any) -> None:
    for q in ["VPN is down", "会議室の予約方法", "Where is my payslip?"]:
        client.chat.completions.create(
            model="echo-1",
            messages=[{"role": "user", "content": q}],
            store=True,
            metadata={"prompt": "router"},
        )
    ev = client.evals.create(
        data_source_config={"type": "logs", "metadata": {"prompt": "router"}},
        testing_criteria=[  # type: ignore[list-item]
            {
                "type": "string_check",
                "name": "echo",
                "input": "{{sample.output_text}}",
                "reference": "echo:",
                "operation": "like",
            }
        ],
    )
    first = client.evals.runs.create(
        ev.id, data_source={"type": "completions", "source": {"type": "stored_completions"}}
    )
    wait_run(client, ev.id, first.id)
    response = httpx.post(
        gateway.url + "/v1/distillery/eval_comparisons/self_consistency",
        json={"run_id": first.id},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    repeat = response.json()
    assert repeat["object"] == "eval.run" and repeat["model"] == "echo-1"
    assert repeat["metadata"]["distillery_repeat_of"] == first.id
    done = wait_run(client, ev.id, repeat["id"])
    assert done.result_counts.passed == 3
    assert done.per_model_usage[0].invocation_count == 3  # the teacher answered again
    result = raw(
        gateway.url, "/v1/distillery/eval_comparisons", run_ids=f"{first.id},{repeat['id']}"
    )
    (sc,) = result["self_consistency"]
    assert (sc["run_id"], sc["repeat_run_id"]) == (first.id, repeat["id"])
    assert sc["matched_items"] == 3
    assert sc["agreement"] == 1.0 and sc["output_agreement"] == 1.0
    flips = result["flips"][0]
    assert flips["pass_to_fail"] == [] and flips["fail_to_pass"] == []


def _items(statuses: list[str], prefix: str = "") -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}{i}",
            "datasource_item_id": i,
            "datasource_item": {"completion_id": f"c{i}"},
            "status": s,
            "results": [{"name": "ok", "passed": s == "pass", "score": float(s == "pass")}],
            "sample": {"output": [{"role": "assistant", "content": s}]},
        }
        for i, s in enumerate(statuses)
    ]


def test_items_match_by_completion_id_not_position() -> None:
    base = RunItems({"id": "a"}, _items(["pass", "fail", "pass"]))
    # the same completions in another order (c0, c2, c1) with the same verdicts each:
    # by position items 1 and 2 would flip, by identity nothing did
    other_items = _items(["pass", "pass", "fail"], prefix="b")
    other_items[1]["datasource_item"] = {"completion_id": "c2"}
    other_items[2]["datasource_item"] = {"completion_id": "c1"}
    other = RunItems({"id": "b"}, other_items)
    result = compare([base, other], "a", resamples=200)
    assert result["flips"][0]["pass_to_fail"] == []
    assert result["flips"][0]["fail_to_pass"] == []
    assert result["runs"][1]["matched_items"] == 3 and result["runs"][1]["agreement"] == 1.0
    # without completion ids the datasource_item_id is the identity
    for item in base.items:
        item["datasource_item"] = {}
    for item in other.items:
        item["datasource_item"] = {}
    result = compare([base, other], "a", resamples=200)
    assert [f["key"] for f in result["flips"][0]["pass_to_fail"]] == ["#2"]
    assert [f["key"] for f in result["flips"][0]["fail_to_pass"]] == ["#1"]


def test_bootstrap_intervals_are_seeded_and_sane() -> None:
    values = [True] * 70 + [False] * 30
    ci = pass_rate_interval(values, resamples=1000, seed=3)
    assert ci == pass_rate_interval(values, resamples=1000, seed=3)
    assert ci is not None and ci[0] < 0.7 < ci[1] and ci[1] - ci[0] < 0.25
    ratio = ratio_interval(values, [True] * 100, paired=True, resamples=1000, seed=3)
    assert ratio is not None and ratio[0] < 70 < ratio[1]
    assert ratio_interval(values, [False] * 100, paired=True) is None
    assert pass_rate_interval([]) is None

"""What a prompt's traffic holds before anything trains on it: the answers checked against the
response format, the graders inferred, too little data refused with how much more is needed."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest

from distillery.distill.plan import (
    Inventory,
    TooLittleData,
    UnknownPrompt,
    format_problem,
    infer_graders,
    measured_fields,
    reward_grader,
    take_inventory,
)
from distillery.distill.report import CriterionRow, DistillReport, Miss, RunSummary
from distillery.store.records import StoredCompletion

SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "route",
        "schema": {
            "type": "object",
            "properties": {
                "reason": {"type": "string"},
                "category": {"type": "string", "enum": ["IT", "人事", "経理"]},
            },
            "required": ["reason", "category"],
        },
    },
}
LABELS = ["IT", "人事", "経理"]


def stored(
    i: int,
    answer: str,
    *,
    model: str = "gpt-4o",
    version: str = "v1",
    response_format: dict[str, Any] | None = SCHEMA,
    created_at: int | None = None,
) -> StoredCompletion:
    request: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": f"question {i}"}],
        "max_tokens": 64,
    }
    if response_format is not None:
        request["response_format"] = response_format
    return StoredCompletion(
        seq=i,
        id=f"chatcmpl-{i}",
        created_at=created_at if created_at is not None else 1_700_000_000 + i,
        model=model,
        provider="test",
        status="completed",
        stream=False,
        request=request,
        response={"choices": [{"message": {"role": "assistant", "content": answer}}]},
        error=None,
        metadata={"prompt": "router", "prompt_version": version},
    )


def routed(i: int) -> str:
    return json.dumps({"reason": f"because of case {i}", "category": LABELS[i % 3]})


def test_answers_are_checked_against_the_response_format() -> None:
    assert format_problem('{"reason": "r", "category": "IT"}', SCHEMA) is None
    assert "not JSON" in (format_problem("IT, because", SCHEMA) or "")
    problem = format_problem('{"reason": "r", "category": "総務"}', SCHEMA) or ""
    assert problem.startswith("does not match the schema at category")
    assert format_problem("[1]", {"type": "json_object"}) == "JSON, but not an object"
    assert "tool call" in (format_problem(None, {"type": "json_object"}) or "")
    assert format_problem("free text", None) is None  # no format asked: any text is fine


def test_graders_follow_the_data() -> None:
    answers = [routed(i) for i in range(30)]
    graders, label = infer_graders(answers, SCHEMA)
    assert label == "category"
    assert [g["name"] for g in graders] == ["schema", "field_category"]
    assert graders[1]["input"] == "{{sample.output_json.category}}"
    assert graders[1]["reference"] == "{{item.reference_json.category}}"
    # answers that are labels themselves: exact match of the whole answer
    graders, label = infer_graders([LABELS[i % 3] for i in range(30)], None)
    assert [g["name"] for g in graders] == ["exact_answer"] and label is None
    # free text: semantic similarity to the reference
    texts = [f"Dear customer {i}, thank you for writing; we will call you back." for i in range(30)]
    graders, _ = infer_graders(texts, None)
    assert [g["type"] for g in graders] == ["semantic_similarity"]


def test_the_trainer_measures_the_fields_the_graders_compare() -> None:
    inferred, _ = infer_graders(
        [
            json.dumps({"reason": f"because of question {i}", "category": LABELS[i % 3]})
            for i in range(30)
        ],
        SCHEMA,
    )
    assert measured_fields(inferred) == ["category"]
    given = [
        {"type": "string_check", "input": "{{ sample.output_json.intent }}", "operation": "eq"},
        {"type": "string_check", "input": "{{sample.output_text}}", "operation": "eq"},
        {"type": "text_similarity", "input": "{{sample.output_json.reason}}"},
        {"type": "string_check", "input": "{{sample.output_json.intent}}", "operation": "eq"},
    ]
    assert measured_fields(given) == ["intent"]
    assert (
        measured_fields([{"type": "semantic_similarity", "input": "{{sample.output_text}}"}]) == []
    )


def test_inventory_keeps_the_teachers_newest_version_and_leaves_unparsable_answers_out() -> None:
    completions = [stored(i, routed(i)) for i in range(24)]
    completions += [stored(100 + i, "IT", version="v1") for i in range(3)]  # not JSON
    # an older version of the prompt
    completions += [stored(200 + i, routed(i), version="v0", created_at=i) for i in range(5)]
    completions += [stored(300 + i, routed(i), model="ft:small:x") for i in range(4)]
    completions.sort(key=lambda c: c.created_at)
    corrections = {"chatcmpl-100": json.dumps({"reason": "fixed", "category": "IT"})}
    inv = take_inventory(completions, corrections, prompt="router", known_prompts=["router"])
    assert inv.teacher == "gpt-4o" and inv.prompt_version == "v1"
    assert len(inv.usable) == 25 and inv.corrected == 1  # the correction makes 100 usable
    assert [u.completion_id for u in inv.unusable] == ["chatcmpl-101", "chatcmpl-102"]
    assert inv.other_versions == {"v0": 5}
    assert inv.labels == Counter({"IT": 9, "人事": 8, "経理": 8})
    assert inv.max_completion_tokens == 64
    inv.check_enough()  # 25 usable: enough
    # the schema keeps its own property order (reason, then category): constrained decoding
    # writes the fields in that order, the order the student is trained to
    schema = (inv.response_format or {})["json_schema"]["schema"]
    assert list(schema["properties"]) == ["reason", "category"]
    assert list(inv.response_format or {}) == list(SCHEMA)


def test_too_little_data_says_how_many_more() -> None:
    completions = [stored(i, routed(i)) for i in range(12)]
    inv = take_inventory(completions, {}, prompt="router", known_prompts=["router"])
    with pytest.raises(TooLittleData) as exc:
        inv.check_enough()
    assert exc.value.status == 400 and exc.value.code == "too_little_data"
    assert "has 12 usable example(s)" in exc.value.message
    assert "capture about 8 more" in exc.value.message
    many = Inventory(
        prompt="intents",
        teacher="gpt-4o",
        prompt_version=None,
        usable=[f"c{i}" for i in range(40)],
        unusable=[],
        corrected=0,
        response_format=None,
        graders=[],
        label_field="intent",
        labels=Counter({f"label{i}": 1 for i in range(60)}),
    )
    with pytest.raises(TooLittleData, match=r"one per label \(60 labels of 'intent'\).*20 more"):
        many.check_enough()


def test_an_unknown_prompt_lists_the_prompts_with_traffic() -> None:
    with pytest.raises(UnknownPrompt) as exc:
        take_inventory([], {}, prompt="ruoter", known_prompts=["router", "summarise"])
    assert exc.value.status == 404
    assert exc.value.message.endswith("Prompts with traffic: router, summarise.")


def _run(label: str, rate: float, share: float | None) -> RunSummary:
    return RunSummary(
        label=label,
        model=label,
        run_id=f"run-{label}",
        pass_rate=rate,
        pass_rate_ci=[rate - 0.1, rate],
        percent_of_teacher=share,
        percent_of_teacher_ci=None if share is None else [share - 20, share],
        criteria={"field_category": rate},
        items=10,
        errored=0,
        prompt_tokens_per_request=100,
        completion_tokens_per_request=10,
        seconds_per_request=0.5,
    )


def test_the_report_names_the_criteria_and_examples_when_the_student_falls_short() -> None:
    report = DistillReport(
        prompt="router",
        fingerprint="abc",
        inventory={"usable": 25, "labels": 3, "teacher": "gpt-4o", "corrected": 1},
        splits={"train": 17, "validation": 3, "test": 5},
        dataset="distill-router-abc",
        graders=[{"name": "field_category"}],
        runs=[_run("teacher", 1.0, 100.0), _run("base", 0.6, 60.0), _run("student", 0.4, 40.0)],
        criteria=[CriterionRow("field_category", 1.0, 0.6, 0.4)],
        misses=[Miss("chatcmpl-1", "経費は？", '{"category":"経理"}', '{"category":"IT"}', ["x"])],
        job_id="ftjob-1",
        fine_tuned_model="ft:x",
        hyperparameters={"n_epochs": 3},
        selection="Kept the last epoch, the best on the validation split by ...",
        trained_tokens=1000,
        training_seconds=60,
        training_cost_usd=0.0,
        teacher_cost_per_1k=2.0,
        student_cost_per_1k=0.1,
        requests_per_day=100,
        daily_saving=0.19,
        payback_days=0.0,
        route_id="route_1",
        route_name="router-distilled",
        gate={"allowed": False, "reasons": ["student at 40.0% of the teacher"]},
        min_percent_of_teacher=95,
        seconds=100,
    )
    verdict = report.verdict()
    assert "40.0% of the teacher" in verdict and "field_category 40.0% vs 100.0%" in verdict
    assert "did not learn the task: 40.0% against 60.0%" in verdict  # below the base model
    assert "1 example(s) below" in verdict
    text = report.markdown()
    assert "| student | `student` | 40.0% (30.0%-40.0%) | 40.0% | 40.0% |" in text
    assert "経費は？ → expected" in text


def test_the_graders_make_one_reward_for_reinforcement() -> None:
    from distillery.evals.graders.registry import build_grader

    check = {"type": "valid_json", "name": "valid_json", "input": "{{sample.output_text}}"}
    assert reward_grader([check]) == check
    field = {
        "type": "string_check",
        "input": "{{sample.output_json.category}}",
        "reference": "{{item.reference_json.category}}",
        "operation": "eq",
    }
    graders = [check, {**field, "name": "field-category"}, {**field, "name": "1st"}]
    reward = reward_grader([*graders, {**field, "name": "field_category"}])
    assert list(reward["graders"]) == ["valid_json", "field_category", "g_1st", "field_category_"]
    assert reward["calculate_output"] == (
        "(valid_json + field_category + g_1st + field_category_) / 4"
    )
    build_grader(reward, param="grader")  # the formula names every sub-grader

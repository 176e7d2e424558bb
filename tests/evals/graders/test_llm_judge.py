"""Model judges against a scripted JudgeClient: prompts from files, parsing, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distillery.errors import InvalidRequestError, UpstreamError
from distillery.evals.graders.base import GraderError
from distillery.evals.graders.judging import load_prompt, parse_choice
from distillery.evals.graders.registry import build_grader

from .support import ScriptedJudge, chat_completion, run_grade

ITEM = {"question": "有給休暇は何日ありますか？", "answer": "入社半年後に10日付与されます。"}

FACTUALITY = {
    "type": "factuality",
    "model": "judge-model",
    "question": "{{item.question}}",
    "reference": "{{item.answer}}",
}


def test_factuality_prompt_is_fact_yaml_with_cot_instruction() -> None:
    judge = ScriptedJudge("The submission has the same details.\nC\nC")
    grade = run_grade(build_grader(FACTUALITY, judge=judge), "半年後に10日もらえます。", ITEM)
    prompt = judge.last_prompt
    assert prompt.startswith(load_prompt("factuality")[:60])
    assert "[Question]: 有給休暇は何日ありますか？" in prompt
    assert "[Expert]: 入社半年後に10日付与されます。" in prompt
    assert "[Submission]: 半年後に10日もらえます。" in prompt
    assert '"A" or "B" or "C" or "D" or "E"' in prompt
    assert prompt.rstrip().endswith("Reasoning:")
    assert judge.calls[0]["temperature"] == 0.0 and judge.calls[0]["model"] == "judge-model"
    assert grade.passed is True and grade.score == 1.0
    assert grade.details["choice"] == "C"
    assert grade.details["raw"] == "The submission has the same details.\nC\nC"
    assert grade.details["usage"] == {
        "prompt_tokens": 42,
        "completion_tokens": 7,
        "total_tokens": 49,
    }
    assert grade.reason == "The submission has the same details.\nC"


@pytest.mark.parametrize(
    ("answer", "choice", "passed"),
    [
        ("Reasoning...\nD\nD", "D", False),
        ("Step 1: compare.\nAnswer: B", "B", True),
        ("**E**", "E", True),
        ("(A)", "A", True),
        ("My conclusion is\na", "A", True),
    ],
)
def test_factuality_choice_parsing(answer: str, choice: str, passed: bool) -> None:
    grade = run_grade(build_grader(FACTUALITY, judge=ScriptedJudge(answer)), "x", ITEM)
    assert grade.details["choice"] == choice
    assert grade.passed is passed


def test_factuality_choice_scores_and_passing_choices_configurable() -> None:
    config = {**FACTUALITY, "choice_scores": {"A": 0.5}, "passing_choices": ["C"]}
    grade = run_grade(build_grader(config, judge=ScriptedJudge("subset\nA")), "x", ITEM)
    assert grade.score == 0.5 and grade.passed is False


def test_criteria_match_closedqa_prompt_and_yes_no() -> None:
    judge = ScriptedJudge("It answers in Japanese and names the category.\nY\nY", "Too long.\nN")
    grader = build_grader(
        {
            "type": "criteria_match",
            "model": "judge-model",
            "task": "{{item.question}}",
            "criteria": "The answer is written in Japanese.",
        },
        judge=judge,
    )
    yes = run_grade(grader, "10日です。", ITEM)
    prompt = judge.last_prompt
    assert "[Task]: 有給休暇は何日ありますか？" in prompt
    assert "[Criterion]: The answer is written in Japanese." in prompt
    assert "[Submission]: 10日です。" in prompt
    assert prompt.count("Reasoning:") == 1  # closedqa carries its own instruction
    assert yes.passed is True and yes.score == 1.0 and yes.details["choice"] == "Y"
    no = run_grade(grader, "Ten days.", ITEM)
    assert no.passed is False and no.score == 0.0


def test_custom_prompt_labels() -> None:
    judge = ScriptedJudge("The question is about VPN access.\n情報システム")
    grader = build_grader(
        {
            "type": "custom_prompt",
            "model": "judge-model",
            "prompt": "Classify the question: {{item.question}}\nModel answer: {{sample.output_text}}",
            "labels": ["労務", "情報システム"],
            "passing_labels": ["情報システム"],
        },
        judge=judge,
    )
    grade = run_grade(grader, "IT", {"question": "VPNに繋がりません"})
    assert judge.last_prompt.startswith(
        "Classify the question: VPNに繋がりません\nModel answer: IT"
    )
    assert '"労務" or "情報システム"' in judge.last_prompt
    assert grade.details["choice"] == "情報システム" and grade.passed is True


def test_custom_prompt_file_from_home_prompts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISTILLERY_HOME", str(tmp_path))
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "tone.md").write_text("Is {{sample.output_text}} polite?\n")
    base = {
        "type": "custom_prompt",
        "model": "m",
        "labels": ["yes", "no"],
        "passing_labels": ["yes"],
    }
    judge = ScriptedJudge("It thanks the user.\nyes")
    grade = run_grade(build_grader({**base, "prompt_file": "tone"}, judge=judge), "ありがとう")
    assert judge.last_prompt.startswith("Is ありがとう polite?\n\nFirst, write out")
    assert grade.passed is True
    for bad in ("../../../etc/passwd", "/etc/passwd", "missing", "a/b.md"):
        with pytest.raises(InvalidRequestError) as err:
            build_grader({**base, "prompt_file": bad}, param="testing_criteria[4]")
        assert err.value.param == "testing_criteria[4]"
    with pytest.raises(InvalidRequestError):
        build_grader({**base, "prompt": "x", "prompt_file": "tone"})
    with pytest.raises(InvalidRequestError):
        build_grader({**base, "prompt": ""})


LABEL_MODEL = {
    "type": "label_model",
    "name": "category",
    "model": "judge-model",
    "input": [
        {"role": "developer", "content": "Classify the helpdesk question."},
        {"role": "user", "content": [{"type": "input_text", "text": "Q: {{item.question}}"}]},
    ],
    "labels": ["労務", "総務", "情報システム"],
    "passing_labels": ["労務"],
}


def test_label_model_sends_structured_output_and_parses_label() -> None:
    judge = ScriptedJudge(
        json.dumps({"reasoning": "有給の質問", "label": "労務"}, ensure_ascii=False)
    )
    grade = run_grade(build_grader(LABEL_MODEL, judge=judge), "", ITEM)
    call = judge.calls[0]
    assert call["messages"][0] == {"role": "system", "content": "Classify the helpdesk question."}
    assert call["messages"][1]["content"].startswith("Q: 有給休暇は何日ありますか？\n\n")
    assert '"労務", "総務", "情報システム"' in call["messages"][1]["content"]
    schema = call["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["enum"] == ["労務", "総務", "情報システム"]
    assert grade.passed is True and grade.score == 1.0
    assert grade.details["label"] == "労務" and grade.reason == "有給の質問"
    assert json.loads(str(grade.details["raw"]))["label"] == "労務"


def test_label_model_accepts_fenced_or_plain_answers_and_rejects_others() -> None:
    fenced = '```json\n{"reasoning": "r", "label": "総務"}\n```'
    off = '{"reasoning": "r", "label": "経理"}'
    judge = ScriptedJudge(fenced, "reasoning\n情報システム", off, off + " ")
    grader = build_grader(LABEL_MODEL, judge=judge)
    assert run_grade(grader, "", ITEM).details["label"] == "総務"
    assert run_grade(grader, "", ITEM).details["label"] == "情報システム"
    with pytest.raises(GraderError) as err:  # off-format twice: one retry, then errored
        run_grade(grader, "", ITEM)
    assert err.value.raw == off + " "
    assert len(judge.calls) == 4


def test_an_off_format_judge_answer_gets_one_retry() -> None:
    judge = ScriptedJudge("no label here", '{"reasoning": "r", "label": "総務"}')
    grade = run_grade(build_grader(LABEL_MODEL, judge=judge), "", ITEM)
    assert grade.details["label"] == "総務" and len(judge.calls) == 2


SCORE_MODEL = {
    "type": "score_model",
    "name": "helpfulness",
    "model": "judge-model",
    "input": [{"role": "user", "content": "Rate the answer {{sample.output_text}} from 1 to 5."}],
    "range": [1, 5],
    "sampling_params": {"temperature": 0.2, "seed": 7, "max_completions_tokens": 300},
    "pass_threshold": 4,
}


def test_score_model_parses_score_and_applies_threshold() -> None:
    judge = ScriptedJudge('{"reasoning": "clear", "score": 4.5}', "Decent.\nScore: 3")
    grader = build_grader(SCORE_MODEL, judge=judge)
    high = run_grade(grader, "10日です")
    call = judge.calls[0]
    assert (call["temperature"], call["seed"], call["max_tokens"]) == (0.2, 7, 300)
    assert "a number from 1 to 5 inclusive" in call["messages"][-1]["content"]
    assert call["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"] == 5
    assert high.score == 4.5 and high.passed is True and high.details["raw"]
    low = run_grade(grader, "10日です")
    assert low.score == 3.0 and low.passed is False


def test_score_model_out_of_range_or_missing_is_an_error() -> None:
    judge = ScriptedJudge('{"reasoning": "r", "score": 9}', "meh", "still no number")
    grader = build_grader(SCORE_MODEL, judge=judge)
    with pytest.raises(GraderError, match="outside"):
        run_grade(grader, "x")
    with pytest.raises(GraderError, match="no score"):
        run_grade(grader, "x")


@pytest.mark.parametrize(
    "answer",
    [
        UpstreamError("upstream 502"),
        chat_completion(None),
        chat_completion(None, refusal="I can't help with that."),
        {"choices": []},
        "no choice letter here",
    ],
)
def test_judge_failures_become_grader_errors(answer: object) -> None:
    grader = build_grader(FACTUALITY, judge=ScriptedJudge(answer))  # type: ignore[arg-type]
    with pytest.raises(GraderError):
        run_grade(grader, "x", ITEM)


def test_no_judge_bound_is_a_grader_error() -> None:
    grader = build_grader(FACTUALITY)
    with pytest.raises(GraderError, match="no judge"):
        run_grade(grader, "x", ITEM)


def test_parse_choice_prefers_last_line_and_whole_words() -> None:
    assert parse_choice("A is tempting, but\nAnswer: B", "ABCDE") == "B"
    assert parse_choice("Y\n...\nN", "YN") == "N"
    assert parse_choice("結論：情報システム", ["労務", "情報システム"]) == "情報システム"
    with pytest.raises(GraderError):
        parse_choice("Answer: F", "ABCDE")

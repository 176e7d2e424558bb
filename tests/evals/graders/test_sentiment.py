"""sentiment: the offline lexicon scorer (English and Japanese, negation) and the judge preset."""

from __future__ import annotations

import pytest

from distillery.evals.graders.base import GraderError
from distillery.evals.graders.registry import build_grader
from distillery.evals.graders.sentiment_lexicon import analyze

from .support import ScriptedJudge, run_grade

CASES = [
    ("Thank you, the new laptop works great!", "positive"),
    ("The VPN keeps failing and support was terrible.", "negative"),
    ("How do I reset my password?", "neutral"),
    ("It isn't good.", "negative"),
    ("Not bad at all.", "positive"),
    ("No problem, happy to help.", "positive"),
    ("The setup was good but the documentation is really confusing.", "negative"),
    ("対応がとても素晴らしかったです。ありがとうございます！", "positive"),
    ("この製品は良くない。", "negative"),
    ("問題ありません。", "positive"),
    ("パスワードを忘れました。", "neutral"),
    ("便利ではないです。", "negative"),
    ("VPNが遅くて困っています。", "negative"),
    ("全然嬉しくなかった。", "negative"),
    ("非常に便利で助かりました。", "positive"),
    ("説明は丁寧でした。しかし、結局解決しませんでした。", "negative"),
]


@pytest.mark.parametrize(("text", "label"), CASES)
def test_lexicon_labels(text: str, label: str) -> None:
    assert analyze(text).label == label


def test_negation_flips_and_boosters_scale() -> None:
    good, not_good = analyze("It is good."), analyze("It is not good.")
    assert good.compound > 0 > not_good.compound
    assert analyze("It is very good.").compound > good.compound
    assert analyze("とても良いです。").compound > analyze("良いです。").compound > 0
    assert analyze("良くないです。").compound < 0
    # Negation does not cross a clause boundary.
    assert analyze("No. It is good.").compound > 0


def test_language_and_matches_are_reported() -> None:
    result = analyze("素晴らしい対応でした")
    assert result.language == "ja"
    assert result.matches == (("素晴らしい", 3.0),)
    assert analyze("great").language == "en"


def test_grader_without_passing_labels_measures() -> None:
    grade = run_grade(build_grader({"type": "sentiment"}), "This is great, thanks!")
    assert grade.passed is None
    assert 0.5 < grade.score <= 1.0
    assert grade.details["label"] == "positive"
    assert grade.details["method"] == "lexicon"
    assert grade.reason is not None and grade.reason.startswith("positive")


def test_grader_with_passing_labels() -> None:
    grader = build_grader({"type": "sentiment", "passing_labels": ["positive", "neutral"]})
    assert run_grade(grader, "最悪です。").passed is False
    assert run_grade(grader, "最悪です。").score == 0.0
    assert run_grade(grader, "会議室を予約したいです。").passed is True


def test_judge_sentiment_uses_prompt_file_and_choices() -> None:
    judge = ScriptedJudge("The text thanks the team warmly.\nA\nA")
    grader = build_grader(
        {"type": "sentiment", "model": "judge-model", "passing_labels": ["positive"]}, judge=judge
    )
    grade = run_grade(grader, "ありがとうございました！")
    assert grade.passed is True and grade.score == 1.0
    assert grade.details["label"] == "positive"
    assert grade.details["raw"] == "The text thanks the team warmly.\nA\nA"
    assert "[Text]: ありがとうございました！" in judge.last_prompt
    assert "(D) Unsure" in judge.last_prompt
    assert '"A" or "B" or "C" or "D"' in judge.last_prompt


def test_judge_sentiment_unsure_and_unparsable() -> None:
    judge = ScriptedJudge("Hard to tell.\nD", "I cannot decide.")
    grader = build_grader({"type": "sentiment", "model": "m"}, judge=judge)
    unsure = run_grade(grader, "ok")
    assert unsure.details["label"] == "unsure" and unsure.score == 0.5 and unsure.passed is None
    with pytest.raises(GraderError):
        run_grade(grader, "ok")

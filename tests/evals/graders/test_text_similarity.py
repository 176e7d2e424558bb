"""text_similarity: identical to sacrebleu / rouge-score on English, real tokens on Japanese."""

from __future__ import annotations

import random

import pytest
import sacrebleu
from nltk.translate.gleu_score import sentence_gleu
from rapidfuzz import fuzz
from rouge_score.rouge_scorer import RougeScorer

from distillery.evals.graders.registry import build_grader
from distillery.evals.graders.text_similarity import lcs_length, lexical_similarity, meteor
from distillery.text.tokenize import SegmentingTokenizer, segment, tokens_13a

from .support import run_grade

ENGLISH_PAIRS = [
    ("The cat sat on the mat.", "A cat was sitting on the mat."),
    (
        "Please reset your password from the account settings page.",
        "You can reset the password on the account settings page.",
    ),
    ('{"reason": "VPN access", "category": "IT"}', '{"reason": "VPN setup", "category": "IT"}'),
    ("It's 3.5 USD, isn't it?", "It costs 3.5 USD, doesn't it?"),
    ("Completely unrelated words here", "The quarterly report is due on Friday."),
    ("identical sentence", "identical sentence"),
]
ROUGE_METRICS = {f"rouge_{n}": f"rouge{n}" for n in range(1, 6)} | {"rouge_l": "rougeL"}

NEAR_IDENTICAL_JA = [
    ("有給休暇の申請方法を教えてください。", "有給休暇の申請方法を教えて下さい。"),
    ("VPNに接続できません。", "ＶＰＮに接続できません"),
    ("経費精算の締め日はいつですか？", "経費精算の締め日はいつでしょうか？"),
]
UNRELATED_JA = [
    ("VPNに接続できません。", "経費精算の締め日はいつですか？"),
    ("パスワードを忘れました。", "名刺の発注はどこでできますか？"),
]
LEXICAL_METRICS = ["bleu", "gleu", "meteor", *ROUGE_METRICS]


@pytest.mark.parametrize(("output", "reference"), ENGLISH_PAIRS)
def test_bleu_equals_sacrebleu_on_english(output: str, reference: str) -> None:
    expected = sacrebleu.sentence_bleu(output, [reference]).score / 100
    assert lexical_similarity("bleu", output, reference)[0] == expected


@pytest.mark.parametrize(("output", "reference"), ENGLISH_PAIRS)
@pytest.mark.parametrize("metric", sorted(ROUGE_METRICS))
def test_rouge_equals_rouge_score_on_english(metric: str, output: str, reference: str) -> None:
    rouge_type = ROUGE_METRICS[metric]
    expected = RougeScorer([rouge_type]).score(reference, output)[rouge_type].fmeasure
    assert lexical_similarity(metric, output, reference)[0] == expected


def test_lcs_length_equals_rouge_scores_table_on_random_sequences() -> None:
    from rouge_score.rouge_scorer import _lcs_table

    rng = random.Random(7)
    for _ in range(400):
        vocab = [f"w{i}" for i in range(rng.randint(1, 12))]  # small vocabularies: many matches
        a = [rng.choice(vocab) for _ in range(rng.randint(0, 90))]
        b = [rng.choice(vocab) for _ in range(rng.randint(0, 90))]
        expected = _lcs_table(a, b)[-1][-1] if a and b else 0
        assert lcs_length(a, b) == expected == lcs_length(b, a)


def test_rouge_l_equals_rouge_score_on_long_random_texts() -> None:
    rng = random.Random(11)
    words = [
        "the",
        "a",
        "password",
        "reset",
        "vpn",
        "leave",
        "payslip",
        "expense",
        "card",
        "office",
        "is",
        "on",
        "to",
        "of",
    ]
    ja = [
        "有給",
        "休暇",
        "の",
        "申請",
        "方法",
        "を",
        "教え",
        "て",
        "ください",
        "経費",
        "精算",
        "パスワード",
    ]
    segmented = RougeScorer(["rougeL"], tokenizer=SegmentingTokenizer())
    for i in range(60):
        vocab = ja if i % 3 == 0 else words
        joiner = "" if vocab is ja else " "
        ref = joiner.join(rng.choice(vocab) for _ in range(rng.randint(1, 200)))
        out = joiner.join(rng.choice(vocab) for _ in range(rng.randint(1, 200)))
        scorer = segmented if vocab is ja else RougeScorer(["rougeL"])
        expected = scorer.score(ref, out)["rougeL"].fmeasure
        assert lexical_similarity("rouge_l", out, ref)[0] == expected


@pytest.mark.parametrize(("output", "reference"), ENGLISH_PAIRS)
def test_gleu_and_fuzzy_use_the_libraries(output: str, reference: str) -> None:
    gleu = sentence_gleu([tokens_13a(reference)], tokens_13a(output))
    assert lexical_similarity("gleu", output, reference)[0] == gleu
    assert (
        lexical_similarity("fuzzy_match", output, reference)[0]
        == fuzz.ratio(output, reference) / 100
    )


def test_meteor_follows_nltk_formula_without_synonyms() -> None:
    # hypothesis "the cat sat on mat" vs reference "the cat sat on a mat": 5 exact matches in
    # 2 chunks. P = 1, R = 5/6, Fmean = PR / (alpha P + (1 - alpha) R) with alpha 0.9,
    # fragmentation penalty gamma * (chunks / matches) ** beta with gamma 0.5, beta 3.
    p, r, alpha = 1.0, 5 / 6, 0.9
    fmean = p * r / (alpha * p + (1 - alpha) * r)
    expected = fmean * (1 - 0.5 * (2 / 5) ** 3)
    score = meteor("the cat sat on mat", "the cat sat on a mat", segmented=False)
    assert score == pytest.approx(expected)
    # Porter stems match ("cats"/"cat", "sits"/"sit") and case is ignored.
    assert meteor("The cats sit", "the cat sits", segmented=False) > 0.9
    _, details = lexical_similarity("meteor", "a", "b")
    assert details["meteor_synonyms"] is False  # nltk's wordnet data is not installed offline


def test_english_is_not_segmented() -> None:
    assert lexical_similarity("bleu", "a b", "a b")[1]["tokenization"] == "default"


def test_japanese_is_scored_on_fugashi_tokens() -> None:
    assert segment("有給休暇の申請方法を教えてください。") == [
        "有給", "休暇", "の", "申請", "方法", "を", "教え", "て", "ください", "。",
    ]  # fmt: skip
    text, reference = NEAR_IDENTICAL_JA[0]
    # The reference libraries alone cannot score Japanese:
    assert sacrebleu.sentence_bleu(text, [reference]).score == 0.0
    assert RougeScorer(["rouge1"]).score(reference, text)["rouge1"].fmeasure == 0.0
    score, details = lexical_similarity("bleu", text, reference)
    assert details["tokenization"] == "fugashi+unidic-lite"
    expected = sacrebleu.sentence_bleu(
        " ".join(segment(text)), [" ".join(segment(reference))], tokenize="none"
    ).score
    assert score == expected / 100


@pytest.mark.parametrize(("text", "reference"), NEAR_IDENTICAL_JA)
@pytest.mark.parametrize("metric", LEXICAL_METRICS)
def test_near_identical_japanese_scores_high(metric: str, text: str, reference: str) -> None:
    score = lexical_similarity(metric, text, reference)[0]
    if metric in ("rouge_3", "rouge_4", "rouge_5"):
        # One changed word breaks every long n-gram that spans it: high, never 0.
        assert score > 0.4, (metric, score)
    else:
        assert score > 0.6, (metric, score)


@pytest.mark.parametrize(("text", "reference"), UNRELATED_JA)
@pytest.mark.parametrize("metric", [*LEXICAL_METRICS, "fuzzy_match"])
def test_unrelated_japanese_scores_near_zero(metric: str, text: str, reference: str) -> None:
    assert lexical_similarity(metric, text, reference)[0] < 0.2


def test_unrelated_japanese_sharing_particles_stays_low() -> None:
    text, reference = (
        "有給休暇の申請方法を教えてください。",
        "会議室のプロジェクターが壊れています。",
    )
    for metric in ("bleu", "gleu", "meteor", "rouge_2", "rouge_3"):
        assert lexical_similarity(metric, text, reference)[0] < 0.2
    # Unigrams share the particles の and て, as English pairs share "the".
    assert lexical_similarity("rouge_1", text, reference)[0] < 0.25


def test_mixed_pair_is_segmented_on_both_sides() -> None:
    score, details = lexical_similarity("rouge_1", "VPN に接続できない", "VPNに接続できない")
    assert details["tokenization"] == "fugashi+unidic-lite"
    assert score == 1.0


def test_grader_applies_threshold_and_templates() -> None:
    grader = build_grader(
        {
            "type": "text_similarity",
            "name": "bleu",
            "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}",
            "evaluation_metric": "bleu",
            "pass_threshold": 0.6,
        }
    )
    item = {"answer": "有給休暇の申請方法を教えて下さい。"}
    grade = run_grade(grader, "有給休暇の申請方法を教えてください。", item)
    assert grade.passed is True
    assert grade.score > 0.6
    assert grade.details["evaluation_metric"] == "bleu"
    low = run_grade(grader, "パスワードを忘れました。", item)
    assert low.passed is False


def test_fuzzy_match_is_rapidfuzz_ratio() -> None:
    grader = build_grader(
        {
            "type": "text_similarity",
            "name": "fuzzy",
            "input": "{{sample.output_text}}",
            "reference": "hello world",
            "evaluation_metric": "fuzzy_match",
            "pass_threshold": 0.9,
        }
    )
    grade = run_grade(grader, "hello wrld")
    assert grade.score == fuzz.ratio("hello wrld", "hello world") / 100
    assert grade.passed is True

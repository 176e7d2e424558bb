"""Checks on the shipped demo data set of the inquiry routing task."""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter

import pytest

from distillery.demo.dataset import (
    LABELS,
    Inquiry,
    load_inquiries,
    messages_for,
    system_prompt,
)

JAPANESE = re.compile(r"[\u3040-\u309f\u30a0-\u30ff\u4e00-\u9fff\uff66-\uff9f]")


@pytest.fixture(scope="module")
def inquiries() -> list[Inquiry]:
    return load_inquiries()


def _is_japanese(text: str) -> bool:
    return JAPANESE.search(text) is not None


def _normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch)[0] in "LN")


def test_size(inquiries: list[Inquiry]) -> None:
    assert len(inquiries) >= 650


def test_ids_unique_and_well_formed(inquiries: list[Inquiry]) -> None:
    ids = [inquiry.id for inquiry in inquiries]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"inq-\d{4}", i) for i in ids)


def test_labels_known_and_balanced(inquiries: list[Inquiry]) -> None:
    assert LABELS == ("労務", "人事", "総務", "経理", "情報システム")
    counts = Counter(inquiry.category for inquiry in inquiries)
    assert set(counts) == set(LABELS)
    mean = len(inquiries) / len(LABELS)
    for label in LABELS:
        assert counts[label] >= 130, label
        assert abs(counts[label] - mean) <= 0.1 * mean, (label, counts[label], mean)


def test_languages_balanced_and_detected(inquiries: list[Inquiry]) -> None:
    for inquiry in inquiries:
        detected = "ja" if _is_japanese(inquiry.question) else "en"
        assert inquiry.lang == detected, inquiry.id
    ja = sum(inquiry.lang == "ja" for inquiry in inquiries)
    assert 0.45 <= ja / len(inquiries) <= 0.55
    for label in LABELS:
        in_label = [inquiry for inquiry in inquiries if inquiry.category == label]
        ja_in_label = sum(inquiry.lang == "ja" for inquiry in in_label)
        assert 0.45 <= ja_in_label / len(in_label) <= 0.55, label


def test_fixed_test_split(inquiries: list[Inquiry]) -> None:
    test = [inquiry for inquiry in inquiries if inquiry.split == "test"]
    assert len(test) == 100
    assert {inquiry.split for inquiry in inquiries} == {"train", "test"}
    per_label_lang = Counter((inquiry.category, inquiry.lang) for inquiry in test)
    for label in LABELS:
        assert per_label_lang[(label, "ja")] == 10, label
        assert per_label_lang[(label, "en")] == 10, label
    assert load_inquiries("test") == test
    train = load_inquiries("train")
    assert len(train) == len(inquiries) - 100
    assert all(inquiry.split == "train" for inquiry in train)


def test_unknown_split_rejected() -> None:
    with pytest.raises(ValueError):
        load_inquiries("validation")


def test_no_duplicate_questions(inquiries: list[Inquiry]) -> None:
    normalised = Counter(_normalise(inquiry.question) for inquiry in inquiries)
    duplicates = [text for text, n in normalised.items() if n > 1]
    assert duplicates == []


def test_reason_in_question_language(inquiries: list[Inquiry]) -> None:
    for inquiry in inquiries:
        assert _is_japanese(inquiry.reason) == (inquiry.lang == "ja"), inquiry.id
        assert inquiry.reason.strip() == inquiry.reason
        if inquiry.lang == "ja":
            assert len(inquiry.reason) <= 60, inquiry.id
        else:
            assert len(inquiry.reason.split()) <= 25, inquiry.id


def test_reference_output_is_json(inquiries: list[Inquiry]) -> None:
    for inquiry in inquiries:
        output = inquiry.reference_output()
        parsed = json.loads(output)
        assert set(parsed) == {"reason", "category"}
        assert parsed == {"reason": inquiry.reason, "category": inquiry.category}
        assert "\\u" not in output


def test_system_prompt_and_messages(inquiries: list[Inquiry]) -> None:
    prompt = system_prompt()
    for label in LABELS:
        assert label in prompt
    assert '"reason"' in prompt and '"category"' in prompt
    assert len(prompt.split()) <= 260
    messages = messages_for(inquiries[0])
    assert messages == [
        {"role": "system", "content": prompt},
        {"role": "user", "content": inquiries[0].question},
    ]


def test_answers_are_compact_in_schema_order(inquiries: list[Inquiry]) -> None:
    """As OpenAI's structured outputs write them: what the constrained student must emit too."""
    for inquiry in inquiries[:50]:
        output = inquiry.reference_output()
        assert output.startswith('{"reason":"') and '","category":"' in output
        assert ", " not in output.split('"reason":"')[0]


def test_teacher_errors_are_realistic_and_corrected(inquiries: list[Inquiry]) -> None:
    from distillery.demo.dataset import ERROR_KINDS, corrections, teacher_errors, teacher_output

    errors, fixes = teacher_errors(), corrections()
    by_id = {i.id: i for i in inquiries}
    assert set(errors) == set(fixes) and set(errors) <= set(by_id)
    for split in ("train", "test"):
        items = [i for i in inquiries if i.split == split]
        share = sum(i.id in errors for i in items) / len(items)
        assert 0.07 <= share <= 0.11, (split, share)
    assert {e.kind for e in errors.values()} == set(ERROR_KINDS)
    for error in errors.values():
        gold = by_id[error.id]
        assert teacher_output(gold) == error.output
        assert fixes[error.id].output == gold.reference_output()  # the correction is the gold
        if error.kind == "malformed":
            with pytest.raises(ValueError):
                json.loads(error.output)
            continue
        answer = json.loads(error.output)
        if error.kind == "topic_mentioned":
            assert answer["category"] in LABELS and answer["category"] != gold.category
        else:  # wrong_language: the right label, a reason in the other language
            assert answer["category"] == gold.category
            assert _is_japanese(answer["reason"]) != (gold.lang == "ja")
    right = [i for i in inquiries if i.id not in errors]
    assert all(teacher_output(i) == i.reference_output() for i in right)

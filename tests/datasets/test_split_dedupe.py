"""Stable hash splits and duplicate detection (near-duplicates with the real local MiniLM)."""

from __future__ import annotations

import pytest

from distillery.datasets.dedupe import example_text, find_duplicates, find_exact
from distillery.datasets.split import assign, group_key, parse_ratios, position
from distillery.errors import InvalidRequestError


def ex(question: str, answer: str = "a", system: str | None = None) -> dict[str, object]:
    messages = [{"role": "system", "content": system}] if system else []
    return {
        "messages": [
            *messages,
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    }


def test_ratios_must_sum_to_one() -> None:
    assert parse_ratios(None) == {"train": 0.8, "validation": 0.1, "test": 0.1}
    assert parse_ratios({"train": 0.9, "validation": 0.1}) == {
        "train": 0.9,
        "validation": 0.1,
        "test": 0.0,
    }
    for bad in (
        {"train": 0.9},
        {"train": 0.5, "test": 0.6},
        {"train": -0.5, "test": 1.5},
        {"train": "1"},
        {},
    ):
        with pytest.raises(InvalidRequestError) as err:
            parse_ratios(bad)
        assert err.value.param == "split"


def test_assignment_is_deterministic_and_follows_ratios() -> None:
    ratios = parse_ratios({"train": 0.8, "validation": 0.1, "test": 0.1})
    keys = [group_key(ex(f"question number {i}")) for i in range(2000)]
    first = [assign(k, ratios) for k in keys]
    assert first == [assign(k, ratios) for k in keys]
    share = first.count("train") / len(first)
    assert 0.75 < share < 0.85
    assert first.count("validation") > 100 and first.count("test") > 100
    assert all(0 <= position(k) < 1 for k in keys[:50])
    only_train = parse_ratios({"train": 1.0})
    assert {assign(k, only_train) for k in keys} == {"train"}


def test_group_key_is_the_normalized_first_user_message() -> None:
    a = group_key(ex("  ＶＰＮ  に 接続できない ", "answer one", system="v1 prompt"))
    b = group_key(ex("vpn に 接続できない", "answer two", system="v2 prompt"))
    assert a == b
    follow_up = ex("vpn に接続できない")
    follow_up["messages"] = [  # a later turn of the same conversation
        {"role": "user", "content": "VPN に 接続できない"},
        {"role": "assistant", "content": "Which OS?"},
        {"role": "user", "content": "Windows"},
        {"role": "assistant", "content": "Reinstall the client."},
    ]
    assert group_key(follow_up) == group_key(ex("VPN に 接続できない"))


def test_exact_duplicates_use_normalized_text() -> None:
    texts = [
        example_text(e)
        for e in (ex("Hello  World"), ex("hello world"), ex("other"), ex("HELLO WORLD", "b"))
    ]
    found = find_exact(texts)
    assert [(d.index, d.of, d.kind) for d in found] == [(1, 0, "exact")]


def test_near_duplicates_with_local_minilm() -> None:
    pytest.importorskip("sentence_transformers")
    examples = [
        ex("How do I reset my VPN password?", "Use the self-service portal."),
        ex("How can I reset my VPN password?", "Use the self-service portal."),
        ex("Where do I submit travel expense receipts?", "Upload them in the expense tool."),
        ex("How do I reset my VPN password?", "Use the self-service portal."),
    ]
    texts = [example_text(e) for e in examples]
    found = find_duplicates(texts, "near", threshold=0.9)
    kinds = {(d.index, d.of, d.kind) for d in found}
    assert (3, 0, "exact") in kinds
    assert (1, 0, "near") in kinds
    assert all(d.index != 2 for d in found)
    near = next(d for d in found if d.kind == "near")
    assert 0.9 <= near.similarity <= 1.0
    assert find_duplicates(texts, "none") == []

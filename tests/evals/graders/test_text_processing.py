"""distillery.text: script detection and tokens used by the graders."""

from __future__ import annotations

from distillery.text.lang import contains_cjk, is_japanese, needs_segmentation, script_of
from distillery.text.tokenize import SegmentingTokenizer, morphemes, segment, tokens_13a


def test_script_detection() -> None:
    assert contains_cjk("VPNに接続") and is_japanese("VPNに接続")
    assert contains_cjk("会議室") and is_japanese("会議室")
    assert not contains_cjk("Hello, world!") and script_of("Hello") == "spaced"
    assert not contains_cjk("안녕하세요") and not is_japanese("안녕하세요")
    assert needs_segmentation("hello", "こんにちは") and not needs_segmentation("a", "b")


def test_segment_normalizes_width_and_keeps_words() -> None:
    assert segment("ＶＰＮに接続できません") == ["VPN", "に", "接続", "でき", "ませ", "ん"]
    assert segment("  ") == []


def test_morphemes_give_lemmas() -> None:
    first = morphemes("良くない")[0]
    assert (first.surface, first.lemma, first.pos) == ("良く", "良い", "形容詞")


def test_rouge_tokenizer_drops_punctuation_and_lowercases() -> None:
    assert SegmentingTokenizer().tokenize("VPNが、遅い！") == ["vpn", "が", "遅い"]


def test_13a_tokens() -> None:
    assert tokens_13a("Hello, world.") == ["Hello", ",", "world", "."]
